"""Figures of attribution maps, built as ``matplotlib.figure.Figure`` objects (no pyplot, no backend switch).

* :func:`overlay_figure` / :func:`save_overlay`: one image with its map overlaid and a colour bar in bits.
* :func:`sequence_maps_figure` / :func:`plot_sequence_maps`: each method's map over the positions of a few
  sequences, the known span shaded.
* :func:`digit_maps_figure`: images with their per-sample and readout maps and ground-truth boxes (the demo's figure).

The ``save_*`` / ``plot_*`` writers go through :func:`pyroflows.io.save_figure` (atomic; staged in an
:class:`~pyroflows.io.AtomicOutputs` group when given).

Example:
    >>> import torch
    >>> figure = sequence_maps_figure(torch.zeros(2, 4, 10), {"saliency": torch.rand(2, 10)})
    >>> len(figure.axes)
    2
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from pyroflows.io import AtomicOutputs, save_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "overlay_figure",
    "save_overlay",
    "sequence_maps_figure",
    "plot_sequence_maps",
    "digit_maps_figure",
]


def overlay_figure(image: torch.Tensor, heatmap: np.ndarray, title: str) -> Figure:
    """The image ``[C, H, W]`` (grey, or RGB for three channels) with ``heatmap [H, W]`` overlaid, in bits.

    Example:
        >>> overlay_figure(torch.zeros(1, 4, 4), np.ones((4, 4)), "a map").axes[0].get_title()
        'a map'
    """
    from matplotlib.figure import Figure

    picture = image.detach().cpu().numpy()
    picture = picture[0] if picture.shape[0] == 1 else np.moveaxis(picture, 0, -1)
    figure = Figure(figsize=(4.2, 3.6))
    ax = figure.subplots()
    ax.imshow(picture, cmap="gray", interpolation="nearest")
    shown = ax.imshow(heatmap, cmap="inferno", alpha=0.6, interpolation="bilinear")
    figure.colorbar(shown, ax=ax, label="bits per pixel")
    ax.set_title(title, fontsize=9)
    ax.axis("off")
    figure.tight_layout()
    return figure


def save_overlay(
    path: str | os.PathLike,
    image: torch.Tensor,
    heatmap: np.ndarray,
    title: str,
    *,
    outputs: AtomicOutputs | None = None,
    overwrite: bool = False,
) -> Path:
    """Write :func:`overlay_figure` to ``path`` (atomically; staged in ``outputs`` when given).

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "map.png"
        >>> save_overlay(path, torch.zeros(1, 4, 4), np.ones((4, 4)), "a map").stat().st_size > 0
        True
    """
    return save_figure(overlay_figure(image, heatmap, title), path, dpi=100, outputs=outputs, overwrite=overwrite)


def sequence_maps_figure(
    inputs: torch.Tensor, maps: dict[str, torch.Tensor], *, spans: torch.Tensor | None = None
) -> Figure:
    """One panel per sequence (at most four): each method's map over the positions.

    Each map is min-max scaled per sequence, and the known span ``[start, end)`` is shaded when ``spans [N, 2]`` is
    given.
    """
    from matplotlib.figure import Figure

    rows = min(4, inputs.shape[0])
    figure = Figure(figsize=(9, 1.9 * rows))
    axes = figure.subplots(rows, 1, squeeze=False)
    for row in range(rows):
        ax = axes[row, 0]
        for name, values in maps.items():
            curve = values[row].detach().double().cpu()
            span = float(curve.max() - curve.min()) or 1.0
            ax.plot((curve - curve.min()).numpy() / span, label=name, linewidth=1)
        if spans is not None:
            start, end = spans[row].tolist()
            ax.axvspan(start - 0.5, end - 0.5, color="lime", alpha=0.25)
        ax.set_ylabel(f"seq {row}", fontsize=8)
    axes[0, 0].legend(fontsize=6, ncol=4)
    axes[-1, 0].set_xlabel("position (maps min-max scaled per sequence)")
    figure.tight_layout()
    return figure


def plot_sequence_maps(
    path: str | os.PathLike,
    inputs: torch.Tensor,
    maps: dict[str, torch.Tensor],
    *,
    spans: torch.Tensor | None = None,
    outputs: AtomicOutputs | None = None,
    overwrite: bool = False,
) -> Path:
    """Write :func:`sequence_maps_figure` to ``path`` (atomically; staged in ``outputs`` when given).

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "maps.png"
        >>> plot_sequence_maps(path, torch.zeros(1, 4, 10), {"random": torch.rand(1, 10)}).exists()
        True
    """
    figure = sequence_maps_figure(inputs, maps, spans=spans)
    return save_figure(figure, path, outputs=outputs, overwrite=overwrite, dpi=100)


def digit_maps_figure(
    images: torch.Tensor, labels: torch.Tensor, boxes: torch.Tensor, maps: dict[str, torch.Tensor], columns: int = 4
) -> Figure:
    """A grid: one row for the images and one per entry of ``maps``, ``columns`` images wide.

    Each image has its ground-truth box ``(top, left, bottom, right)`` drawn (images repeat when there are fewer than
    ``columns``).

    Example:
        >>> figure = digit_maps_figure(torch.zeros(2, 1, 8, 8), torch.tensor([3, 4]), torch.tensor([[1, 1, 5, 5]] * 2),
        ...                            {"saliency": torch.rand(2, 8, 8)})
        >>> len(figure.axes)
        8
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    rows = [("image", None), *maps.items()]
    figure = Figure(figsize=(2 * columns, 2 * len(rows)))
    axes = figure.subplots(len(rows), columns, squeeze=False)
    for j in range(columns):
        i = j % images.shape[0]
        for row, (name, values) in enumerate(rows):
            ax = axes[row, j]
            ax.imshow(images[i, 0].detach().cpu().numpy(), cmap="gray")
            if values is not None:
                ax.imshow(values[i].detach().cpu().numpy(), cmap="inferno", alpha=0.6)
            top, left, bottom, right = boxes[i].tolist()
            ax.add_patch(Rectangle((left - 0.5, top - 0.5), right - left, bottom - top, fill=False, ec="lime"))
            ax.set_title(f"{name} ({int(labels[i])})", fontsize=8)
            ax.axis("off")
    figure.tight_layout()
    return figure
