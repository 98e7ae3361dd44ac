r"""Sensitivity-N as the IBA paper uses it (Ancona et al., 2018; Schulz et al., 2020, Sec. 4.3).

For each :math:`n` (log-spaced), ``n_masks`` random masks each remove :math:`n` pixels from the image, as
:math:`n / t^2` whole tiles of side :math:`t` (the paper uses :math:`t = 1` and :math:`t = 8`); removed pixels are
replaced by a baseline (by default the image's per-channel mean; the paper's zero in normalised input space is the
data set mean). For each image, Sensitivity-N is the Pearson correlation, over the masks, between the summed
attribution of the removed pixels and the drop of the target's logit,

.. math:: \operatorname{corr}_{S,\,|S| = n}\Bigl(\sum_{i \in S} a_i,\; f_c(x) - f_c(x_{[x_S = b_S]})\Bigr).

The same masks are used for every image (as in the paper's code), so methods are compared on equal draws. This is
not Quantus' ``SensitivityN``, which correlates with the attribution of single features and different subsets.

| Towards better understanding of gradient-based attribution methods for deep neural networks (Ancona et al., 2018)
| Restricting the Flow: Information Bottlenecks for Attribution (Schulz et al., 2020)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from pyroflows.errors import DataError
from pyroflows.evaluation._utils import (
    Baseline,
    baseline_images,
    batched_forward,
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

__all__ = ["SensitivityN", "sensitivity_n", "default_sensitivity_ns", "pearson_rows"]


@dataclass
class SensitivityN:
    """Sensitivity-N correlations.

    Attributes:
        ns: ``[M]`` numbers of removed pixels.
        fraction: ``[M]`` the same as a fraction of the image's pixels.
        correlation: ``[N, M]`` per image and n (NaN where the removed attribution or the drop is constant over
            the masks, e.g. for a constant map).
        tile_size: Side of the removed tiles.
    """

    ns: torch.Tensor
    fraction: torch.Tensor
    correlation: torch.Tensor
    tile_size: int

    def mean(self) -> torch.Tensor:
        """``[M]`` correlation averaged over images (NaNs ignored; NaN where all are)."""
        return torch.nanmean(self.correlation, dim=0)


def default_sensitivity_ns(n_tiles: int, tile_size: int, n_steps: int = 16, spatial: int = 2) -> list[int]:
    """Log-spaced numbers of removed pixels: 1 to 80% of the ``n_tiles`` tiles, as in the paper's code.

    With ``spatial=1`` they count positions of a sequence, in tiles of ``tile_size`` positions.

    Example:
        >>> default_sensitivity_ns(49, 8, n_steps=5)
        [64, 192, 384, 1024, 2496]
    """
    steps = np.exp(np.linspace(0.0, math.log(max(1.0, 0.8 * n_tiles)), n_steps))
    tiles = sorted({int(k) for k in np.round(steps)})
    return [k * tile_size**spatial for k in tiles]


def pearson_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of each row of ``a`` with the same row of ``b`` (last axis); NaN if one is constant.

    Example:
        >>> pearson_rows(torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[2.0, 4.0, 7.0]]))
        tensor([0.9934])
    """
    a = a - a.mean(-1, keepdim=True)
    b = b - b.mean(-1, keepdim=True)
    denominator = a.norm(dim=-1) * b.norm(dim=-1)
    scale = a.abs().amax(-1) * b.abs().amax(-1) * a.shape[-1]
    # Rounding noise in a constant row must not read as a correlation.
    degenerate = denominator <= 1e-6 * scale.clamp_min(torch.finfo(a.dtype).tiny)
    corr = (a * b).sum(-1) / denominator
    return torch.where(degenerate, torch.full_like(corr, float("nan")), corr)


def sensitivity_n(
    model: nn.Module,
    inputs: torch.Tensor,
    attributions: torch.Tensor,
    target: int | torch.Tensor,
    *,
    tile_size: int = 1,
    ns: list[int] | None = None,
    n_masks: int = 100,
    baseline: Baseline = "mean",
    output: str = "logit",
    seed: int = 0,
    batch_size: int = 512,
) -> SensitivityN:
    """Per-image Sensitivity-N correlation for each number ``n`` of removed pixels.

    Args:
        model: Classifier returning logits ``[N, classes]``; used under ``torch.no_grad``.
        inputs: Images ``[N, C, H, W]``, sequences ``[N, C, L]`` or token ids ``[N, L]``.
        attributions: Maps ``[N, *positions]`` (a channel axis ``[N, C, *positions]`` is summed).
        target: Class index, an int or ``[N]``.
        tile_size: Side of the removed square tiles (the paper: 1 and 8); must divide ``H`` and ``W``.
        ns: Numbers of removed pixels, each a multiple of ``tile_size**2``; default
            :func:`default_sensitivity_ns` (16 log-spaced values).
        n_masks: Random masks per ``n`` (the paper: 100).
        baseline: Replacement values (``"mean"``, ``"zero"``, a number or a tensor, see ``degradation_curves``).
        output: ``"logit"`` (the paper) or ``"probability"``.
        seed: Seed of the masks' own generator (global random state is left alone).
        batch_size: Images per forward pass.

    Returns:
        :class:`SensitivityN` with ``correlation [N, M]``.

    Raises:
        DataError: Shapes that do not match, a tile size not dividing the image, an ``n`` that is not a positive
            multiple of ``tile_size**2`` or exceeds the image, fewer than 3 masks.

    Example:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
        >>> x = torch.rand(2, 1, 4, 4)
        >>> result = sensitivity_n(model, x, torch.rand(2, 4, 4), 0, ns=[2, 8], n_masks=20)
        >>> result.correlation.shape
        torch.Size([2, 2])
    """
    maps = check_inputs_and_maps(inputs, attributions)
    n_images = inputs.shape[0]
    positions = positions_of(inputs)
    check_tile_size(tile_size, *positions)
    target = as_targets(target, n_images, device=inputs.device)
    check_output(output)
    if n_masks < 3:
        raise DataError(f"n_masks must be at least 3 for a correlation, got {n_masks}")
    tiles = [size // tile_size for size in positions]
    n_tiles = int(torch.tensor(tiles).prod())
    area = tile_size ** len(positions)
    n_positions = n_tiles * area
    ns = _checked_ns(ns, n_tiles, tile_size, len(positions))
    base = baseline_images(inputs, baseline)
    tile_sums = tile_means(maps, tile_size).flatten(1) * area  # [N, T]

    def score(x: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        logits = batched_forward(model, x, batch_size)
        as_targets(classes, len(classes), num_classes=logits.shape[-1])
        return target_values(logits, classes, output)

    original = score(inputs, target)
    tile_masks = _random_tile_masks(ns, n_masks, n_tiles, area, seed).to(device=inputs.device, dtype=maps.dtype)
    removed = (tile_sums @ tile_masks.T).reshape(n_images, len(ns), n_masks)
    pixel_masks = tile_masks_to_pixels(tile_masks.reshape(-1, *tiles), tile_size, len(positions))  # [M*masks, *pos]
    values = _masked_scores(score, inputs, target, pixel_masks, base, batch_size)
    drops = original[:, None, None] - values.reshape(n_images, len(ns), n_masks)
    correlation = pearson_rows(removed, drops)  # [N, M]
    ns_tensor = torch.tensor(ns)
    return SensitivityN(
        ns=ns_tensor,
        fraction=ns_tensor.to(torch.float64) / n_positions,
        correlation=correlation,
        tile_size=tile_size,
    )


def _checked_ns(ns: Sequence[int] | None, n_tiles: int, tile_size: int, spatial: int) -> list[int]:
    """``ns`` (default :func:`default_sensitivity_ns`), each a positive multiple of the tile area within the input."""
    area = tile_size**spatial
    ns = default_sensitivity_ns(n_tiles, tile_size, spatial=spatial) if ns is None else list(ns)
    for n in ns:
        if n < 1 or n % area or n // area > n_tiles:
            raise DataError(
                f"each n must be a positive multiple of tile_size**{spatial} = {area} and at most "
                f"{n_tiles * area} {'pixels' if spatial == 2 else 'positions'}, got {n}"
            )
    return ns


def _random_tile_masks(ns: list[int], n_masks: int, n_tiles: int, area: int, seed: int) -> torch.Tensor:
    """``[len(ns) * n_masks, T]``: per mask a random subset of ``n / area`` tiles (the first of a permutation)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.cat([torch.argsort(torch.rand(n_masks, n_tiles, generator=generator), dim=1) < n // area for n in ns])


def _masked_scores(
    score: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], inputs: torch.Tensor, target: torch.Tensor,
    pixel_masks: torch.Tensor, base: torch.Tensor, batch_size: int,
) -> torch.Tensor:  # fmt: skip
    """``score`` of every image under every mask, ``[N * masks]`` (image-major)."""
    per_image = pixel_masks.shape[0]
    values = []
    # One flat index over (image, mask), so every forward pass is a full batch however few images there are.
    for flat in chunks(inputs.shape[0] * per_image, batch_size):
        index = torch.arange(flat.start, flat.stop, device=inputs.device)
        image, mask = index // per_image, index % per_image
        values.append(score(replace(inputs[image], pixel_masks[mask], base[image]), target[image]))
    return torch.cat(values)
