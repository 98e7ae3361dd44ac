r"""The parameter-free map from :math:`\mathbb{R}^D` onto a half-line, and the choice of squash for given bounds.

For a one-sided support :math:`[low, \infty)` (or :math:`(-\infty, high]`) the flows squash with

.. math:: y = low + s\,e^{x} \qquad\text{or}\qquad y = high - s\,e^{-x},

with a fixed scale :math:`s > 0` (the typical size of :math:`|y - \text{bound}|`). At the bound this behaves like the
interval squash: a logit-space density decaying like :math:`e^{-a|x|}` towards the bound gives a density
:math:`\propto |y - \text{bound}|^{a - 1}`, so the :class:`~pyroflows.flows.TwoSlopeAffine` layer learns the power
law there exactly as on an interval (an unbounded density such as Gamma(0.5)'s at 0 is :math:`a = 1/2`). At the open
end a logit-space tail :math:`e^{-b x}` becomes a power-law tail :math:`|y|^{-b-1}`; the tail layer learns
:math:`b`, from heavy (Pareto-like) to the fast decay of a log-normal or a Gamma.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch.distributions import Transform, constraints

from pyroflows.errors import DataError
from pyroflows.flows.squash import IntervalSquashTransform

__all__ = ["HalfLineSquashTransform", "make_squash", "bounds_kind", "bound_tensors"]


class HalfLineSquashTransform(Transform):
    r"""Bijection from :math:`\mathbb{R}^D` onto :math:`(low, \infty)^D` or :math:`(-\infty, high)^D`.

    Args:
        bound: The finite bound(s), one per dimension.
        side: ``"lower"`` for :math:`y > bound` (support ``greater_than``), ``"upper"`` for :math:`y < bound`
            (support ``less_than``).
        scale: :math:`s` above, a positive number (the same in every dimension) or one per dimension.
        cache_size: As for :class:`torch.distributions.Transform`.

    Raises:
        DataError: a bound is not finite, ``scale`` is not positive and finite, or ``side`` is unknown.

    Example:
        >>> t = HalfLineSquashTransform([0.0], side="lower")
        >>> t(torch.tensor([[0.0]]))
        tensor([[1.]])
        >>> t.codomain.check(torch.tensor([[-1.0]]))
        tensor([False])
    """

    bijective = True
    sign = 1
    domain = constraints.real_vector

    def __init__(
        self,
        bound: float | Sequence[float] | torch.Tensor,
        side: str = "lower",
        scale: float | Sequence[float] | torch.Tensor = 1.0,
        cache_size: int = 1,
    ) -> None:
        super().__init__(cache_size=cache_size)
        if side not in ("lower", "upper"):
            raise DataError(f"side must be 'lower' or 'upper', got {side!r}")
        bound_t = torch.atleast_1d(
            torch.as_tensor(bound, dtype=torch.float64 if not torch.is_tensor(bound) else None)
        ).flatten()
        scale_t = torch.as_tensor(scale, dtype=bound_t.dtype, device=bound_t.device).flatten()
        if not torch.isfinite(bound_t).all():
            raise DataError(f"the bound of a half-line must be finite, got {bound_t.tolist()}")
        if not (torch.isfinite(scale_t).all() and (scale_t > 0).all()) or scale_t.numel() not in (1, bound_t.numel()):
            raise DataError(f"scale must be one positive finite number or one per dimension, got {scale_t.tolist()}")
        self.bound, self.side, self.scale = bound_t, side, scale_t.expand_as(bound_t).clone()

    @property
    def low(self) -> torch.Tensor:
        r"""The lower end of the support per dimension (:math:`-\infty` for ``side="upper"``)."""
        return self.bound if self.side == "lower" else torch.full_like(self.bound, -math.inf)

    @property
    def high(self) -> torch.Tensor:
        r"""The upper end of the support per dimension (:math:`+\infty` for ``side="lower"``)."""
        return self.bound if self.side == "upper" else torch.full_like(self.bound, math.inf)

    @constraints.dependent_property(is_discrete=False, event_dim=1)
    def codomain(self) -> constraints.Constraint:
        """The half-line the transform maps onto."""
        base = constraints.greater_than(self.bound) if self.side == "lower" else constraints.less_than(self.bound)
        return constraints.independent(base, 1)

    def with_cache(self, cache_size: int = 1) -> HalfLineSquashTransform:
        """The same transform with the given cache size."""
        if self._cache_size == cache_size:
            return self
        return HalfLineSquashTransform(self.bound, self.side, self.scale, cache_size=cache_size)

    def to(self, *args, **kwargs) -> HalfLineSquashTransform:
        """A copy with the bound and scale moved/cast like :meth:`torch.Tensor.to`."""
        return HalfLineSquashTransform(
            self.bound.to(*args, **kwargs), self.side, self.scale.to(*args, **kwargs), self._cache_size
        )

    def __eq__(self, other: object) -> bool:
        """Equal when side, bound and scale are equal."""
        return (
            isinstance(other, HalfLineSquashTransform)
            and self.side == other.side
            and torch.equal(self.bound, other.bound)
            and torch.equal(self.scale, other.scale)
        )

    def _signed(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.side == "lower" else -x

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        bound, scale = self.bound.to(x), self.scale.to(x)
        offset = scale * torch.exp(self._signed(x))
        return bound + offset if self.side == "lower" else bound - offset

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        bound, scale = self.bound.to(y), self.scale.to(y)
        gap = y - bound if self.side == "lower" else bound - y
        # Points on (or rounded onto) the bound are scored as the nearest resolvable interior point.
        tiny = torch.finfo(y.dtype).eps * torch.maximum(scale, bound.abs())
        return self._signed(torch.log(gap.clamp(min=tiny)) - torch.log(scale))

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        r""":math:`\sum_d \log s_d \pm x_d`."""
        return (torch.log(self.scale).to(x) + self._signed(x)).sum(-1)


def bound_tensors(
    low: float | Sequence[float] | torch.Tensor, high: float | Sequence[float] | torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The bounds as float64 vectors of equal length (Python floats are kept exactly, never rounded to float32).

    Raises:
        DataError: the bounds are not numbers, or not of equal length.

    Example:
        >>> bound_tensors(0.1, [0.3])[0].item()
        0.1
    """
    try:
        low_t = torch.atleast_1d(torch.as_tensor(low, dtype=torch.float64)).flatten()
        high_t = torch.atleast_1d(torch.as_tensor(high, dtype=torch.float64)).flatten()
    except (TypeError, ValueError, RuntimeError) as exc:
        raise DataError(f"low and high must be numbers or vectors of numbers, got {low!r} and {high!r}") from exc
    if low_t.shape != high_t.shape:
        raise DataError(
            f"low and high must be numbers or equal-length vectors, got lengths {low_t.numel()} and {high_t.numel()}"
        )
    return low_t, high_t


def bounds_kind(low: torch.Tensor, high: torch.Tensor) -> str:
    """``"interval"`` (all bounds finite), ``"lower"`` (finite ``low``, ``high = inf``) or ``"upper"``.

    Raises:
        DataError: a bound is NaN, both bounds of a dimension are infinite, the dimensions mix kinds, or a finite
            ``low >= high``.

    Example:
        >>> bounds_kind(torch.tensor([0.0]), torch.tensor([math.inf]))
        'lower'
    """
    if torch.isnan(low).any() or torch.isnan(high).any():
        raise DataError(f"bounds must be finite (or -inf / inf), not NaN: low={low.tolist()}, high={high.tolist()}")
    if (low == math.inf).any() or (high == -math.inf).any():
        raise DataError(f"low cannot be +inf nor high -inf, got low={low.tolist()}, high={high.tolist()}")
    low_open, high_open = torch.isinf(low), torch.isinf(high)
    both = (low_open & high_open).nonzero().flatten().tolist()
    if both:
        raise DataError(f"dimension(s) {both} have no finite bound; a compact flow needs at least one per dimension")
    bad = (low >= high).nonzero().flatten().tolist()
    if bad:
        raise DataError(
            f"low must be below high in every dimension; dimension(s) {bad} have "
            f"low={[low[i].item() for i in bad]} >= high={[high[i].item() for i in bad]}"
        )
    if not (low_open.any() or high_open.any()):
        return "interval"
    if high_open.all():
        return "lower"
    if low_open.all():
        return "upper"
    raise DataError(
        "every dimension must have the same kind of bounds (all finite, all [low, inf) or all (-inf, high]); "
        f"got low={low.tolist()}, high={high.tolist()}"
    )


def make_squash(
    low: torch.Tensor, high: torch.Tensor, scale: float | Sequence[float] = 1.0
) -> IntervalSquashTransform | HalfLineSquashTransform:
    """The squash onto :math:`[low, high]`.

    An :class:`IntervalSquashTransform` when both bounds are finite, else a :class:`HalfLineSquashTransform` (``scale``
    applies to half-lines only).

    Example:
        >>> make_squash(*bound_tensors(0.0, math.inf)).codomain
        IndependentConstraint(GreaterThan(lower_bound=tensor([0.], dtype=torch.float64)), 1)
    """
    kind = bounds_kind(low, high)
    if kind == "interval":
        return IntervalSquashTransform(low, high)
    return HalfLineSquashTransform(low if kind == "lower" else high, side=kind, scale=scale)
