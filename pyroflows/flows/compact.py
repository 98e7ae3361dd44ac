r"""``CompactFlow``: a learnable density on an interval or a box, as a Pyro distribution.

The flow runs base distribution :math:`\to` flow layers in logit space :math:`\to`
:class:`~pyroflows.flows.IntervalSquashTransform` onto :math:`[low, high]`. Calling the module returns a fresh
:class:`BoundedTransformedDistribution` whose ``support`` is the interval (independent over dimensions for a box), so
Pyro's validation, ``biject_to`` and autoguides all see the bounds.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any, ClassVar

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from torch import nn

from pyroflows.errors import DataError
from pyroflows.flows.bound_exponent import BoundExponent, bound_exponents
from pyroflows.flows.families import (
    BASES,
    FAMILIES,
    SPLINE_ENDS,
    LayerOptions,
    Stack,
    default_transform,
    family_for,
    modules_of,
)
from pyroflows.flows.half_line import HalfLineSquashTransform, bound_tensors, make_squash
from pyroflows.flows.sigmoid_spline import SigmoidSpline, check_bound_ends
from pyroflows.flows.squash import IntervalSquashTransform, to_bounds_dtype
from pyroflows.flows.two_slope_affine import TwoSlopeAffine
from pyroflows.serialization import Checkpointable
from pyroflows.validation import check_int

__all__ = [
    "CompactFlow",
    "BoundedTransformedDistribution",
    "TRANSFORMS",
    "BASES",
    "default_transform",
    "freeze_parameters",
    "TAIL_PRIOR_BY_ENDS",
]

#: The layer families (:data:`pyroflows.flows.families.FAMILIES`; iterating gives their names).
TRANSFORMS = FAMILIES
#: The Laplace scale of the tail-slope prior that ``tail_prior="auto"`` gives, per spline ``ends``: each entry's
#: ``tail_prior`` in :data:`~pyroflows.flows.families.SPLINE_ENDS` (where it was measured), none for ``"fixed"`` ends,
#: whose density at the bounds only the tail slopes can set.
TAIL_PRIOR_BY_ENDS: dict[str, float] = {
    name: prior for name in SPLINE_ENDS if (prior := SPLINE_ENDS.build(name)) is not None
}
_names = itertools.count()


class BoundedTransformedDistribution(dist.TransformedDistribution):
    r"""A ``TransformedDistribution`` that treats points outside its support as impossible.

    With validation on (``pyro.enable_validation(True)`` or ``validate_args=True``), ``log_prob`` of a point outside
    the support raises a ``ValueError`` naming the points; with validation off it returns :math:`-\infty` for them
    (never the density of a clamped point, which is what the plain sigmoid-and-affine construction gives).

    Example:
        >>> flow = CompactFlow(0.0, 1.0)
        >>> d = flow()
        >>> d.log_prob(torch.tensor([[2.0]]))
        Traceback (most recent call last):
        ...
        ValueError: 1 value(s) outside the support [0.0, 1.0]: [2.0]
    """

    def _outside_message(self, value: torch.Tensor, inside: torch.Tensor) -> str:
        outside = value[~inside] if inside.dim() > 0 else value[None]
        if outside.dim() > 1 and outside.shape[-1] == 1:
            outside = outside[..., 0]
        squash = self.transforms[-1]
        if isinstance(squash, (IntervalSquashTransform, HalfLineSquashTransform)) and squash.low.numel() == 1:
            box = f"[{squash.low.item()}, {squash.high.item()}]"
        elif isinstance(squash, (IntervalSquashTransform, HalfLineSquashTransform)):
            box = f"the box low={squash.low.tolist()}, high={squash.high.tolist()}"
        else:
            box = str(self.support)
        shown = outside[:5].tolist()
        more = " ..." if outside.shape[0] > 5 else ""
        return f"{outside.shape[0]} value(s) outside the support {box}: {shown}{more}"

    def expand(self, batch_shape, _instance=None):  # noqa: ANN001 - torch's signature
        """The same distribution with a new batch shape (its compute dtype kept)."""
        new = super().expand(batch_shape, _instance)
        new.compute_dtype = getattr(self, "compute_dtype", None)
        return new

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """The log density, computed in the flow's dtype; ``-inf`` outside the support."""
        dtype = getattr(self, "compute_dtype", None)
        squash = self.transforms[-1]
        if dtype is not None and value.is_floating_point() and value.dtype != dtype:
            # float32 data are scored in the flow's (float64 by default) precision; a float32 point equal to a bound
            # rounded to float32 is that bound.
            if isinstance(squash, IntervalSquashTransform):
                value = to_bounds_dtype(value, squash.low.to(dtype), squash.high.to(dtype))
            else:
                value = value.to(dtype)
        inside = self.support.check(value)
        if bool(inside.all()):
            # Keep ``value`` itself so a sample re-scores through the transforms' caches.
            return super().log_prob(value)
        if self._validate_args:
            raise ValueError(self._outside_message(value, inside))
        if isinstance(squash, IntervalSquashTransform):
            middle = ((squash.low + squash.high) / 2).to(value)
        elif isinstance(squash, HalfLineSquashTransform):
            middle = squash(torch.zeros_like(squash.bound)).to(value)
        else:
            middle = 0.0
        mask = inside.reshape(inside.shape + (1,) * len(self.event_shape))
        safe = torch.where(mask, value, middle)
        with dist.validation_enabled(False):
            log_prob = super().log_prob(safe)
        return log_prob.masked_fill(~inside, float("-inf"))


class CompactFlow(Checkpointable, PyroModule):
    r"""A normalizing flow whose density lives on :math:`[low, high]` (an interval, or a box for ``dim > 1``).

    The event shape is always ``(dim,)``: one-dimensional data are a column, shape ``(N, 1)``.

    Layers (base to data): a :class:`~pyroflows.flows.TwoSlopeAffine` layer that learns how fast each tail decays
    (hence the density's power-law behaviour at each bound), then ``num_layers`` of ``transform``, then the squash:

    - ``"radial"``: invertible radial flows (the source post's design), 16 by default.
    - ``"spline"``: a :class:`~pyroflows.flows.SigmoidSpline`, a monotone spline over the whole interval (in the
      data's own coordinates) whose end derivatives set the density at each bound (by default chosen per bound by
      :func:`~pyroflows.flows.fit` from the data, ``ends="data"``).
    - ``"autoregressive"``: Pyro's ``spline_autoregressive`` layers with reversed orderings between them, for
      ``dim > 1`` when the dimensions depend on each other.

    Args:
        low: Lower bound, a number or one per dimension; ``-inf`` for a support :math:`(-\infty, high]`.
        high: Upper bound, same shape as ``low``; ``inf`` for a support :math:`[low, \infty)` (``greater_than``).
        transform: A name in :data:`~pyroflows.flows.families.FAMILIES` (``"radial"``, ``"spline"``,
            ``"autoregressive"``); by default :func:`~pyroflows.flows.families.default_transform` (spline on an
            interval, autoregressive on a box).
        num_layers: Number of flow layers (default 16 radial, 1 spline, 2 autoregressive).
        base: ``"logistic"`` (default: a finite density at the bounds before the tail layer adjusts it) or
            ``"normal"`` (density forced to 0 at the bounds).
        count_bins: Spline bins (spline and autoregressive).
        bound: Half-width of the spline's interval in logit space.
        hidden_dims: Hidden sizes of the autoregressive networks (default ``[8 * dim, 8 * dim]``).
        tail_slopes: Include the :class:`TwoSlopeAffine` layer.
        order: Spline order, ``"linear"`` or ``"quadratic"``; by default quadratic when ``ends`` is not ``"fixed"``
            (the rational-quadratic spline with free ends), linear otherwise.
        ends: The whole-interval spline's end derivatives (:class:`~pyroflows.flows.SigmoidSpline`), a name in
            :data:`~pyroflows.flows.families.SPLINE_ENDS`: ``"data"`` (default for ``transform="spline"``, the
            spline family's ``default_ends`` in :data:`~pyroflows.flows.families.FAMILIES`: :func:`~pyroflows.flows.fit`
            chooses per bound from the training points nearest it, secant ends where the density's power-law
            exponent there is consistent with 1, free ends elsewhere; see :meth:`choose_bound_ends`; until then the
            flow has free ends), ``"free"`` (learned), ``"secant"`` (each end bin's mean slope, so the density at a
            bound is the end bin's mean density: best when the density is flat near the bounds), ``"auto"``
            (:func:`~pyroflows.flows.fit` fits free and secant ends on the same split and keeps the one with the lower
            held-out NLL; until then the flow has free ends) or ``"fixed"`` (Pyro's 0.999, the only choice for the
            other transforms).
        bound_ends: With ``ends="data"``: the ends chosen at each bound, one ``(lower, upper)`` pair of ``"free"`` /
            ``"secant"`` per dimension (what :func:`~pyroflows.flows.fit` sets and a saved flow keeps), or None
            (default) for free ends until a fit chooses.
        tail_prior: Scale :math:`b` of a Laplace prior on the log tail slopes, added by :func:`fit` (MAP; see
            :meth:`log_prior`), or None for none. ``"auto"`` (default) gives the ends' scale
            (:data:`TAIL_PRIOR_BY_ENDS`): 0.1 with free ends, 0.01 with secant ends, none with fixed ends (with
            ``ends="auto"``, that of the ends the flow has; with ``ends="data"``, each bound's ends' own). The
            spline's ends already set a finite density at each bound, so the slopes should move only for a density
            that truly vanishes or diverges there.
        dtype: Parameter dtype; float64 (default) keeps accuracy near the bounds, inputs of any float dtype work.
        name: Pyro name prefix of the parameters; unique by default so two flows never share parameters.
        scale: For a one-sided support (``low=-inf`` or ``high=inf``), the typical distance of the data from the
            finite bound (see :class:`~pyroflows.flows.HalfLineSquashTransform`); unused on an interval or a box.

    Raises:
        DataError: bad bounds (not finite, ``low >= high``), an unknown ``transform`` or ``base`` (checked by
            :data:`~pyroflows.flows.families.FAMILIES` / :data:`~pyroflows.flows.families.BASES`, whose names and
            help texts are the choices), or a family used below its dimension (``"autoregressive"`` with
            ``dim == 1``), unknown ``ends`` (checked by :data:`~pyroflows.flows.families.SPLINE_ENDS`) or ends other
            than ``"fixed"`` for a transform other than ``"spline"``. :class:`~pyroflows.errors.DataError` is a
            ``ValueError``.

    Example:
        >>> flow = CompactFlow(1.0, 2.5, num_layers=2)
        >>> d = flow()
        >>> d.support  # doctest: +NORMALIZE_WHITESPACE
        IndependentConstraint(Interval(lower_bound=tensor([1.], dtype=torch.float64),
                                       upper_bound=tensor([2.5000], dtype=torch.float64)), 1)
        >>> d.sample((3,)).shape
        torch.Size([3, 1])
    """

    #: :func:`~pyroflows.flows.fit`'s default budget (optimiser steps) for this class, read through
    #: :meth:`default_budget` by ``fit`` and by ``pyroflows flow fit``.
    default_fit_steps: ClassVar[int] = 2000

    def default_budget(self) -> int:
        """:func:`~pyroflows.flows.fit`'s default number of steps for this flow: :attr:`default_fit_steps`."""
        return self.default_fit_steps

    def __init__(
        self,
        low: float | Sequence[float] | torch.Tensor,
        high: float | Sequence[float] | torch.Tensor,
        *,
        transform: str | None = None,
        num_layers: int | None = None,
        base: str = "logistic",
        count_bins: int = 8,
        bound: float = 8.0,
        hidden_dims: Sequence[int] | None = None,
        tail_slopes: bool = True,
        order: str | None = None,
        ends: str | None = None,
        bound_ends: Sequence[Sequence[str]] | None = None,
        tail_prior: float | None | str = "auto",
        dtype: torch.dtype = torch.float64,
        name: str | None = None,
        scale: float = 1.0,
    ) -> None:
        super().__init__(name or ("compact_flow" if (n := next(_names)) == 0 else f"compact_flow_{n}"))
        # Infinite bounds (one-sided supports) get the half-line squash; see pyroflows.flows.half_line.
        squash = make_squash(*bound_tensors(low, high), scale=scale)
        dim = squash.low.numel()
        transform = default_transform(dim) if transform is None else transform
        family = family_for(transform, dim)
        BASES.get(base)
        # A spline whose end derivatives are free or secant sets the density at each bound itself; its tail slopes
        # then only need to move for a density that truly vanishes or diverges there, hence the prior by default.
        if ends is not None and ends != "fixed" and family.default_ends == "fixed":
            raise DataError(f"ends: {ends!r} needs transform='spline'; {transform!r} layers have Pyro's fixed ends")
        ends = family.default_ends if ends is None else ends
        SPLINE_ENDS.get(ends)
        order = ("quadratic" if ends != "fixed" else "linear") if order is None else order
        num_layers = family.default_layers if num_layers is None else check_int(num_layers, "num_layers", low=0)
        hidden = list(hidden_dims) if hidden_dims is not None else [8 * dim, 8 * dim]
        rule = SPLINE_ENDS.get(ends).factory
        choosing = bool(rule.candidates or rule.per_bound)
        self._config: dict[str, Any] = {
            "low": squash.low.tolist(),
            "high": squash.high.tolist(),
            "transform": transform,
            "num_layers": num_layers,
            "base": base,
            "count_bins": int(count_bins),
            "bound": float(bound),
            "hidden_dims": hidden,
            "tail_slopes": bool(tail_slopes),
            "order": order,
            "ends": ends,
            "bound_ends": _check_bound_ends(bound_ends, ends, dim),
            # ends="auto" / "data" keep an automatic prior unresolved: it is the prior of the ends fit chooses.
            "tail_prior": "auto" if choosing and tail_prior == "auto" else _tail_prior(tail_prior, ends),
            "dtype": str(dtype).removeprefix("torch."),
            "scale": float(scale),
        }
        self.dim = dim
        self.register_buffer("low", squash.low.to(dtype))
        self.register_buffer("high", squash.high.to(dtype))
        self._dtype = dtype
        self._build_layers()

    def _build_layers(self) -> None:
        """The tail layer, then the family's stack (permutations between its layers included), base to data."""
        c = self._config
        options = LayerOptions(
            count_bins=c["count_bins"], bound=c["bound"], hidden_dims=c["hidden_dims"], order=c["order"],
            ends=self.layer_ends,
        )  # fmt: skip
        self._stack: Stack = [TwoSlopeAffine(self.dim)] if c["tail_slopes"] else []
        self._stack += FAMILIES.get(c["transform"]).factory(self.dim, c["num_layers"], options)
        # A plain nn.ModuleList: PyroModule issues a pyro.module statement for it whenever forward() touches it, so
        # every layer's parameters are registered (and trained by SVI) without converting Pyro's transforms.
        self.layers = nn.ModuleList(modules_of(self._stack)).to(self._dtype)

    @property
    def layer_ends(self) -> str | list[list[str]]:
        """The spline ends the layers have: ``config["ends"]`` or a choice's (``"auto"``: the first candidate).

        For a choice per bound (``ends="data"``) each dimension's ``[lower, upper]`` ends.

        Example:
            >>> CompactFlow(0.0, 1.0, ends="auto").layer_ends, CompactFlow(0.0, 1.0, ends="data").layer_ends
            ('free', [['free', 'free']])
        """
        rule = SPLINE_ENDS.get(self._config["ends"]).factory
        if rule.per_bound:
            chosen = self._config.get("bound_ends")
            return [list(p) for p in chosen] if chosen else [[rule.per_bound[-1]] * 2 for _ in range(self.dim)]
        return rule.candidates[0] if rule.candidates else self._config["ends"]

    def choose_bound_ends(self, x: torch.Tensor) -> list[tuple[BoundExponent, BoundExponent]]:
        r"""Choose each bound's spline ends from the points ``x`` (``ends="data"``; :func:`fit` calls it).

        At each bound the exponent :math:`a` of :math:`P(\text{distance} \le t) \approx c\,t^a` is estimated from
        the points nearest it (:func:`~pyroflows.flows.bound_exponent.bound_exponents`, Hill's estimator on
        :math:`\lceil n^{2/3} \rceil` points). Where it is consistent with 1 (a finite, non-zero density at the bound)
        the bound gets secant ends and their strong tail prior (0.01), which hold the density there at the end bin's
        mean; elsewhere free ends and the weak prior (0.1), which let it vanish or diverge. The choice goes into
        ``config["bound_ends"]`` and the spline layers, in place (parameters kept), so a saved flow reloads as
        chosen.

        Args:
            x: Checked points, shape ``(n, dim)`` (the training split in :func:`fit`).

        Returns:
            Each dimension's ``(lower, upper)`` estimates.

        Example:
            >>> flow = CompactFlow(0.0, 1.0, ends="data")
            >>> u = torch.rand(2000, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
            >>> _ = flow.choose_bound_ends(u ** 0.5)  # density 2u: vanishes at 0, flat at 1
            >>> flow.config["bound_ends"], flow.layers[1].bound_ends
            ([['free', 'secant']], [['free', 'secant']])
        """
        rule = SPLINE_ENDS.get(self._config["ends"]).factory
        if not rule.per_bound:
            raise DataError(f"choose_bound_ends: ends={self._config['ends']!r} is not chosen per bound; use 'data'")
        flat, other = rule.per_bound
        estimates = bound_exponents(x, self.low, self.high)
        chosen = [[flat if e.flat else other for e in pair] for pair in estimates]
        self._config["bound_ends"] = chosen
        for layer in self.layers:
            if isinstance(layer, SigmoidSpline):
                layer.set_bound_ends(chosen)
        return estimates

    def _adopt_ends(self, other: CompactFlow) -> None:
        """Become ``other``, a flow with the same config but concrete ``ends`` (how :func:`fit` settles ``"auto"``).

        The layers are rebuilt with ``other``'s ends and take its parameters; the parameter store forgets this flow's
        old layers (a stale entry would shadow a new parameter of the same name).
        """
        store = pyro.get_param_store()
        for key in [k for k in store.keys() if k.startswith(f"{self._pyro_name}.")]:
            del store[key]
        self._config = other.config
        self._build_layers()
        self.layers.to(device=self.low.device)
        self.load_state_dict(other.state_dict())

    @property
    def config(self) -> dict[str, Any]:
        """The constructor arguments as plain values (what :meth:`save` writes and :meth:`from_config` reads)."""
        return dict(self._config)

    def log_prior(self) -> torch.Tensor:
        r"""Log-density of the tail slopes under the flow's ``tail_prior`` (0 without one); :func:`fit` adds it.

        The prior is Laplace with scale :math:`b` = ``tail_prior`` on each log tail slope :math:`\ell_\pm`:
        :math:`\log p = -\sum |\ell_\pm| / b` (up to a constant). Its kink at :math:`\ell = 0` holds a slope at
        exactly 1 (a finite, non-zero density at that bound, set by the spline's end derivative) unless the data pull
        on it by more than :math:`1/b` nats per unit of :math:`\ell`, as a density that truly vanishes or diverges
        at the bound does.

        Example:
            >>> CompactFlow(0.0, 1.0, tail_prior=0.1).log_prior().item() == 0.0  # slopes start at 1
            True
        """
        zero = torch.zeros((), dtype=self.low.dtype, device=self.low.device)
        tails = self.layers[0] if self._config["tail_slopes"] and len(self.layers) else None
        if not isinstance(tails, TwoSlopeAffine):
            return zero
        scale = self._config.get("tail_prior")
        ends = self.layer_ends
        if scale == "auto" and not isinstance(ends, str):  # per bound: each bound's ends' prior
            lower, upper = ([_tail_prior("auto", pair[side]) for pair in ends] for side in (0, 1))
            return -sum(
                ((slopes.abs() / torch.tensor(scales, dtype=slopes.dtype, device=slopes.device)).sum()
                 for slopes, scales in ((tails.log_slope_lower, lower), (tails.log_slope_upper, upper))),
                zero,
            )  # fmt: skip
        if scale == "auto":
            assert isinstance(ends, str)
            scale = _tail_prior("auto", ends)
        if scale is None:
            return zero
        return -(tails.log_slope_lower.abs().sum() + tails.log_slope_upper.abs().sum()) / scale

    def freeze(self) -> CompactFlow:
        """Fix the flow's current density: its parameters become buffers.

        SVI, Pyro's parameter store and torch optimisers then no longer see or change them. Use it to make a fitted flow
        a fixed prior in another model.

        The state dict keeps the same keys and values (``save`` / ``load`` work; a loaded flow is not frozen).
        :func:`~pyroflows.flows.fit` refuses a frozen flow.

        Returns:
            The flow itself.

        Example:
            >>> flow = CompactFlow(0.0, 1.0, num_layers=2).freeze()
            >>> flow.frozen, len(list(flow.parameters()))
            (True, 0)
        """
        freeze_parameters(self.layers)
        self._frozen = True
        return self

    def center_at(self, loc: torch.Tensor | Sequence[float]) -> CompactFlow:
        """Shift the tail layer so the base distribution's median (the origin) maps to ``loc``.

        Every later layer is inverted at ``squash^{-1}(loc)`` and the :class:`~pyroflows.flows.TwoSlopeAffine`
        shift set to reach that point; with elementwise layers each coordinate's median is then exactly ``loc``
        (monotone maps carry medians). :class:`~pyroflows.flows.AutoCompactFlow` uses it for ``init_loc_fn``.

        Args:
            loc: A point inside the bounds, ``dim`` values.

        Returns:
            The flow itself.

        Raises:
            DataError: the flow has no tail layer, or ``loc`` has the wrong size or is not inside the bounds.

        Example:
            >>> flow = CompactFlow(0.0, 1.0, num_layers=1).center_at([0.2])
            >>> d = flow()
            >>> x = torch.zeros(1, 1, dtype=torch.float64)
            >>> for t in d.transforms:
            ...     x = t(x)
            >>> round(x.item(), 12)
            0.2
        """
        tails = self.layers[0]
        if not (self._config["tail_slopes"] and isinstance(tails, TwoSlopeAffine)):
            raise DataError("center_at: the flow has no tail layer (tail_slopes=False) to shift")
        point = torch.as_tensor(loc, dtype=self.low.dtype, device=self.low.device).reshape(-1)
        if point.numel() != self.dim or not bool(((point > self.low) & (point < self.high)).all()):
            raise DataError(f"center_at: expected {self.dim} value(s) strictly inside the bounds, got {point.tolist()}")
        with torch.no_grad():
            z = self.squash.inv(point[None])
            for t in reversed(self._stack[1:]):
                assert isinstance(t, dist.transforms.Transform)  # an unconditional stack holds transforms only
                z = t.inv(z)
            _, d = tails._coefficients()
            tails.shift.copy_(z[0] - d)  # T(0) = m * 0 + d * sqrt(0 + 1) + shift
        return self

    @property
    def frozen(self) -> bool:
        """Whether :meth:`freeze` has been called (the flow has no trainable parameters left)."""
        return getattr(self, "_frozen", False)

    @property
    def squash(self) -> IntervalSquashTransform | HalfLineSquashTransform:
        """The squash onto this flow's bounds (a half-line squash when one bound is infinite)."""
        return make_squash(self.low, self.high, scale=self._config.get("scale", 1.0))

    def _base(self) -> dist.TorchDistribution:
        zeros = torch.zeros(self.dim, dtype=self.low.dtype, device=self.low.device)
        return BASES.build(self._config["base"], zeros, torch.ones_like(zeros)).to_event(1)

    def forward(self) -> BoundedTransformedDistribution:
        """A fresh distribution over :math:`[low, high]` built from the current parameters."""
        list(self.layers)  # touching self.layers inside forward registers its parameters with Pyro
        d = BoundedTransformedDistribution(self._base(), [*self._stack, self.squash])
        d.compute_dtype = self.low.dtype
        return d

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """Shortcut for ``self().log_prob(value)``; ``value`` has shape ``(..., dim)``."""
        return self().log_prob(value)

    def sample(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> torch.Tensor:
        """Draw samples of shape ``sample_shape + (dim,)`` (no gradient)."""
        with torch.no_grad():
            return self().sample(torch.Size(sample_shape))

    @classmethod
    def from_config(cls, config: dict[str, Any], **kwargs: Any) -> CompactFlow:
        """Rebuild an (untrained) flow from :attr:`config`.

        Files written before ``ends``, ``tail_prior`` and ``order`` existed get the values those flows had.
        """
        config = dict(config)
        config.setdefault("ends", "fixed")  # checkpoints written before these options existed
        config.setdefault("tail_prior", None)
        config.setdefault("order", "linear")
        config["dtype"] = getattr(torch, config.get("dtype", "float64"))
        return cls(config.pop("low"), config.pop("high"), **config, **kwargs)


def freeze_parameters(*modules: nn.Module) -> None:
    """Turn every parameter of ``modules`` (and their children) into a buffer of the same name and value.

    Example:
        >>> layer = torch.nn.Linear(2, 1)
        >>> freeze_parameters(layer)
        >>> len(list(layer.parameters())), sorted(layer.state_dict())
        (0, ['bias', 'weight'])
    """
    for root in modules:
        for module in root.modules():
            for name, param in list(module._parameters.items()):
                if param is not None:
                    del module._parameters[name]
                    module.register_buffer(name, param.detach().clone())


def _check_bound_ends(bound_ends: Sequence[Sequence[str]] | None, ends: str, dim: int) -> list[list[str]] | None:
    """``bound_ends`` as plain lists: None, or with per-bound ``ends`` one ``(lower, upper)`` pair per dimension."""
    if bound_ends is None:
        return None
    allowed = SPLINE_ENDS.get(ends).factory.per_bound
    if not allowed:
        raise DataError(f"bound_ends: given for ends={ends!r}; only ends chosen per bound ('data') take them")
    return check_bound_ends(bound_ends, dim, "bound_ends", allowed)


def _tail_prior(tail_prior: float | None | str, ends: str) -> float | None:
    """The Laplace scale of the tail-slope prior: ``"auto"`` is :data:`TAIL_PRIOR_BY_ENDS`'s (None for fixed ends)."""
    if tail_prior == "auto":
        return TAIL_PRIOR_BY_ENDS.get(ends)
    if tail_prior is None:
        return None
    if not (isinstance(tail_prior, (int, float)) and math.isfinite(tail_prior) and tail_prior > 0):
        raise DataError(f"tail_prior must be a positive number, None or 'auto', got {tail_prior!r}")
    return float(tail_prior)
