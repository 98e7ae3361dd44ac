r"""Image degradation: MoRF and LeRF curves and the area between them (Schulz et al., 2020, Sec. 4.4).

The image is cut into square tiles, the tiles are ranked by their mean attribution, and they are replaced, in that
order, by a baseline (by default the image's per-channel mean) while the target's softmax probability is recorded.
MoRF ("most relevant first") replaces the highest-ranked tiles first, LeRF ("least relevant first") the lowest. A
faithful map makes the MoRF curve fall fast and the LeRF curve slowly; the degradation score is the area between
them.

Normalisation (as in the paper): both curves start at the probability :math:`p_0` of the original image and end at
the probability :math:`p_K` of the fully degraded image (all :math:`K` tiles replaced; the same image for both
orders). Each curve is mapped to :math:`\tilde p_k = (p_k - p_K) / (p_0 - p_K)`, so both run from 1 to 0, and the
score is

.. math:: S = \int_0^1 \bigl(\tilde p^{\mathrm{LeRF}}(x) - \tilde p^{\mathrm{MoRF}}(x)\bigr)\,dx

over the fraction :math:`x = k / K` of tiles replaced (trapezoidal rule). :func:`degradation_score` normalises each
image by its own :math:`p_0, p_K` (undefined, so NaN, where they differ by less than ``min_drop``);
:meth:`DegradationCurves.score` normalises the curves averaged over images by the averaged :math:`p_0, p_K`, which
stays defined when single images barely react, and is what the evaluation table reports.

| Restricting the Flow: Information Bottlenecks for Attribution (Schulz et al., 2020)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from pyroflows.errors import DataError
from pyroflows.evaluation._utils import (
    Baseline,
    baseline_images,
    check_inputs_and_maps,
    check_output,
    check_tile_size,
    chunks,
    positions_of,
    replace,
    target_values,
    tile_masks_to_pixels,
    tile_means,
)
from pyroflows.validation import as_targets

__all__ = ["DegradationCurves", "degradation_curves", "degradation_score", "normalize_curves"]


def normalize_curves(curves: torch.Tensor, start: torch.Tensor, end: torch.Tensor) -> torch.Tensor:
    r"""Map curves to :math:`(p_k - p_K) / (p_0 - p_K)` given their start :math:`p_0` and end :math:`p_K`.

    Args:
        curves: ``[..., K + 1]``.
        start: ``[...]`` (or broadcastable), the original image's score.
        end: ``[...]``, the fully degraded image's score.

    Returns:
        The normalised curves, the same shape as ``curves``.

    Example:
        >>> normalize_curves(torch.tensor([0.9, 0.5, 0.1]), torch.tensor(0.9), torch.tensor(0.1))
        tensor([1.0000, 0.5000, 0.0000])
    """
    return (curves - end.unsqueeze(-1)) / (start - end).unsqueeze(-1)


def _area(curves: torch.Tensor, fraction: torch.Tensor) -> torch.Tensor:
    return torch.trapezoid(curves, fraction, dim=-1)


@dataclass
class DegradationCurves:
    """Target scores while tiles are replaced, most relevant first (MoRF) and least relevant first (LeRF).

    Attributes:
        fraction: ``[K + 1]`` fraction of tiles replaced at each step, from 0 to 1.
        morf: ``[N, K + 1]`` target score (softmax probability unless ``output="logit"``) at each MoRF step.
        lerf: ``[N, K + 1]`` the same for LeRF. ``morf[:, 0] == lerf[:, 0]`` is the original image's score and
            ``morf[:, -1] == lerf[:, -1]`` the fully degraded image's.
        tile_size: Side of the square tiles.
    """

    fraction: torch.Tensor
    morf: torch.Tensor
    lerf: torch.Tensor
    tile_size: int

    def normalized(self, per: str = "image") -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised ``(morf, lerf)`` curves.

        ``[N, K + 1]`` per image (``per="image"``), or ``[K + 1]`` for the curves averaged over images and normalised by
        the averaged start and end (``per="mean"``).
        """
        if per == "image":
            start, end = self.morf[:, 0], self.morf[:, -1]
            return normalize_curves(self.morf, start, end), normalize_curves(self.lerf, start, end)
        if per == "mean":
            morf, lerf = self.morf.mean(0), self.lerf.mean(0)
            return normalize_curves(morf, morf[0], morf[-1]), normalize_curves(lerf, morf[0], morf[-1])
        raise DataError(f"per must be 'image' or 'mean', got {per!r}")

    def scores(self, min_drop: float = 1e-3) -> torch.Tensor:
        """Per-image degradation score ``[N]`` (NaN where ``p_0 - p_K < min_drop``)."""
        morf, lerf = self.normalized("image")
        score = _area(lerf - morf, self.fraction)
        drop = self.morf[:, 0] - self.morf[:, -1]
        return torch.where(drop >= min_drop, score, torch.full_like(score, float("nan")))

    def score(self) -> float:
        """The degradation score of the curves averaged over images (what the evaluation table reports)."""
        morf, lerf = self.normalized("mean")
        return float(_area(lerf - morf, self.fraction))


def _tile_ranks(maps: torch.Tensor, tile_size: int, descending: bool) -> torch.Tensor:
    """``[N, T]`` rank of each tile (0 = replaced first); ties keep the row-major tile order."""
    scores = tile_means(maps, tile_size).flatten(1)
    order = torch.argsort(scores, dim=1, descending=descending, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
    return ranks


@torch.no_grad()
def degradation_curves(
    model: nn.Module,
    inputs: torch.Tensor,
    attributions: torch.Tensor,
    target: int | torch.Tensor,
    *,
    tile_size: int = 8,
    baseline: Baseline = "mean",
    output: str = "probability",
    batch_size: int = 512,
) -> DegradationCurves:
    """MoRF and LeRF curves for each image, every degraded image of a chunk in one batched forward pass.

    Args:
        model: Classifier returning logits ``[N, classes]``; used under ``torch.no_grad``.
        inputs: Images ``[N, C, H, W]``, sequences ``[N, C, L]`` or token ids ``[N, L]`` (tiles are then runs of
            ``tile_size`` positions).
        attributions: Maps ``[N, *positions]`` (a channel axis ``[N, C, *positions]`` is summed).
        target: Class index, an int or ``[N]``.
        tile_size: Side of the square tiles; must divide ``H`` and ``W`` (the paper's 8 and 14 fit 56x56 images).
        baseline: Replacement values: ``"mean"`` (each image's per-channel mean, the paper's choice), ``"zero"``,
            a number or a tensor broadcastable to ``inputs``; for token ids a token id (e.g. padding).
        output: ``"probability"`` (softmax of the logits, the paper's choice) or ``"logit"``.
        batch_size: Images per forward pass.

    Returns:
        :class:`DegradationCurves` with ``K = H W / tile_size^2`` steps.

    Raises:
        DataError: Shapes that do not match, a tile size that does not divide the image, a bad target.

    Example:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
        >>> curves = degradation_curves(model, torch.rand(3, 1, 4, 4), torch.rand(3, 4, 4), 0, tile_size=2)
        >>> curves.morf.shape, curves.fraction.tolist()
        (torch.Size([3, 5]), [0.0, 0.25, 0.5, 0.75, 1.0])
    """
    maps = check_inputs_and_maps(inputs, attributions)
    n = inputs.shape[0]
    positions = positions_of(inputs)
    check_tile_size(tile_size, *positions)
    check_output(output)
    target = as_targets(target, n, num_classes=model(inputs[:1]).shape[-1], device=inputs.device)
    base = baseline_images(inputs, baseline)
    tiles = [size // tile_size for size in positions]
    n_tiles = int(torch.tensor(tiles).prod())
    steps = torch.arange(n_tiles + 1, device=inputs.device)
    ranks = torch.stack([_tile_ranks(maps, tile_size, True), _tile_ranks(maps, tile_size, False)], 1)  # [N,2,T]
    # One flat index over (image, order, step), so every forward pass is a full batch however few images there are.
    per_image = 2 * (n_tiles + 1)
    scores = []
    for flat in chunks(n * per_image, batch_size):
        index = torch.arange(flat.start, flat.stop, device=inputs.device)
        image, order, step = index // per_image, (index // (n_tiles + 1)) % 2, index % (n_tiles + 1)
        masks = (ranks[image, order] < step[:, None]).reshape(-1, *tiles)
        masks = tile_masks_to_pixels(masks, tile_size, len(positions))
        scores.append(target_values(model(replace(inputs[image], masks, base[image])), target[image], output))
    curves = torch.cat(scores).reshape(n, 2, n_tiles + 1)
    fraction = steps.to(maps.dtype) / n_tiles
    return DegradationCurves(fraction=fraction, morf=curves[:, 0], lerf=curves[:, 1], tile_size=tile_size)


def degradation_score(
    model: nn.Module,
    inputs: torch.Tensor,
    attributions: torch.Tensor,
    target: int | torch.Tensor,
    *,
    tile_size: int = 8,
    baseline: Baseline = "mean",
    output: str = "probability",
    batch_size: int = 512,
    min_drop: float = 1e-3,
) -> torch.Tensor:
    """Per-image degradation score: the area between the normalised LeRF and MoRF curves.

    Arguments as in :func:`degradation_curves`; images whose score drops by less than ``min_drop`` from the
    original to the fully degraded image cannot be normalised and get NaN. Higher is better; a map that ranks
    the tiles exactly by their effect scores close to the best possible, an inverted map the negative of it, a
    constant map exactly 0.

    Returns:
        ``[N]`` scores.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> weights = torch.linspace(-1, 1, 16)
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
        >>> with torch.no_grad():
        ...     _ = model[1].weight.copy_(torch.stack([weights, -weights])), model[1].bias.zero_()
        >>> x = torch.rand(2, 1, 4, 4)
        >>> truth = weights.reshape(4, 4) * (x[:, 0] - x.mean((1, 2, 3))[:, None, None])
        >>> predicted = model(x).argmax(1)  # its probability falls to 1/2 when all pixels are replaced
        >>> sign = 1 - 2 * predicted[:, None, None]  # the relevance for class 1 is the negative of class 0's
        >>> good = degradation_score(model, x, sign * truth, predicted, tile_size=1)
        >>> bad = degradation_score(model, x, -sign * truth, predicted, tile_size=1)
        >>> bool((good > 0).all() and (bad < 0).all())
        True
    """
    curves = degradation_curves(
        model, inputs, attributions, target, tile_size=tile_size, baseline=baseline, output=output,
        batch_size=batch_size,
    )  # fmt: skip
    return curves.scores(min_drop=min_drop)
