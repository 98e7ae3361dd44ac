r"""The parameter-free map from :math:`\mathbb{R}^D` onto a box :math:`[low, high]`.

Composing ``SigmoidTransform`` and ``AffineTransform`` does the same arithmetic but reports codomain ``Real``, so a
distribution built from it claims support on all of :math:`\mathbb{R}` and scores any point (at the density of the
nearest clamp point). This transform's codomain is the interval (independent over dimensions), and it computes

.. math:: y = high\,\sigma(x) + low\,\sigma(-x), \qquad x = \log(y - low) - \log(high - y),

which keeps full relative precision near both ends rather than rounding :math:`low + (high-low)\sigma(x)`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch.distributions import Transform, constraints

from pyroflows.errors import DataError

__all__ = ["IntervalSquashTransform", "to_bounds_dtype"]


def to_bounds_dtype(value: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    r"""``value`` cast to the dtype of the bounds, with points that lie on a bound at their own precision put on it.

    A float32 point is the float32 number nearest to what was meant, so the upper bound 0.3 written in float32 is
    :math:`0.3 + 1.2 \cdot 10^{-8}`, just above the float64 bound. Such a point is inside the support at its own
    precision and is moved onto the bound (by less than half a float32 unit in the last place); a point beyond the
    bound at its own precision stays outside. Values already as precise as the bounds are only cast.

    Example:
        >>> low, high = torch.tensor([0.1], dtype=torch.float64), torch.tensor([0.3], dtype=torch.float64)
        >>> to_bounds_dtype(torch.tensor([[0.3], [0.31]]), low, high).flatten().tolist()
        [0.3, 0.3100000023841858]
    """
    if not value.is_floating_point() or torch.finfo(value.dtype).eps <= torch.finfo(low.dtype).eps:
        return value.to(low.dtype)
    cast = value.to(low.dtype)
    low, high = low.to(cast.device), high.to(cast.device)
    on_low = (cast < low) & (value == low.to(value.dtype))
    on_high = (cast > high) & (value == high.to(value.dtype))
    return torch.where(on_low, low, torch.where(on_high, high, cast))


class IntervalSquashTransform(Transform):
    r"""Bijection from :math:`\mathbb{R}^D` onto the open box :math:`(low, high)` whose codomain is the box.

    Points exactly on the boundary (or rounded onto it in float32) are inverted as if they were the nearest
    representable interior point, so their log-density stays finite; points outside are the caller's business
    (:class:`~pyroflows.flows.CompactFlow` gives them :math:`-\infty` or an error).

    Args:
        low: Lower bound(s), a number or one per dimension.
        high: Upper bound(s), same shape as ``low``; every ``high`` must exceed its ``low``.
        cache_size: 1 caches the last (x, y) pair so samples re-score from their exact pre-image.

    Raises:
        DataError: a bound is not finite or ``low >= high`` somewhere.

    Example:
        >>> t = IntervalSquashTransform([1.0], [2.5])
        >>> t(torch.tensor([[0.0]]))
        tensor([[1.7500]])
        >>> t.codomain.check(torch.tensor([[3.0]]))
        tensor([False])
    """

    bijective = True
    sign = 1
    domain = constraints.real_vector

    def __init__(
        self,
        low: float | Sequence[float] | torch.Tensor,
        high: float | Sequence[float] | torch.Tensor,
        cache_size: int = 1,
    ) -> None:
        super().__init__(cache_size=cache_size)
        # Python numbers become float64 (not torch's float32 default), so 0.1 stays 0.1 and 1e8 + 1 stays above 1e8.
        low_t = torch.as_tensor(low, dtype=None if torch.is_tensor(low) else torch.float64)
        high_t = torch.as_tensor(high, dtype=low_t.dtype, device=low_t.device)
        low_t, high_t = torch.atleast_1d(low_t), torch.atleast_1d(high_t)
        if low_t.shape != high_t.shape or low_t.dim() != 1:
            raise DataError(
                f"low and high must be numbers or equal-length vectors, got {low_t.shape} and {high_t.shape}"
            )
        if not (torch.isfinite(low_t).all() and torch.isfinite(high_t).all()):
            raise DataError(f"bounds must be finite, got low={low_t.tolist()}, high={high_t.tolist()}")
        bad = (low_t >= high_t).nonzero().flatten().tolist()
        if bad:
            raise DataError(
                f"low must be below high in every dimension; dimension(s) {bad} have "
                f"low={[low_t[i].item() for i in bad]} >= high={[high_t[i].item() for i in bad]}"
            )
        self.low, self.high = low_t, high_t

    @constraints.dependent_property(is_discrete=False, event_dim=1)
    def codomain(self) -> constraints.Constraint:
        """The box the transform maps onto."""
        return constraints.independent(constraints.interval(self.low, self.high), 1)

    def with_cache(self, cache_size: int = 1) -> IntervalSquashTransform:
        """The same transform with the given cache size."""
        if self._cache_size == cache_size:
            return self
        return IntervalSquashTransform(self.low, self.high, cache_size=cache_size)

    def to(self, *args, **kwargs) -> IntervalSquashTransform:
        """A copy with the bounds moved/cast like :meth:`torch.Tensor.to`."""
        return IntervalSquashTransform(self.low.to(*args, **kwargs), self.high.to(*args, **kwargs), self._cache_size)

    def __eq__(self, other: object) -> bool:
        """Equal when the bounds are equal."""
        return (
            isinstance(other, IntervalSquashTransform)
            and torch.equal(self.low, other.low)
            and torch.equal(self.high, other.high)
        )

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        return self.high.to(x) * torch.sigmoid(x) + self.low.to(x) * torch.sigmoid(-x)

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        low, high = self.low.to(y), self.high.to(y)
        # The smallest gap float arithmetic can resolve at this scale; keeps boundary points finite.
        tiny = torch.finfo(y.dtype).eps * torch.maximum(high - low, torch.maximum(low.abs(), high.abs()))
        lower_gap = (y - low).clamp(min=tiny)
        upper_gap = (high - y).clamp(min=tiny)
        return torch.log(lower_gap) - torch.log(upper_gap)

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        r""":math:`\sum_d \log(high_d - low_d) + \log\sigma(x_d) + \log\sigma(-x_d)`."""
        log_scale = torch.log(self.high - self.low).to(x)
        return (log_scale + F.logsigmoid(x) + F.logsigmoid(-x)).sum(-1)
