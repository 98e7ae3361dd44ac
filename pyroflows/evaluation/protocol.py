"""The paper's evaluation protocol over many methods: one table row and one set of curves per method.

:func:`evaluate_methods` attributes the images with every method, then runs the four metrics on the maps:
degradation (area between the normalised LeRF and MoRF curves, tiles 8 and 14), the bounding-box score,
Sensitivity-N (tiles 1 and 8) and the cascading-randomisation sanity check. The table's one-number summaries:

- ``degradation_T``: :meth:`DegradationCurves.score` of the curves averaged over images (higher is better).
- ``bbox``: mean bounding-box score over images whose box covers at most a third of the image (higher is better).
- ``sensitivity_n``: the Sensitivity-N correlation averaged over images, over the log-spaced ``n`` and over both
  tile sizes (higher is better).
- ``sanity_ssim``: SSIM between the original maps and the maps of the partly randomised model, averaged over
  images and over every depth of the cascade (lower is better); ``sanity`` reads ``fail`` when it exceeds
  ``SANITY_THRESHOLD`` = 0.5, i.e. when the maps on average stay more similar than not to the intact model's.
"""

from __future__ import annotations

import csv
import functools
import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from tqdm.auto import tqdm

from pyroflows import distributed
from pyroflows.errors import DataError
from pyroflows.evaluation._utils import positions_of
from pyroflows.evaluation.degradation import DegradationCurves, degradation_curves
from pyroflows.evaluation.methods import AttributeFn, MethodContext, MethodNotSupported, make_attribute_fn
from pyroflows.evaluation.sanity_check import SanityCheck, cascading_randomization
from pyroflows.evaluation.sensitivity_n import SensitivityN, default_sensitivity_ns, sensitivity_n
from pyroflows.validation import as_targets

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["MethodEvaluation", "EvaluationTable", "evaluate_methods", "SANITY_THRESHOLD", "TABLE_COLUMNS"]

SANITY_THRESHOLD = 0.5
TABLE_COLUMNS = (
    "method",
    "degradation_8",
    "degradation_14",
    "bbox",
    "sensitivity_n",
    "sanity_ssim",
    "sanity",
    "seconds_per_image",
)


@dataclass
class MethodEvaluation:
    """Everything measured for one method (``error`` is set and the rest empty when the method could not run)."""

    method: str
    maps: torch.Tensor | None = None
    degradation: dict[int, DegradationCurves] = field(default_factory=dict)
    bbox: torch.Tensor | None = None
    span: torch.Tensor | None = None
    top1: torch.Tensor | None = None
    sensitivity: dict[int, SensitivityN] = field(default_factory=dict)
    sanity: SanityCheck | None = None
    seconds_per_image: float = math.nan
    error: str | None = None

    def row(self) -> dict[str, object]:
        """The method's table row (see the module docstring for each summary)."""
        row: dict[str, object] = {"method": self.method}
        if self.error is not None:
            row["sanity"] = "n/a"
            row["note"] = self.error
            return row
        for tile, curves in self.degradation.items():
            row[f"degradation_{tile}"] = curves.score()
        row["bbox"] = float(torch.nanmean(self.bbox)) if self.bbox is not None else math.nan
        if self.span is not None and self.top1 is not None:
            row["span"] = float(self.span.mean())
            row["top1"] = float(self.top1.mean())
        means = [result.mean() for result in self.sensitivity.values()]
        row["sensitivity_n"] = float(torch.nanmean(torch.cat(means))) if means else math.nan
        if self.sanity is not None:
            ssim = float(self.sanity.ssim.mean())
            row["sanity_ssim"] = ssim
            row["sanity"] = "fail" if ssim > SANITY_THRESHOLD else "pass"
        else:
            row["sanity_ssim"], row["sanity"] = math.nan, "not run"
        row["seconds_per_image"] = self.seconds_per_image
        return row


@dataclass
class EvaluationTable:
    """Results of :func:`evaluate_methods`, one :class:`MethodEvaluation` per method, in the order run."""

    results: dict[str, MethodEvaluation]

    def rows(self) -> list[dict[str, object]]:
        """One dict per method with the keys :data:`TABLE_COLUMNS` (and ``degradation_T`` per tile size)."""
        return [result.row() for result in self.results.values()]

    def columns(self) -> list[str]:
        """Column names in first-seen order (``note`` appears when a method could not run)."""
        names: list[str] = []
        for row in self.rows():
            names += [key for key in row if key not in names]
        return names

    def to_markdown(self, digits: int = 3) -> str:
        """The table as GitHub markdown."""
        columns = self.columns()
        lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
        for row in self.rows():
            cells = [_format(row.get(c, "" if c == "note" else math.nan), digits) for c in columns]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"

    def to_csv(self, path: str | Path, *, overwrite: bool = True, outputs: Any = None) -> None:
        """Write the table as CSV (full precision), atomically.

        Through :func:`pyroflows.io.atomic_write`, or staged in ``outputs``, an :class:`~pyroflows.io.AtomicOutputs`,
        when given.
        """
        from pyroflows.io import atomic_write

        columns = self.columns()

        def write(tmp: Path) -> None:
            with open(tmp, "w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=columns)
                writer.writeheader()
                for row in self.rows():
                    writer.writerow({c: row.get(c, "") for c in columns})

        if outputs is not None:
            outputs.write(path, write)
        else:
            atomic_write(path, write, overwrite=overwrite)

    def plot_degradation(self, tile_size: int = 8, ax=None):
        """Normalised MoRF (solid) and LeRF (dashed) curves averaged over images, one colour per method."""
        ax = ax or _new_axes()
        for index, (name, result) in enumerate(self.results.items()):
            if tile_size not in result.degradation:
                continue
            curves = result.degradation[tile_size]
            morf, lerf = curves.normalized("mean")
            colour = _colour(index)
            x = curves.fraction.cpu().numpy()
            ax.plot(x, morf.cpu().numpy(), color=colour, label=name)
            ax.plot(x, lerf.cpu().numpy(), color=colour, linestyle="--")
        ax.set(xlabel="fraction of tiles replaced", ylabel="normalised target probability",
               title=f"degradation, {tile_size}x{tile_size} tiles (solid MoRF, dashed LeRF)")  # fmt: skip
        ax.legend(fontsize=7)
        return ax

    def plot_sensitivity(self, tile_size: int = 8, ax=None):
        """Sensitivity-N correlation (averaged over images) against the fraction of pixels removed."""
        ax = ax or _new_axes()
        for index, (name, result) in enumerate(self.results.items()):
            if tile_size not in result.sensitivity:
                continue
            sens = result.sensitivity[tile_size]
            colour = _colour(index)
            ax.plot(sens.fraction.numpy(), sens.mean().cpu().numpy(), marker=".", color=colour, label=name)
        ax.set_xscale("log")
        ax.set(xlabel="fraction of pixels removed", ylabel="Pearson correlation",
               title=f"Sensitivity-N, {tile_size}x{tile_size} tiles")  # fmt: skip
        ax.legend(fontsize=7)
        return ax

    def plot_sanity(self, ax=None):
        """SSIM to the original map against the number of layers re-initialised (from the output)."""
        ax = ax or _new_axes()
        labels: list[str] = []
        for index, (name, result) in enumerate(self.results.items()):
            if result.sanity is None:
                continue
            ssim = result.sanity.mean().cpu().numpy()
            ax.plot(range(1, len(ssim) + 1), ssim, marker="o", color=_colour(index), label=name)
            labels = result.sanity.layers
        if labels:
            ax.set_xticks(range(1, len(labels) + 1), [f"{i}\n{n}" for i, n in enumerate(labels, 1)], fontsize=7)
        ax.axhline(SANITY_THRESHOLD, color="grey", linewidth=0.8, linestyle=":")
        ax.set(xlabel="layers re-initialised (from the output)", ylabel="SSIM to the original map",
               ylim=(-0.1, 1.05), title="cascading randomisation")  # fmt: skip
        ax.legend(fontsize=7)
        return ax

    def save_plots(self, directory: str | Path, tile_sizes: Sequence[int] = (8, 14), *, overwrite: bool = True,
                   outputs: Any = None) -> list[Path]:  # fmt: skip
        """Write ``degradation_T.png``, ``sensitivity_n_T.png`` and ``sanity_check.png`` into ``directory``.

        Each is written atomically (staged in ``outputs``, an :class:`~pyroflows.io.AtomicOutputs`, when given).
        """
        from matplotlib.figure import Figure

        from pyroflows.io import save_figure

        directory = Path(directory)
        paths = []
        jobs: list[tuple[str, Callable[[Axes], object]]]
        jobs = [(f"degradation_{t}.png", functools.partial(self.plot_degradation, t)) for t in tile_sizes]
        sens_tiles = sorted({t for r in self.results.values() for t in r.sensitivity})
        jobs += [(f"sensitivity_n_{t}.png", functools.partial(self.plot_sensitivity, t)) for t in sens_tiles]
        jobs.append(("sanity_check.png", self.plot_sanity))
        for filename, draw in jobs:
            figure = Figure(figsize=(7, 4.5))
            draw(figure.subplots())
            figure.tight_layout()
            save_figure(figure, directory / filename, overwrite=overwrite, outputs=outputs, dpi=110)
            paths.append(directory / filename)
        return paths


def _new_axes() -> Any:
    """Axes on a fresh ``Figure`` (no pyplot: nothing global changes; ``ax.figure`` holds the plot)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(6, 4)).subplots()


def _colour(index: int) -> Any:
    import matplotlib

    return matplotlib.colormaps["tab20"](index % 20)


def _format(value: object, digits: int) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def evaluate_methods(
    model: nn.Module,
    inputs: torch.Tensor,
    target: int | torch.Tensor,
    methods: Sequence[str] | Mapping[str, AttributeFn],
    *,
    boxes: torch.Tensor | None = None,
    spans: torch.Tensor | None = None,
    padding: torch.Tensor | None = None,
    context: MethodContext | None = None,
    degradation_tiles: Sequence[int] = (8, 14),
    sensitivity_tiles: Sequence[int] = (1, 8),
    sensitivity_steps: int = 8,
    n_masks: int = 50,
    sanity_images: int = 8,
    baseline: str | float | torch.Tensor = "mean",
    batch_size: int = 512,
    seed: int = 0,
    progress: bool = True,
) -> EvaluationTable:
    """Run the paper's protocol for every method on the same images and targets.

    Args:
        model: Classifier returning logits; it is not modified (the sanity check works on copies).
        inputs: Images ``[N, C, H, W]``, sequences ``[N, C, L]`` or token ids ``[N, L]`` (the tiles are then runs of
            positions).
        target: Class per image (int or ``[N]``), e.g. the labels of correctly classified images.
        methods: Registered names (:func:`~pyroflows.evaluation.available_methods`), or a mapping from a name to
            an ``attribute_fn(model, inputs, target) -> [N, H, W]``.
        boxes: Optional ground-truth boxes ``[N, 4]`` (top, left, bottom, right; exclusive) for the bounding-box
            score; images whose box covers more than a third of the image are left out of it, as in the paper.
        spans: Optional known relevant spans ``[N, 2]`` of sequence inputs for the span score and the top-1 hit
            rate (columns ``span`` and ``top1``, see :mod:`~pyroflows.evaluation.span`).
        padding: Optional ``[N, L]`` padding of token inputs (never ranked by the span score).
        context: Layer names, estimation data and seed handed to registered methods.
        degradation_tiles: Tile sizes of the degradation score.
        sensitivity_tiles: Tile sizes of Sensitivity-N.
        sensitivity_steps: Number of log-spaced ``n`` per tile size.
        n_masks: Random masks per ``n``.
        sanity_images: How many of the images (the first ones) the sanity check re-attributes at every depth
            (0 skips it).
        baseline: Replacement values for degradation and Sensitivity-N.
        batch_size: Images per forward pass in the metrics.
        seed: Seed of the Sensitivity-N masks and the re-initialisation.
        progress: Show a progress bar over methods.

    Returns:
        :class:`EvaluationTable`.

    Raises:
        DataError: Bad shapes, an unknown method name.
    """
    n = inputs.shape[0]
    target = as_targets(target, n, device=inputs.device)
    if boxes is not None and (boxes.dim() != 2 or boxes.shape != (n, 4)):
        raise DataError(f"boxes must be [N, 4] = [{n}, 4], got {tuple(boxes.shape)}")
    if isinstance(methods, Mapping):
        functions = dict(methods)
    else:
        functions = {name: make_attribute_fn(name, context) for name in methods}
    settings = _Settings(
        degradation_tiles, sensitivity_tiles, sensitivity_steps, n_masks, sanity_images, baseline, batch_size, seed
    )
    results: dict[str, MethodEvaluation] = {}
    bar = tqdm(functions.items(), desc="evaluating", disable=not progress, total=len(functions))
    for name, attribute_fn in bar:
        bar.set_postfix_str(name)
        results[name] = _evaluate_method(
            name, attribute_fn, model, inputs, target, boxes=boxes, spans=spans, padding=padding, settings=settings
        )
    return EvaluationTable(results=results)


@dataclass(frozen=True)
class _Settings:
    """The metrics' settings of one :func:`evaluate_methods` call."""

    degradation_tiles: Sequence[int]
    sensitivity_tiles: Sequence[int]
    sensitivity_steps: int
    n_masks: int
    sanity_images: int
    baseline: str | float | torch.Tensor
    batch_size: int
    seed: int


def _evaluate_method(
    name: str,
    attribute_fn: AttributeFn,
    model: nn.Module,
    inputs: torch.Tensor,
    target: torch.Tensor,
    *,
    boxes: torch.Tensor | None,
    spans: torch.Tensor | None,
    padding: torch.Tensor | None,
    settings: _Settings,
) -> MethodEvaluation:
    """One method's row: its maps, then degradation, localisation, Sensitivity-N and the sanity check."""
    result = MethodEvaluation(method=name)
    with warnings.catch_warnings():
        # Captum warns that it switched on requires_grad for the inputs; that is expected here.
        warnings.filterwarnings("ignore", message=".*did not already require gradients.*")
        try:
            start = time.perf_counter()
            maps = attribute_fn(model, inputs, target).detach()
            result.seconds_per_image = (time.perf_counter() - start) / inputs.shape[0]
        except MethodNotSupported as exc:
            result.error = str(exc).split("\n")[0][:200]
            return result
        result.maps = maps
        _degradation(result, model, inputs, maps, target, settings)
        _localisation(result, maps, inputs, boxes, spans, padding)
        _sensitivity(result, model, inputs, maps, target, settings)
        if settings.sanity_images > 0:
            k = min(settings.sanity_images, inputs.shape[0])
            result.sanity = cascading_randomization(model, inputs[:k], target[:k], attribute_fn, seed=settings.seed)
    return result


def _degradation(
    result: MethodEvaluation, model: nn.Module, inputs: torch.Tensor, maps: torch.Tensor, target: torch.Tensor,
    settings: _Settings,
) -> None:  # fmt: skip
    # Under a process group the per-image metrics run on shards of the images, gathered in order.
    for tile in settings.degradation_tiles:
        result.degradation[tile] = distributed.map_shards(
            lambda x, m, t, tile=tile: degradation_curves(
                model, x, m, t, tile_size=tile, baseline=settings.baseline, batch_size=settings.batch_size
            ),
            inputs, maps, target, concat={"morf": 0, "lerf": 0},
        )  # fmt: skip


def _localisation(
    result: MethodEvaluation, maps: torch.Tensor, inputs: torch.Tensor, boxes: torch.Tensor | None,
    spans: torch.Tensor | None, padding: torch.Tensor | None,
) -> None:  # fmt: skip
    """The bounding-box score (images whose box covers at most a third of the image) or the span scores."""
    if boxes is not None:
        from pyroflows.evaluation.bounding_box import bounding_box_score

        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        scores = bounding_box_score(maps, boxes).to(torch.float64)
        h, w = positions_of(inputs)
        result.bbox = torch.where(area * 3 <= h * w, scores, torch.full_like(scores, math.nan))
    if spans is not None:
        from pyroflows.evaluation.span import span_score, top1_hit

        result.span = span_score(maps, spans, padding)
        result.top1 = top1_hit(maps, spans, padding)


def _sensitivity(
    result: MethodEvaluation, model: nn.Module, inputs: torch.Tensor, maps: torch.Tensor, target: torch.Tensor,
    settings: _Settings,
) -> None:  # fmt: skip
    positions = positions_of(inputs)
    for tile in settings.sensitivity_tiles:
        n_tiles = int(torch.tensor([size // tile for size in positions]).prod())
        ns = default_sensitivity_ns(n_tiles, tile, n_steps=settings.sensitivity_steps, spatial=len(positions))
        result.sensitivity[tile] = distributed.map_shards(
            lambda x, m, t, ns=ns, tile=tile: sensitivity_n(
                model, x, m, t, tile_size=tile, ns=ns, n_masks=settings.n_masks, baseline=settings.baseline,
                seed=settings.seed, batch_size=settings.batch_size,
            ),
            inputs, maps, target, concat={"correlation": 0},
        )  # fmt: skip
