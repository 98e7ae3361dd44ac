r"""The bounding-box score for sequences: how much of a map's top mass lies in the known relevant span.

With :math:`k` the span's width, take the :math:`k` highest-attributed positions and report the fraction of them
inside the span (:func:`span_score`; 1 for a map that ranks the whole span first, :math:`k / L` in expectation for a
random map), and whether the single highest position is inside it (:func:`top1_hit`). Positions marked as padding
are never counted among the top ones. Ties are broken by position order, as for :func:`bounding_box_score`.

Example:
    >>> import torch
    >>> maps = torch.tensor([[0.0, 3.0, 2.0, 1.0]])
    >>> span_score(maps, torch.tensor([[1, 3]])), top1_hit(maps, torch.tensor([[1, 3]]))
    (tensor([1.]), tensor([1.]))
"""

from __future__ import annotations

import torch

from pyroflows.datasets.sequences import span_masks
from pyroflows.errors import DataError

__all__ = ["span_score", "top1_hit"]


def _checked(maps: torch.Tensor, spans: torch.Tensor, padding: torch.Tensor | None):
    maps = torch.as_tensor(maps)
    if maps.ndim == 3 and maps.shape[1] == 1:
        maps = maps[:, 0]
    if maps.ndim != 2:
        raise DataError(f"sequence maps must have shape [N, L], got {list(maps.shape)}")
    spans = torch.as_tensor(spans, device=maps.device)
    if spans.ndim != 2 or spans.shape[0] != maps.shape[0]:
        raise DataError(f"{maps.shape[0]} maps but spans of shape {list(spans.shape)}; expected [{maps.shape[0]}, 2]")
    if torch.isnan(maps).any():
        raise DataError(f"maps {torch.isnan(maps).any(1).nonzero().flatten().tolist()[:5]} contain NaN")
    inside = span_masks(spans, maps.shape[1])
    scores = maps.to(torch.float64)
    if padding is not None:
        padding = torch.as_tensor(padding, device=maps.device).bool()
        if padding.shape != maps.shape:
            raise DataError(f"padding must be [N, L] = {list(maps.shape)}, got {list(padding.shape)}")
        scores = scores.masked_fill(padding, float("-inf"))
    return scores, inside


def span_score(maps: torch.Tensor, spans: torch.Tensor, padding: torch.Tensor | None = None) -> torch.Tensor:
    """Fraction of the ``k`` highest positions inside the span, ``k`` its width: ``[N]``.

    Args:
        maps: ``[N, L]`` attribution maps.
        spans: ``[N, 2]`` ``(start, end)``, end exclusive.
        padding: Optional ``[N, L]``, True at padded positions (never ranked first).

    Raises:
        DataError: shapes that do not match, NaN maps, empty spans or spans outside the sequence.
    """
    scores, inside = _checked(maps, spans, padding)
    n, length = scores.shape
    width = inside.sum(1)
    order = torch.argsort(scores, dim=1, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(length, device=order.device).expand(n, -1))
    hits = ((rank < width.unsqueeze(1)) & inside).sum(1)
    return hits.to(torch.get_default_dtype()) / width.to(torch.get_default_dtype())


def top1_hit(maps: torch.Tensor, spans: torch.Tensor, padding: torch.Tensor | None = None) -> torch.Tensor:
    """1 where the highest position (the first of ties) is inside the span, else 0: ``[N]``."""
    scores, inside = _checked(maps, spans, padding)
    return inside.gather(1, scores.argmax(1, keepdim=True)).squeeze(1).to(torch.get_default_dtype())
