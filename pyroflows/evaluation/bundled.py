"""The evaluation protocol on the shipped models, written to a folder: ``pyroflows evaluate`` as a library call.

* :func:`evaluate_bundled`: held-out cluttered digits and the bundled CNN (or a model of the same input size);
  writes ``table.md``, ``table.csv``, the degradation, Sensitivity-N and sanity-check plots and ``maps.png``.
* :func:`evaluate_sequences`: the same for a shipped sequence task (``motifs``, ``keywords``).

Every output is written in one atomic group: the table and all plots, or nothing. Under a process group
(``torchrun``) the table is complete on every rank and rank 0 alone writes it.

Example:
    >>> import tempfile
    >>> table, n = evaluate_bundled(Path(tempfile.mkdtemp()), methods=["random"], n_images=2, n_masks=3,
    ...                             sensitivity_steps=1, sanity_images=1, estimation_images=10, progress=False)
    >>> n, [row["method"] for row in table.rows()]
    (2, ['random'])
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from pyroflows import distributed
from pyroflows.errors import DataError
from pyroflows.evaluation.methods import check_methods
from pyroflows.io import AtomicOutputs, atomic_outputs, check_output_dir, save_figure
from pyroflows.validation import check_int

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from pyroflows.evaluation.protocol import EvaluationTable

__all__ = ["evaluate_bundled", "evaluate_sequences", "maps_figure", "BUNDLED_OUTPUTS", "SEQUENCE_OUTPUTS"]

#: Files :func:`evaluate_bundled` writes with the default tile sizes.
BUNDLED_OUTPUTS = (
    "table.md",
    "table.csv",
    "degradation_8.png",
    "degradation_14.png",
    "sanity_check.png",
    "maps.png",
    "sensitivity_n_1.png",
    "sensitivity_n_8.png",
)
#: Files :func:`evaluate_sequences` checks before any work.
SEQUENCE_OUTPUTS = ("table.md", "table.csv", "maps.png", "sanity_check.png")
#: Methods that put a bottleneck into the model at ``layer``.
_LAYER_METHODS = {"per-sample", "readout"}


def _load_model(model: nn.Module | str, trust: bool) -> tuple[nn.Module, str]:
    from pyroflows.zoo import load_bundled_model
    from pyroflows.zoo.model_files import load_model_file

    if isinstance(model, nn.Module):
        return model, type(model).__name__
    if model == "bundled":
        return load_bundled_model(), "bundled"
    return load_model_file(Path(model), trust=trust), str(model)


def _bottleneck_layer(model: nn.Module, name: str, layer: str | None, methods: Sequence[str]) -> str:
    """The layer of the bottleneck methods (the bundled one by default), checked to exist in ``model``."""
    from pyroflows.attribution import resolve_layer
    from pyroflows.zoo import BUNDLED_LAYER

    if layer is None and name != "bundled" and _LAYER_METHODS & set(methods):
        raise DataError("--layer NAME is needed to put the bottleneck into a model given by --model PATH")
    if layer is not None and not layer.strip():
        raise DataError("--layer: expected a dotted module name, got an empty string")
    if layer is not None or _LAYER_METHODS & set(methods):
        resolve_layer(model, layer or BUNDLED_LAYER)  # LayerNotFoundError (a DataError) names the layers
        if isinstance(model, torch.jit.ScriptModule):
            raise DataError(f"{name}: a TorchScript model takes no hooks, so layer methods cannot run on it; "
                            "save a torch.export program (.pt2)")  # fmt: skip
    return layer or BUNDLED_LAYER


def _held_out_digits(
    model: nn.Module, name: str, n_images: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images, labels and boxes of the first ``n_images`` held-out digits that ``model`` classifies correctly.

    The digits are draw ``seed`` of the test split.
    """
    from pyroflows.datasets import make_cluttered_digits
    from pyroflows.zoo.model_files import check_model_runs

    # Draw a few more test images than needed and keep the correctly classified ones.
    pool = make_cluttered_digits(max(2 * n_images, n_images + 20), split="test", seed=seed)
    check_model_runs(model, pool.images, what=f"--model {name}")
    with torch.no_grad():
        correct = (model(pool.images).argmax(1) == pool.labels).nonzero().flatten()[:n_images]
    if len(correct) == 0:
        raise DataError("the model classifies none of the test images correctly; nothing to evaluate")
    return pool.images[correct], pool.labels[correct], pool.boxes[correct]


def _write_table(
    out: Path,
    table: EvaluationTable,
    maps: Figure,
    *,
    tile_sizes: Sequence[int] = (8, 14),
    force: bool,
) -> None:
    """The table, its plots and ``maps.png``, all or nothing (rank 0 alone under a process group)."""
    if not distributed.is_main():
        return
    with atomic_outputs(overwrite=force) as outputs:
        outputs.write(out / "table.md", lambda tmp: tmp.write_text(table.to_markdown(), encoding="utf-8"))
        table.to_csv(out / "table.csv", outputs=outputs)
        table.save_plots(out, tile_sizes=tile_sizes, outputs=outputs)
        _save(maps, out / "maps.png", outputs)


def _save(figure: Figure, path: Path, outputs: AtomicOutputs) -> None:
    save_figure(figure, path, outputs=outputs, dpi=100)


def maps_figure(table: EvaluationTable, inputs: torch.Tensor, rows: int = 4) -> Figure:
    """The first ``rows`` images (grey) and each method's map beside them, one column per method.

    Example:
        >>> from pyroflows.evaluation import EvaluationTable, MethodEvaluation
        >>> table = EvaluationTable({"random": MethodEvaluation("random", maps=torch.rand(2, 8, 8))})
        >>> len(maps_figure(table, torch.zeros(2, 1, 8, 8)).axes)
        4
    """
    from matplotlib.figure import Figure

    shown = [r for r in table.results.values() if r.maps is not None]
    rows = min(rows, inputs.shape[0])
    figure = Figure(figsize=(1.6 * (len(shown) + 1), 1.7 * rows))
    axes = figure.subplots(rows, len(shown) + 1, squeeze=False)
    for row in range(rows):
        axes[row, 0].imshow(inputs[row, 0].cpu().numpy(), cmap="gray")
        for col, result in enumerate(shown, 1):
            assert result.maps is not None  # ``shown`` keeps the results with maps
            axes[row, col].imshow(result.maps[row].cpu().numpy(), cmap="magma")
            if row == 0:
                axes[row, col].set_title(result.method, fontsize=7)
    for ax in axes.flat:
        ax.set_axis_off()
    figure.tight_layout()
    return figure


def evaluate_bundled(
    out: Path,
    *,
    methods: Sequence[str],
    n_images: int,
    model: nn.Module | str = "bundled",
    layer: str | None = None,
    n_masks: int = 20,
    sensitivity_steps: int = 6,
    sanity_images: int = 8,
    estimation_images: int = 1000,
    seed: int = 0,
    force: bool = False,
    progress: bool = True,
    trust_model_file: bool = False,
) -> tuple[EvaluationTable, int]:
    """Run the protocol on held-out cluttered digits and write the table and plots into ``out``.

    Only images the model classifies correctly are used, the target being their label; the bottlenecks'
    statistics come from ``estimation_images`` training digits.

    Args:
        out: Output folder (see :data:`BUNDLED_OUTPUTS`).
        methods: Registered method names.
        n_images: Held-out images to evaluate on.
        model: ``"bundled"``, a model file (see :func:`pyroflows.zoo.model_files.load_model_file`) or a module
            taking ``1 x 56 x 56`` digits.
        layer: The bottleneck layer (default the bundled model's; required for another model).
        n_masks: Sensitivity-N's random masks per ``n`` (:func:`evaluate_methods`).
        sensitivity_steps: Sensitivity-N's number of log-spaced ``n`` per tile size (:func:`evaluate_methods`).
        sanity_images: Images the sanity check re-attributes at every depth (:func:`evaluate_methods`).
        estimation_images: Training digits for the bottlenecks' statistics.
        seed: Draw of the held-out and training digits, and of the metrics.
        force: Replace earlier outputs.
        progress: Show a progress bar.
        trust_model_file: Allow a whole-model pickle.

    Returns:
        The table and the number of images evaluated.

    Raises:
        DataError: unknown methods, a missing or unknown layer, an output that exists without ``force``, a model
            that cannot run on the digits or classifies none of them correctly.
    """
    from pyroflows.datasets import make_cluttered_digits
    from pyroflows.evaluation.methods import MethodContext
    from pyroflows.evaluation.protocol import evaluate_methods

    methods = check_methods(methods, "--methods")
    check_int(n_images, "--n-images", low=1)
    check_output_dir(out, BUNDLED_OUTPUTS, overwrite=force)
    module, name = _load_model(model, trust_model_file)
    layer = _bottleneck_layer(module, name, layer, methods)
    inputs, labels, boxes = _held_out_digits(module, name, n_images, seed)
    data = make_cluttered_digits(estimation_images, split="train", seed=seed).images
    context = MethodContext(layer=layer, data=data, seed=seed)
    table = evaluate_methods(
        module, inputs, labels, methods, boxes=boxes, context=context, n_masks=n_masks,
        sensitivity_steps=sensitivity_steps, sanity_images=sanity_images, seed=seed, progress=progress,
    )  # fmt: skip
    _write_table(out, table, maps_figure(table, inputs), force=force)
    return table, len(labels)


def evaluate_sequences(
    out: Path,
    *,
    task: str,
    methods: Sequence[str],
    n_images: int,
    n_masks: int = 20,
    sensitivity_steps: int = 6,
    sanity_images: int = 8,
    estimation_images: int = 1000,
    seed: int = 0,
    force: bool = False,
    progress: bool = True,
) -> tuple[EvaluationTable, int]:
    """Run the protocol on a shipped sequence task and write the table, the plots and ``maps.png`` into ``out``.

    Args:
        out: Output folder.
        task: ``"motifs"`` or ``"keywords"`` (:func:`~pyroflows.evaluation.sequence_tasks.sequence_task`).
        methods: Registered method names.
        n_images: Held-out sequences to evaluate on.
        n_masks: As in :func:`evaluate_bundled`.
        sensitivity_steps: As in :func:`evaluate_bundled`.
        sanity_images: As in :func:`evaluate_bundled`.
        estimation_images: Training sequences for the bottlenecks' statistics.
        seed: Draw of the held-out and training sequences, and of the metrics.
        force: Replace earlier outputs.
        progress: Show a progress bar.

    Returns:
        The table (with ``span`` and ``top1`` columns) and the number of sequences evaluated.
    """
    from pyroflows.attribution.plots import sequence_maps_figure
    from pyroflows.evaluation.sequence_tasks import evaluate_sequence_task

    methods = check_methods(methods, "--methods")
    check_int(n_images, "--n-images", low=1)
    check_output_dir(out, SEQUENCE_OUTPUTS, overwrite=force)
    table, setup = evaluate_sequence_task(
        task, methods, n=n_images, estimation=estimation_images, seed=seed, n_masks=n_masks,
        sensitivity_steps=sensitivity_steps, sanity_images=sanity_images, progress=progress,
    )  # fmt: skip
    shown = {r.method: r.maps for r in table.results.values() if r.maps is not None}
    figure = sequence_maps_figure(setup.inputs[:4], shown, spans=setup.spans[:4])
    _write_table(out, table, figure, tile_sizes=setup.degradation_tiles, force=force)
    return table, len(setup.target)
