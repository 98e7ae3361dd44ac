r"""``SegmentFlow``: a learned density on the line segment from :math:`p_0` to :math:`p_1` in :math:`\mathbb{R}^n`.

This is the source post's motivating case: a quantity that lives on a segment (a position along a rail, a mixing
proportion between two points). The density is a :class:`~pyroflows.flows.CompactFlow` on the arc length
:math:`t \in [0, L]`, :math:`L = \lVert p_1 - p_0 \rVert`, and a point :math:`p_0 + t\,u` (:math:`u` the unit
direction) has that log-density with respect to arc length. Points off the segment are outside the support.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from torch.distributions import constraints

from pyroflows.errors import DataError
from pyroflows.flows.compact import CompactFlow
from pyroflows.serialization import Checkpointable
from pyroflows.validation import as_finite_2d

__all__ = ["SegmentFlow", "SegmentDistribution", "OnSegment"]

_INTEGER_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


class OnSegment(constraints.Constraint):
    r"""Constraint "lies on the segment :math:`p_0 \to p_1`", up to rounding.

    A point is accepted when its distance off the line and its overshoot past either end are at most

    .. math:: \text{slack} = r\,L + 2\sqrt{n}\,\varepsilon\,
        \max(\lVert p_0\rVert_\infty, \lVert p_1\rVert_\infty, L),

    with :math:`L` the length, :math:`r` = ``rtol`` and :math:`\varepsilon` the machine epsilon of the point's dtype:
    rounding each of the :math:`n` coordinates of a point on the segment moves it by at most
    :math:`\tfrac12\varepsilon` times the coordinates' magnitude, so exact float32 points on a segment far from the
    origin are on it, while the relative tolerance ``rtol`` keeps the test meaningful near the origin.

    Example:
        >>> far = OnSegment(torch.tensor([1e4, 1e4], dtype=torch.float64), torch.tensor([1e4 + 1, 1e4 + 1.0]))
        >>> far.check(torch.tensor([[1e4 + 0.3, 1e4 + 0.3]], dtype=torch.float32)).tolist()
        [True]
        >>> far.check(torch.tensor([[1e4 + 0.3, 1e4 + 0.4]], dtype=torch.float32)).tolist()
        [False]
    """

    event_dim = 1

    def __init__(self, p0: torch.Tensor, p1: torch.Tensor, rtol: float = 1e-6) -> None:
        self.p0, self.p1, self.rtol = p0, p1.to(p0), rtol
        super().__init__()

    def arc_length(self, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Arc length :math:`t` of the projection onto the line, and the distance off the line."""
        value = value.to(self.p0.dtype) if value.is_floating_point() else value.to(self.p0)
        direction = self.p1 - self.p0
        length = direction.norm()
        t = ((value - self.p0) * direction).sum(-1) / length
        off = (value - self.p0 - t[..., None] * direction / length).norm(dim=-1)
        return t, off

    def slack(self, dtype: torch.dtype) -> torch.Tensor:
        """How far off the segment a point of this dtype may lie (see the class docstring)."""
        eps = torch.finfo(dtype if dtype.is_floating_point else self.p0.dtype).eps
        length = (self.p1 - self.p0).norm()
        scale = torch.maximum(torch.maximum(self.p0.abs().max(), self.p1.abs().max()), length)
        return self.rtol * length + 2 * math.sqrt(self.p0.numel()) * eps * scale

    def check(self, value: torch.Tensor) -> torch.Tensor:
        """Whether each point lies on the segment (within rounding)."""
        length = (self.p1 - self.p0).norm()
        t, off = self.arc_length(value)
        slack = self.slack(value.dtype)
        return (off <= slack) & (t >= -slack) & (t <= length + slack)

    def __repr__(self) -> str:
        """The segment's ends."""
        return f"OnSegment(p0={self.p0.tolist()}, p1={self.p1.tolist()})"


class SegmentDistribution(dist.TorchDistribution):
    r"""Distribution on a segment, from a one-dimensional distribution ``arc`` over the arc length :math:`[0, L]`.

    ``log_prob`` is with respect to arc length. Off-segment points raise ``ValueError`` with validation on and get
    :math:`-\infty` with it off.
    """

    arg_constraints: dict[str, constraints.Constraint] = {}
    has_rsample = True

    def __init__(self, arc: dist.TorchDistribution, p0: torch.Tensor, p1: torch.Tensor, validate_args=None) -> None:
        self.arc, self.p0, self.p1 = arc, p0, p1
        self._support = OnSegment(p0, p1)
        super().__init__(arc.batch_shape, p0.shape, validate_args=validate_args)

    @constraints.dependent_property(is_discrete=False, event_dim=1)
    def support(self) -> constraints.Constraint:
        """The segment (:class:`OnSegment`)."""
        return self._support

    def _embed(self, t: torch.Tensor) -> torch.Tensor:
        direction = self.p1 - self.p0
        return self.p0 + t * (direction / direction.norm())

    def rsample(self, sample_shape: torch.Size | list[int] | tuple[int, ...] = ()) -> torch.Tensor:
        """Reparameterised points on the segment."""
        return self._embed(self.arc.rsample(torch.Size(sample_shape)))

    def sample(self, sample_shape: torch.Size | list[int] | tuple[int, ...] = ()) -> torch.Tensor:
        """Points on the segment (no gradient)."""
        with torch.no_grad():
            return self._embed(self.arc.sample(torch.Size(sample_shape)))

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """The log density along the segment (per unit length); ``-inf`` off it."""
        inside = self._support.check(value)
        t, _ = self._support.arc_length(value)
        length = (self.p1 - self.p0).norm()
        if not bool(inside.all()) and self._validate_args:
            bad = value[~inside]
            raise ValueError(f"{bad.shape[0]} point(s) off the segment {self._support}: {bad[:5].tolist()}")
        t = torch.where(inside, t.clamp(0, length), length / 2)  # rounding may put t a hair outside [0, L]
        with dist.validation_enabled(False):
            log_prob = self.arc.log_prob(t[..., None])
        return log_prob.masked_fill(~inside, float("-inf"))

    def expand(self, batch_shape, _instance=None):  # noqa: ANN001 - Pyro's signature
        """The same distribution with a new batch shape."""
        return SegmentDistribution(self.arc.expand(batch_shape), self.p0, self.p1, validate_args=self._validate_args)


class SegmentFlow(Checkpointable, PyroModule):
    r"""A learnable density on the segment :math:`p_0 \to p_1` in :math:`\mathbb{R}^n`.

    Args:
        p0: Start point, a sequence of ``n`` numbers.
        p1: End point (distinct from ``p0``).
        **flow_kwargs: Passed to the arc-length :class:`~pyroflows.flows.CompactFlow` (``transform``,
            ``num_layers``, ...).

    Raises:
        DataError: ``p0`` and ``p1`` differ in shape, are not finite, or coincide.

    Example:
        >>> seg = SegmentFlow([0.0, 0.0], [3.0, 4.0], num_layers=2)
        >>> d = seg()
        >>> d.sample((2,)).shape
        torch.Size([2, 2])
        >>> bool(d.support.check(torch.tensor([1.5, 2.0])))
        True
        >>> bool(d.support.check(torch.tensor([1.5, 2.5])))
        False
    """

    def __init__(self, p0: Sequence[float] | torch.Tensor, p1: Sequence[float] | torch.Tensor, **flow_kwargs: Any):
        super().__init__()
        dtype = flow_kwargs.get("dtype", torch.float64)
        p0_t = torch.as_tensor(p0, dtype=dtype).flatten()
        p1_t = torch.as_tensor(p1, dtype=dtype).flatten()
        if p0_t.shape != p1_t.shape:
            raise DataError(f"p0 and p1 must have the same length, got {p0_t.numel()} and {p1_t.numel()}")
        if not (torch.isfinite(p0_t).all() and torch.isfinite(p1_t).all()):
            raise DataError("p0 and p1 must be finite")
        length = (p1_t - p0_t).norm().item()
        if length == 0:
            raise DataError(f"p0 and p1 coincide ({p0_t.tolist()}): a segment needs two distinct end points")
        self.register_buffer("p0", p0_t)
        self.register_buffer("p1", p1_t)
        self.length = length
        self.arc = CompactFlow(0.0, length, **flow_kwargs)
        self._config = {"p0": p0_t.tolist(), "p1": p1_t.tolist(), **flow_kwargs}
        self._config.pop("dtype", None)
        self._config["dtype"] = str(dtype).removeprefix("torch.")

    @property
    def config(self) -> dict[str, Any]:
        """The end points and the arc-length flow's arguments as plain values (what :meth:`save` writes).

        The ends :func:`~pyroflows.flows.fit` chose for the arc-length flow (per bound, ``bound_ends``, or per fit
        for ``ends="auto"``) are the arc's, so a saved segment flow reloads as fitted.
        """
        config = dict(self._config)
        arc = self.arc.config
        if arc.get("bound_ends") is not None:
            config["bound_ends"] = arc["bound_ends"]
        if "ends" in config:
            config["ends"] = arc["ends"]
        return config

    def forward(self) -> SegmentDistribution:
        """A fresh distribution on the segment."""
        return SegmentDistribution(self.arc(), self.p0, self.p1)

    def to_arc_length(self, points: torch.Tensor | np.ndarray, *, name: str = "data") -> torch.Tensor:
        r"""Arc length :math:`t \in [0, L]` of points on the segment, shape ``(N, 1)``.

        Raises:
            DataError: wrong shape, NaN/inf, or points off the segment (naming how many and which rows).
        """
        x = torch.as_tensor(np.asarray(points) if not torch.is_tensor(points) else points).to(self.p0.device)
        if x.dtype == torch.bool:
            x = x.to(self.p0.dtype)
        if x.is_complex() or not (x.is_floating_point() or x.dtype in _INTEGER_DTYPES):
            raise DataError(f"{name}: expected real numbers, got dtype {x.dtype}")
        # Integers are read at the segment's precision, floats at their own (the on-segment slack depends on it).
        x = as_finite_2d(x, name, dim=self.p0.numel(), dtype=None if x.is_floating_point() else self.p0.dtype,
                         allow_1d=False, allow_empty=True)  # fmt: skip
        support = OnSegment(self.p0, self.p1)
        off = (~support.check(x)).nonzero().flatten()
        if off.numel():
            raise DataError(
                f"{name}: {off.numel()} of {x.shape[0]} row(s) lie off the segment {support}, e.g. rows "
                f"{off[:5].tolist()}"
            )
        t, _ = support.arc_length(x)
        return t.clamp(0, self.length)[:, None]

    @classmethod
    def from_config(cls, config: dict[str, Any], **kwargs: Any) -> SegmentFlow:
        """Rebuild an (untrained) segment flow from :attr:`config`."""
        config = {**config, **kwargs}
        config["dtype"] = getattr(torch, config.get("dtype", "float64"))
        return cls(config.pop("p0"), config.pop("p1"), **config)
