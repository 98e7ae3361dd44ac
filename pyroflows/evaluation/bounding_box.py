"""The bounding-box score: how much of an attribution map's top mass lies inside the object's box.

Schulz et al. (2020), Sec. 4: with ``n`` the box's area in pixels, take the ``n`` highest-attributed pixels and
report the fraction of them inside the box (1 for a map that ranks the whole box first, ``n / (H W)`` in
expectation for a random map). It equals Quantus' ``RelevanceRankAccuracy`` with the box as the segmentation mask.

Example:
    >>> import torch
    >>> maps = torch.zeros(1, 4, 4)
    >>> maps[0, :2, :2] = 1.0  # all the attribution inside the box
    >>> bounding_box_score(maps, torch.tensor([[0, 0, 2, 2]]))
    tensor([1.])
"""

from __future__ import annotations

import torch

from pyroflows.errors import DataError

__all__ = ["bounding_box_score", "box_masks"]


def box_masks(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Boolean masks ``[N, height, width]``, true inside ``(top, left, bottom, right)`` boxes (exclusive ends).

    Raises:
        DataError: ``boxes`` is not ``[N, 4]``, a box is empty, or a box reaches outside the image.

    Example:
        >>> box_masks(torch.tensor([[0, 1, 1, 3]]), 2, 3).int()
        tensor([[[0, 1, 1],
                 [0, 0, 0]]], dtype=torch.int32)
    """
    boxes = torch.as_tensor(boxes)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise DataError(f"boxes must have shape [N, 4] as (top, left, bottom, right), got {list(boxes.shape)}")
    if boxes.is_floating_point():
        if not torch.equal(boxes, boxes.round()):
            raise DataError("boxes must hold integer pixel coordinates")
        boxes = boxes.long()
    top, left, bottom, right = boxes.unbind(1)
    bad = (top < 0) | (left < 0) | (bottom > height) | (right > width)
    if bad.any():
        rows = bad.nonzero().flatten().tolist()[:5]
        raise DataError(
            f"boxes {rows} reach outside the {height} x {width} image: "
            f"{[boxes[r].tolist() for r in rows]} "
            f"(expected 0 <= top < bottom <= {height}, 0 <= left < right <= {width})"
        )
    empty = (bottom <= top) | (right <= left)
    if empty.any():
        rows = empty.nonzero().flatten().tolist()[:5]
        raise DataError(f"boxes {rows} are empty (need top < bottom and left < right): {boxes[rows].tolist()}")
    n = boxes.shape[0]
    device = boxes.device
    r = torch.arange(height, device=device).view(1, height, 1)
    c = torch.arange(width, device=device).view(1, 1, width)
    return (r >= top.view(n, 1, 1)) & (r < bottom.view(n, 1, 1)) & (c >= left.view(n, 1, 1)) & (c < right.view(n, 1, 1))


def bounding_box_score(attributions: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    r"""Fraction of the ``n`` highest-attributed pixels that lie inside the box, ``n`` the box's area.

    .. math:: s = \frac{|\mathrm{top}_n(a) \cap B|}{n}, \qquad n = |B|.

    Ties are broken by pixel order (row-major), so a constant map scores by where the box lies, not randomly.

    Args:
        attributions: ``[N, H, W]`` maps (a ``[N, 1, H, W]`` map is squeezed).
        boxes: ``[N, 4]`` integer ``(top, left, bottom, right)``, bottom/right exclusive.

    Returns:
        ``[N]`` scores in ``[0, 1]`` (float, on the maps' device).

    Raises:
        DataError: the shapes do not match, a map holds NaN, or a box is empty or outside the image.

    Example:
        >>> maps = torch.arange(16.0).view(1, 4, 4)  # the bottom row is ranked first
        >>> bounding_box_score(maps, torch.tensor([[2, 0, 4, 2]]))
        tensor([0.5000])
    """
    attributions = torch.as_tensor(attributions)
    if attributions.ndim == 4 and attributions.shape[1] == 1:
        attributions = attributions[:, 0]
    if attributions.ndim != 3:
        raise DataError(f"attributions must have shape [N, H, W], got {list(attributions.shape)}")
    boxes = torch.as_tensor(boxes, device=attributions.device)
    if boxes.ndim != 2 or boxes.shape[0] != attributions.shape[0]:
        raise DataError(
            f"attributions hold {attributions.shape[0]} maps but boxes has shape {list(boxes.shape)}; "
            f"expected [{attributions.shape[0]}, 4]"
        )
    if torch.isnan(attributions).any():
        rows = torch.isnan(attributions).flatten(1).any(1).nonzero().flatten().tolist()[:5]
        raise DataError(f"attribution maps {rows} contain NaN")
    n, h, w = attributions.shape
    inside = box_masks(boxes, h, w).flatten(1)
    area = inside.sum(1)
    order = torch.argsort(attributions.flatten(1), dim=1, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(h * w, device=order.device).expand(n, -1))
    hits = ((rank < area.unsqueeze(1)) & inside).sum(1)
    dtype = attributions.dtype if attributions.is_floating_point() else torch.get_default_dtype()
    return hits.to(dtype) / area.to(dtype)
