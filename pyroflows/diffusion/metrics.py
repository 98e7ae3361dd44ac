r"""Sample-quality metrics.

Example:
    >>> import torch
    >>> x = torch.tensor([[0.0], [1.0]])
    >>> float(energy_distance(x, x))
    0.0
    >>> float(energy_distance(x, x + 1))
    1.0
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["energy_distance"]


def _mean_distance(a: torch.Tensor, b: torch.Tensor, chunk: int) -> torch.Tensor:
    total = a.new_zeros(())
    for start in range(0, a.shape[0], chunk):
        total = total + torch.cdist(a[start : start + chunk], b).sum()
    return total / (a.shape[0] * b.shape[0])


def energy_distance(x: Any, y: Any, *, chunk: int = 2048) -> torch.Tensor:
    r"""The energy distance as the plain V-statistic over all pairs (self-pairs included),

    .. math::
        2\, \overline{\|x - y\|} - \overline{\|x - x'\|} - \overline{\|y - y'\|},

    computed in float64 with :func:`torch.cdist` in row chunks (memory ``chunk * N``).

    Args:
        x: Samples of shape ``(N, D)`` (array or tensor).
        y: Samples of shape ``(M, D)``.
        chunk: Rows per ``cdist`` call.

    Returns:
        A float64 scalar tensor, non-negative; 0 when the two samples are identical.

    Raises:
        ValueError: not 2-D or different numbers of columns.
    """
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).detach().double()
    y = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y).detach().double().to(x.device)
    if x.dim() != 2 or y.dim() != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"x, y: expected shapes (N, D) and (M, D), got {tuple(x.shape)} and {tuple(y.shape)}")
    return 2 * _mean_distance(x, y, chunk) - _mean_distance(x, x, chunk) - _mean_distance(y, y, chunk)
