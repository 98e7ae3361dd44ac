"""The flow layer families and base distributions of the compact flows: one registry each.

:data:`FAMILIES` holds, per layer family (``--transform`` on the command line), a :class:`FlowFamily`: the factory
that builds ``num_layers`` layers *in the order they run* (permutations between layers included, so a flow never
dispatches on the family's name), the factory of its conditional version for
:class:`~pyroflows.flows.ConditionalCompactFlow` (or ``None``), the default number of layers and the smallest
dimension it works in. :class:`~pyroflows.flows.CompactFlow`, :class:`~pyroflows.flows.ConditionalCompactFlow`,
:class:`~pyroflows.flows.AutoCompactFlow`, the CLI's ``choices``/``--help`` and the property suite
``tests/flows/test_transforms.py`` all read it. :func:`default_transform` is the one home of the default rule.

Adding a family is one new file (the ``TransformModule`` and a factory) plus one :meth:`FAMILIES.register
<pyroflows.registry.Registry.register>` line (here, with its import), for example::

    FAMILIES.register("planar", FlowFamily(layers=planar_layers, default_layers=8), "invertible planar flows")

Example:
    >>> FAMILIES.names()
    ('radial', 'spline', 'autoregressive')
    >>> stack = FAMILIES.build("autoregressive", 2, 2, LayerOptions(count_bins=4, hidden_dims=(4,)))
    >>> [type(t).__name__ for t in stack]
    ['SplineAutoregressive', 'Permute', 'SplineAutoregressive']
    >>> family_for("autoregressive", dim=1)
    Traceback (most recent call last):
    ...
    pyroflows.errors.DataError: transform: 'autoregressive' needs dim > 1 (data with 2 or more columns); use radial \
or spline for an interval
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pyro.distributions as dist
import pyro.distributions.transforms as T
import torch
from torch import nn
from torch.distributions import Transform

from pyroflows.errors import DataError
from pyroflows.flows.radial import Radial
from pyroflows.flows.sigmoid_spline import SigmoidSpline
from pyroflows.registry import Registry

__all__ = [
    "FAMILIES",
    "BASES",
    "SPLINE_ENDS",
    "SplineEnds",
    "FlowFamily",
    "LayerOptions",
    "Stack",
    "DEFAULT_TRANSFORM_RULE",
    "default_transform",
    "family_for",
    "modules_of",
]

#: Layers in the order they run, base to data: modules (trained and saved) and parameter-free transforms between them.
Stack = list[nn.Module | Transform]

#: The default rule of :func:`default_transform`, as ``--help`` states it.
DEFAULT_TRANSFORM_RULE = "spline for one dimension (column), autoregressive for several"


@dataclass(frozen=True)
class LayerOptions:
    """The settings a family's factory may read (each family reads the ones it has).

    Attributes:
        count_bins: Spline bins (spline and autoregressive).
        bound: Half-width in logit space of Pyro's autoregressive splines.
        hidden_dims: Hidden sizes of the unconditional autoregressive networks (``None``: ``[8 * dim, 8 * dim]``).
        order: Spline order, ``"linear"`` or ``"quadratic"``.
        ends: The whole-interval spline's end derivatives (:class:`~pyroflows.flows.SigmoidSpline`): a name, or a
            ``(lower, upper)`` pair of ``"free"`` / ``"secant"`` per dimension.
    """

    count_bins: int = 8
    bound: float = 8.0
    hidden_dims: Sequence[int] | None = None
    order: str = "linear"
    ends: str | Sequence[Sequence[str]] = "fixed"


@dataclass(frozen=True)
class FlowFamily:
    r"""One layer family: its factories, default size and limits.

    Attributes:
        layers: ``layers(dim, num_layers, options) -> Stack``: the unconditional layers in run order.
        default_layers: ``num_layers`` when none is given (unconditional flow).
        conditional: ``conditional(dim, num_layers, features, options) -> Stack``: layers whose parameters come from
            ``features`` context features (``ConditionalTransformModule``\ s, parameter-free transforms between
            them), or ``None`` when the family has no conditional version.
        conditional_default_layers: ``num_layers`` of the conditional flow when none is given.
        min_dim: The smallest dimension the family works in.
        default_ends: The spline ends :class:`~pyroflows.flows.CompactFlow` uses when none are given.
    """

    layers: Callable[[int, int, LayerOptions], Stack]
    default_layers: int
    conditional: Callable[[int, int, int, LayerOptions], Stack] | None = None
    conditional_default_layers: int | None = None
    min_dim: int = 1
    default_ends: str = "fixed"

    def __call__(self, dim: int, num_layers: int, options: LayerOptions | None = None) -> Stack:
        """The unconditional stack (what :meth:`Registry.build <pyroflows.registry.Registry.build>` calls)."""
        return self.layers(dim, num_layers, options or LayerOptions())


def _reversed_between(make: Callable[[], nn.Module], dim: int, num_layers: int) -> Stack:
    """``num_layers`` layers with the order of the dimensions reversed between consecutive ones.

    So each autoregressive layer conditions on the coordinates the previous one could not.
    """
    reverse = T.Permute(torch.arange(dim - 1, -1, -1))
    stack: Stack = []
    for i in range(num_layers):
        stack += [reverse, make()] if i else [make()]
    return stack


def _radial(dim: int, num_layers: int, o: LayerOptions) -> Stack:
    return [Radial(dim) for _ in range(num_layers)]


def _spline(dim: int, num_layers: int, o: LayerOptions) -> Stack:
    return [SigmoidSpline(dim, count_bins=o.count_bins, order=o.order, ends=o.ends) for _ in range(num_layers)]


def _autoregressive(dim: int, num_layers: int, o: LayerOptions) -> Stack:
    hidden = list(o.hidden_dims) if o.hidden_dims is not None else [8 * dim, 8 * dim]
    return _reversed_between(
        lambda: T.spline_autoregressive(dim, hidden_dims=hidden, count_bins=o.count_bins, bound=o.bound),
        dim,
        num_layers,
    )


def _conditional_radial(dim: int, num_layers: int, features: int, o: LayerOptions) -> Stack:
    from pyroflows.flows.conditional import ConditionalLayer

    return [ConditionalLayer("radial", dim, features) for _ in range(num_layers)]


def _conditional_spline(dim: int, num_layers: int, features: int, o: LayerOptions) -> Stack:
    from pyroflows.flows.conditional import ConditionalLayer

    return [
        ConditionalLayer("spline", dim, features, count_bins=o.count_bins, order=o.order) for _ in range(num_layers)
    ]


def _conditional_autoregressive(dim: int, num_layers: int, features: int, o: LayerOptions) -> Stack:
    return _reversed_between(
        lambda: T.conditional_spline_autoregressive(
            dim, context_dim=features, hidden_dims=[8 * dim, 8 * dim], count_bins=o.count_bins, bound=o.bound
        ),
        dim,
        num_layers,
    )


@dataclass(frozen=True)
class SplineEnds:
    """One choice of the whole-interval spline's end derivatives (``ends``), hence of the density at each bound.

    Attributes:
        tail_prior: The Laplace scale of the tail-slope prior that ``tail_prior="auto"`` gives with these ends
            (:meth:`CompactFlow.log_prior <pyroflows.flows.CompactFlow.log_prior>`), or None for none.
        candidates: Empty for ends a :class:`~pyroflows.flows.SigmoidSpline` has; for a choice that
            :func:`~pyroflows.flows.fit` makes, the ends it fits on the same split and minibatches, keeping the one
            with the lowest held-out NLL (a flow built with it has the first candidate's layers until then).
        per_bound: Empty, or for a choice :func:`~pyroflows.flows.fit` makes at each bound from the training points
            nearest it (:mod:`~pyroflows.flows.bound_exponent`): ``(flat, other)``, the ends of a bound whose
            estimated exponent is consistent with 1 (a finite, non-zero density there) and of any other bound; each
            bound then gets its ends' tail prior (a flow built with it has ``other`` ends until then).
    """

    tail_prior: float | None = None
    candidates: tuple[str, ...] = ()
    per_bound: tuple[str, ...] = ()

    def __call__(self) -> float | None:
        """The tail-prior scale ``tail_prior="auto"`` gives with these ends (what ``SPLINE_ENDS.build(name)`` is).

        Example:
            >>> SPLINE_ENDS.build("secant"), SPLINE_ENDS.build("fixed")
            (0.01, None)
        """
        return self.tail_prior


#: The spline's ``ends`` (``--ends`` on the command line): :class:`~pyroflows.flows.CompactFlow`, :func:`fit
#: <pyroflows.flows.fit>`, the CLI's choices and help and the README read it. The tail priors were measured in
#: ``benchmarks/flows.py``: with free ends 0.01 doubled the edge-peaked KL, hence 0.1; with secant ends 0.01 holds the
#: slopes at 1 on the post's piecewise-uniform target (the density within 16% of the truth over the last 0.1% of the
#: interval on 15 of 15 runs, where 0.03 and 0.1 let it fall to 0.77 and 0.57 on one draw), at the cost of densities
#: that vanish or diverge at a bound (the "secant spline ends" sections of ``benchmarks/RESULTS.md``). ``"data"``
#: takes each where it is right, bound by bound (the "spline ends chosen per bound" sections).
SPLINE_ENDS: Registry[SplineEnds] = Registry("ends")
SPLINE_ENDS.register(
    "free",
    SplineEnds(tail_prior=0.1),
    "learned end derivatives: the density at each bound is learned (tail prior 0.1)",
)
SPLINE_ENDS.register(
    "secant",
    SplineEnds(tail_prior=0.01),
    "each end derivative is its end bin's mean slope, so the density at a bound is the end bin's mean density: "
    "best when the density is flat near the bounds (tail prior 0.01)",
)
SPLINE_ENDS.register(
    "auto",
    SplineEnds(candidates=("free", "secant")),
    "fit chooses: free and secant ends fitted on the same split, the lower held-out NLL kept (twice the fit time)",
)
SPLINE_ENDS.register(
    "data",
    SplineEnds(per_bound=("secant", "free")),
    "fit chooses per bound from the training points nearest it: secant ends (tail prior 0.01) where the density's "
    "estimated power-law exponent there is consistent with 1 (finite and non-zero at the bound), free ends (tail "
    "prior 0.1) elsewhere",
    default=True,
)
SPLINE_ENDS.register("fixed", SplineEnds(), "Pyro's end derivatives, 0.999 (the only ends of the other transforms)")


FAMILIES: Registry[FlowFamily] = Registry("transform")
FAMILIES.register(
    "radial",
    FlowFamily(_radial, default_layers=16, conditional=_conditional_radial, conditional_default_layers=8),
    "invertible radial flows in logit space (the source post's design), 16 layers by default",
)
FAMILIES.register(
    "spline",
    FlowFamily(
        _spline,
        default_layers=1,
        conditional=_conditional_spline,
        conditional_default_layers=2,
        default_ends=SPLINE_ENDS.default,
    ),
    "a monotone spline over the whole interval whose end derivatives set the density at each bound, 1 layer",
    default=True,
)
FAMILIES.register(
    "autoregressive",
    FlowFamily(
        _autoregressive,
        default_layers=2,
        conditional=_conditional_autoregressive,
        conditional_default_layers=2,
        min_dim=2,
    ),
    "Pyro's autoregressive splines with reversed orderings between them (dim > 1), 2 layers",
)


def default_transform(dim: int, *, guide: bool = False) -> str:
    """The layer family used when none is named: ``"spline"`` for one dimension, ``"autoregressive"`` otherwise.

    :class:`~pyroflows.flows.CompactFlow`, :class:`~pyroflows.flows.ConditionalCompactFlow` and ``pyroflows flow
    fit`` call this; :class:`~pyroflows.flows.AutoCompactFlow` calls it with ``guide=True``, which gives ``"spline"``
    whatever the dimension (the guide was measured with it, on the Beta-Binomial posterior of ``benchmarks/flows.py``).

    Chosen by held-out KL (``benchmarks/flows.py``): on the piecewise-uniform target an 8-bin whole-interval spline
    after the tail layer averaged 0.0045 nats over three seeds against 0.0054 for 16 radial layers (the source post's
    design), in about half the time; both were within 0.01 on the other interval targets. The spline's defaults
    (rational-quadratic, each bound's end derivative and tail prior chosen from the data near it: ``ends="data"``)
    are measured over data draws and seeds in the benchmark's "draws and seeds" section (free and secant ends alone
    in the sections of the earlier defaults and of the "secant spline ends").
    Elementwise layers (and a single radial centre) cannot express the dependence between the coordinates of a box,
    which autoregressive splines can.

    Example:
        >>> default_transform(1), default_transform(2), default_transform(2, guide=True)
        ('spline', 'autoregressive', 'spline')
    """
    return "spline" if dim == 1 or guide else "autoregressive"


def family_for(name: str, dim: int, *, conditional: bool = False) -> FlowFamily:
    """The family ``name`` after the one check of the name, the dimension and (if asked) a conditional version.

    Raises:
        DataError: an unknown name (listing the choices), a dimension below the family's ``min_dim``, or no
            conditional version.

    Example:
        >>> family_for("spline", 1).default_layers
        1
    """
    family = FAMILIES.get(name).factory
    if dim < family.min_dim:
        others = " or ".join(n for n in FAMILIES if FAMILIES.get(n).factory.min_dim <= dim)
        raise DataError(
            f"transform: {name!r} needs dim > {family.min_dim - 1} (data with {family.min_dim} or more columns); "
            f"use {others} for an interval"
        )
    if conditional and family.conditional is None:
        with_one = ", ".join(n for n in FAMILIES if FAMILIES.get(n).factory.conditional is not None)
        raise DataError(f"transform: {name!r} has no conditional version; ConditionalCompactFlow takes {with_one}")
    return family


def modules_of(stack: Stack) -> list[nn.Module]:
    """The trainable modules of a stack, in order (what a flow keeps in its ``layers`` ``ModuleList``)."""
    return [t for t in stack if isinstance(t, nn.Module)]


BASES: Registry[Callable[[torch.Tensor, torch.Tensor], dist.TorchDistribution]] = Registry("base")
BASES.register(
    "logistic",
    dist.Logistic,
    "a finite density at the bounds before the tail layer adjusts it",
    default=True,
)
BASES.register("normal", dist.Normal, "density forced to 0 at the bounds")
