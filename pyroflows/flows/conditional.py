r"""``ConditionalCompactFlow``: a learned conditional density :math:`p(y \mid x)` on an interval, a box or a half-line.

The conditional sibling of :class:`~pyroflows.flows.CompactFlow`, built from the same layer families, tail layer and
squash: base :math:`\to` :class:`~pyroflows.flows.TwoSlopeAffine` :math:`\to` flow layers :math:`\to` squash onto
the bounds, where every layer's parameters are an affine function (a "head") of features computed from the context
by a small MLP (the "trunk"),

.. math:: h = \mathrm{MLP}\big((x - \mu_x) / \sigma_x\big), \qquad \theta_\ell(x) = W_\ell h + b_\ell .

Each head outputs exactly the raw parameters the unconditional layer holds, and the conditioned layer runs the
unconditional layer's own code on them, so with :math:`W_\ell = 0` the flow *is* a ``CompactFlow`` (the heads start
that way, at the unconditional flow's initialisation). Because the tail layer is conditioned too, the power law of the
density at each bound, :math:`p(y \mid x) \propto (y - low)^{a(x) - 1}`, moves with the context.

``flow.condition(context)`` (or ``flow(context)``) returns a
:class:`~pyroflows.flows.BoundedTransformedDistribution` with batch shape ``context.shape[:-1]``, event shape
``(dim,)`` and ``support`` the bounded set, usable as ``pyro.sample("y", flow.condition(x), obs=y)`` inside a plate.
| Neural Spline Flows (Durkan et al., 2019); Pyro's ``ConditionalTransformModule`` and ``conditional_spline``.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from pyro.distributions.conditional import ConditionalTransform, ConditionalTransformModule
from pyro.distributions.transforms.spline import ConditionedSpline
from pyro.nn import PyroModule
from torch import nn
from torch.distributions import Transform, constraints

from pyroflows.errors import DataError
from pyroflows.flows.compact import BoundedTransformedDistribution, freeze_parameters
from pyroflows.flows.families import BASES, FAMILIES, LayerOptions, Stack, default_transform, family_for, modules_of
from pyroflows.flows.half_line import HalfLineSquashTransform, bound_tensors, make_squash
from pyroflows.flows.radial import Radial
from pyroflows.flows.sigmoid_spline import SigmoidSpline
from pyroflows.flows.squash import IntervalSquashTransform
from pyroflows.flows.two_slope_affine import TwoSlopeAffine
from pyroflows.serialization import Checkpointable
from pyroflows.validation import as_finite_2d, check_int

__all__ = [
    "ConditionalCompactFlow",
    "ConditionalLayer",
    "ConditionedTwoSlopeAffine",
    "ConditionedRadial",
    "ConditionedSigmoidSpline",
    "check_context",
    "CONDITIONAL_TRANSFORMS",
    "CONDITIONED",
]

#: The layer families (:data:`pyroflows.flows.families.FAMILIES`); a family whose ``conditional`` factory is ``None``
#: is refused by :class:`ConditionalCompactFlow` with a clear error.
CONDITIONAL_TRANSFORMS = FAMILIES
_names = itertools.count()


class _Elementwise(Transform):
    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True
    sign = 1


class ConditionedTwoSlopeAffine(_Elementwise):
    """:class:`~pyroflows.flows.TwoSlopeAffine` with given (batched) parameters; the same code computes it.

    Args:
        log_slope_lower: Shape ``batch + (dim,)``.
        log_slope_upper: Same shape.
        shift: Same shape.
    """

    def __init__(self, log_slope_lower: torch.Tensor, log_slope_upper: torch.Tensor, shift: torch.Tensor) -> None:
        super().__init__(cache_size=1)
        self.log_slope_lower, self.log_slope_upper, self.shift = log_slope_lower, log_slope_upper, shift

    _coefficients = TwoSlopeAffine._coefficients
    _call = TwoSlopeAffine._call
    _inverse = TwoSlopeAffine._inverse
    log_abs_det_jacobian = TwoSlopeAffine.log_abs_det_jacobian


class ConditionedRadial(_Elementwise):
    """:class:`~pyroflows.flows.Radial` with given (batched) parameters; the same code computes it.

    Args:
        x0: Shape ``batch + (dim,)``.
        alpha_prime: Shape ``batch + (1,)``.
        beta_prime: Shape ``batch + (1,)``.
    """

    def __init__(self, x0: torch.Tensor, alpha_prime: torch.Tensor, beta_prime: torch.Tensor) -> None:
        super().__init__(cache_size=1)
        self.x0, self.alpha_prime, self.beta_prime = x0, alpha_prime, beta_prime
        self.input_dim = x0.shape[-1]

    _alpha_beta = Radial._alpha_beta
    _call = Radial._call
    _inverse = Radial._inverse
    log_abs_det_jacobian = Radial.log_abs_det_jacobian


class ConditionedSigmoidSpline(_Elementwise):
    """:class:`~pyroflows.flows.SigmoidSpline` with given (batched) raw spline parameters; the same code computes it.

    The raw parameters are normalised exactly as Pyro's ``Spline`` normalises its own (softmax widths and heights,
    softplus derivatives, sigmoid lambdas).

    Args:
        unnormalized_widths: Shape ``batch + (dim, bins)``.
        unnormalized_heights: Shape ``batch + (dim, bins)``.
        unnormalized_derivatives: Shape ``batch + (dim, bins - 1)``.
        unnormalized_lambdas: Shape ``batch + (dim, bins)`` for ``order="linear"``, else ``None``.
        order: ``"linear"`` or ``"quadratic"``.
    """

    def __init__(
        self,
        unnormalized_widths: torch.Tensor,
        unnormalized_heights: torch.Tensor,
        unnormalized_derivatives: torch.Tensor,
        unnormalized_lambdas: torch.Tensor | None = None,
        order: str = "linear",
    ) -> None:
        super().__init__(cache_size=1)
        params = (
            F.softmax(unnormalized_widths, dim=-1),
            F.softmax(unnormalized_heights, dim=-1),
            F.softplus(unnormalized_derivatives),
            torch.sigmoid(unnormalized_lambdas) if order == "linear" and unnormalized_lambdas is not None else None,
        )
        self.spline = ConditionedSpline(params, bound=1.0, order=order)
        self._param_dtype = unnormalized_widths.dtype

    def _as_param_dtype(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self._param_dtype)

    def _spline_op(self, z: torch.Tensor, inverse: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        # Pyro's end derivatives (SigmoidSpline's ends="fixed"): the conditional layers predict no end derivatives.
        return self.spline.spline_op(z, inverse=inverse)

    _clamp_open = staticmethod(SigmoidSpline._clamp_open)
    _call = SigmoidSpline._call
    _inverse = SigmoidSpline._inverse
    log_abs_det_jacobian = SigmoidSpline.log_abs_det_jacobian


#: The conditioned twin of each built-in layer class, and the constructor options it also takes.
CONDITIONED: dict[str, tuple[type[nn.Module], type[Transform], tuple[str, ...]]] = {
    "two_slope": (TwoSlopeAffine, ConditionedTwoSlopeAffine, ()),
    "radial": (Radial, ConditionedRadial, ()),
    "spline": (SigmoidSpline, ConditionedSigmoidSpline, ("order",)),
}


class ConditionalLayer(ConditionalTransformModule):
    """One layer of a family whose parameters are a linear function of context features.

    The head outputs the raw parameters of an unconditional layer of the same family (built once as a template: its
    parameter names, shapes and initial values). Its weights start at zero and its bias at the template's values, so
    at initialisation the layer is the unconditional layer, whatever the context.

    Args:
        family: A built-in name (``"two_slope"``, ``"radial"``, ``"spline"``: see :data:`CONDITIONED`), or a new
            family's ``(layer class, conditioned class, option names the conditioned class also takes)``; the
            conditioned class takes the layer's raw parameters, by name, as batched tensors.
        input_dim: Dimension of the flow.
        features: Size of the context features the head reads.
        **kwargs: Passed to the family's constructor (``count_bins``, ``order`` for splines).

    Example:
        >>> layer = ConditionalLayer("two_slope", 2, features=5).double()
        >>> t = layer.condition(torch.randn(3, 5, dtype=torch.float64))
        >>> x = torch.randn(3, 2, dtype=torch.float64)
        >>> torch.equal(t(x), x)  # the identity at initialisation
        True
    """

    def __init__(
        self,
        family: str | tuple[type[nn.Module], type[Transform], tuple[str, ...]],
        input_dim: int,
        features: int,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        if isinstance(family, str) and family not in CONDITIONED:
            raise DataError(f"family must be one of {sorted(CONDITIONED)}, got {family!r}")
        self._conditioned: Callable[..., Transform]  # a Conditioned* class, called with the raw parameters
        layer_class, self._conditioned, passed = CONDITIONED[family] if isinstance(family, str) else family
        template = layer_class(input_dim, **kwargs)
        named = list(template.named_parameters())
        self.family, self.input_dim, self.kwargs = family, input_dim, dict(kwargs)
        self._condition_kwargs = {k: v for k, v in kwargs.items() if k in passed}
        self._names = [name.rsplit(".", 1)[-1] for name, _ in named]
        self._shapes = [tuple(p.shape) for _, p in named]
        self.head = nn.Linear(features, sum(p.numel() for _, p in named))
        with torch.no_grad():
            self.head.weight.zero_()
            self.head.bias.copy_(torch.cat([p.detach().flatten() for _, p in named]))

    def parameters_for(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        """The raw layer parameters for each row of ``features`` (shape ``batch + (features,)``)."""
        out = self.head(features)
        batch = out.shape[:-1]
        sizes = [math.prod(s) for s in self._shapes]
        return {
            name: chunk.reshape(batch + shape)
            for name, chunk, shape in zip(self._names, out.split(sizes, dim=-1), self._shapes, strict=True)
        }

    def condition(self, context: torch.Tensor) -> Transform:
        """The layer for the given context features, as a transform batched over their leading dimensions."""
        return self._conditioned(**self.parameters_for(context), **self._condition_kwargs)


def check_context(
    flow: ConditionalCompactFlow, context: torch.Tensor | np.ndarray, *, rows: int | None = None, name: str = "context"
) -> torch.Tensor:
    """Validate a context for ``flow``.

    It must have shape ``(N, context_dim)`` (or ``(N,)`` when ``context_dim`` is 1), finite values, and ``rows`` rows
    when given.

    Returns:
        The context as an ``(N, context_dim)`` tensor in the flow's dtype and device.

    Raises:
        DataError: not numbers, the wrong number of columns or rows, or NaN/inf (naming the rows).

    Example:
        >>> flow = ConditionalCompactFlow(0.0, 1.0, context_dim=2)
        >>> check_context(flow, torch.zeros(4, 3))
        Traceback (most recent call last):
        ...
        pyroflows.errors.DataError: context: expected shape (N, 2) (one row of 2 features per data row), got (4, 3)
    """
    k = flow.context_dim
    shape = f"(N, {k}){' or (N,)' if k == 1 else ''} (one row of {k} feature{'s' if k != 1 else ''} per data row)"
    c = _as_real_tensor(context, name)
    if c.dim() == 1 and k != 1 or c.dim() == 2 and c.shape[1] != k or c.dim() not in (1, 2):
        raise DataError(f"{name}: expected shape {shape}, got {tuple(c.shape)}")
    if rows is not None and c.shape[0] != rows:
        raise DataError(f"{name}: has {c.shape[0]} row(s) but the data have {rows}; the rows must be aligned")
    return as_finite_2d(c, name, dim=k, dtype=flow.low.dtype, device=flow.low.device, allow_empty=True)


def _as_real_tensor(x: Any, name: str) -> torch.Tensor:
    """``x`` as a tensor of real numbers (bools count as 0/1), or a :class:`DataError` naming ``name``."""
    if not torch.is_tensor(x):
        array = np.asarray(x)
        if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_) or np.iscomplexobj(array):
            raise DataError(f"{name}: expected real numbers, got dtype {array.dtype}")
        x = torch.as_tensor(array)
    if x.is_complex():
        raise DataError(f"{name}: expected real numbers, got dtype {x.dtype}")
    return x.double() if x.dtype == torch.bool else x


class ConditionalCompactFlow(Checkpointable, PyroModule):
    r"""A conditional normalizing flow :math:`p(y \mid x)` whose support is :math:`[low, high]` for every context.

    Bounds as for :class:`~pyroflows.flows.CompactFlow`: numbers for an interval, one per dimension for a box, and
    ``low=-inf`` or ``high=inf`` for a half-line (support ``greater_than`` / ``less_than``).

    Layers (base to data): a conditional :class:`~pyroflows.flows.TwoSlopeAffine` (the power law at each bound, per
    context), ``num_layers`` conditional layers of ``transform``, the squash. For ``"spline"`` and ``"radial"`` the
    layers are those of :class:`~pyroflows.flows.SigmoidSpline` / :class:`~pyroflows.flows.Radial` with parameters
    from the context; ``"autoregressive"`` (for ``dim > 1``) uses Pyro's conditional autoregressive splines fed by
    the context features, with reversed orderings between them.

    The context is standardised with the mean and standard deviation of the first data it is fitted on
    (:meth:`set_context_scaling`; :func:`~pyroflows.flows.fit` calls it), stored with the model.

    Args:
        low: Lower bound(s).
        high: Upper bound(s).
        context_dim: Number of context features :math:`K`.
        transform: ``"spline"`` (default for an interval), ``"radial"`` or ``"autoregressive"`` (default for a box).
        num_layers: Number of conditional layers (default 2 spline, 8 radial, 2 autoregressive).
        hidden_dims: Hidden sizes of the context MLP (default ``[64, 64]``).
        base: ``"logistic"`` (default) or ``"normal"``.
        count_bins: Spline bins.
        bound: Half-width in logit space of the autoregressive splines.
        order: Spline order, ``"linear"`` or ``"quadratic"``.
        scale: Half-lines only: the typical distance of the data from the finite bound.
        weight_prior: Scale :math:`\sigma` of a Normal(0, :math:`\sigma`) prior on every weight matrix of the trunk,
            the heads and the autoregressive networks (biases, hence the unconditional flow at zero weights, are
            free), added by :func:`~pyroflows.flows.fit` (MAP; see :meth:`log_prior`), or None for none.
            ``"auto"`` (default) gives :attr:`default_weight_prior`.
        dropout: Dropout rate on the trunk's hidden features during :func:`~pyroflows.flows.fit`'s optimiser steps
            (:meth:`fit_dropout`); never when scoring or sampling, nor in a user's own SVI loop. ``"auto"``
            (default) gives :attr:`default_dropout`; 0 for none. In a process group each rank draws the masks of its
            share of the minibatch from its own generator, so a sharded fit then equals a one-process fit in
            distribution, not bit for bit.
        dtype: Parameter dtype (float64 by default).
        name: Pyro name prefix; unique by default.

    Raises:
        DataError: bad bounds, ``context_dim < 1``, an unknown ``transform`` or ``base`` (checked by
            :data:`~pyroflows.flows.families.FAMILIES` / ``BASES``), a family used below its dimension or without
            a conditional version. :class:`~pyroflows.errors.DataError` is a ``ValueError``.

    Example:
        >>> flow = ConditionalCompactFlow(0.0, 1.0, context_dim=2)
        >>> d = flow.condition(torch.randn(5, 2))
        >>> d.batch_shape, d.event_shape
        (torch.Size([5]), torch.Size([1]))
        >>> d.sample().shape
        torch.Size([5, 1])
    """

    #: :func:`~pyroflows.flows.fit`'s default budget (optimiser steps) for a conditional flow on an interval or a box,
    #: and on a half-line, read through :meth:`default_budget` by ``fit`` and ``pyroflows flow fit --context``. A
    #: half-line needs more: on the Gamma target of ``benchmarks/conditional_flows.py`` 2,000 steps gave KL 0.043 /
    #: 0.015 over two draws and 4,000 gave 0.014 / 0.016, while on the interval and box targets 4,000 steps were no
    #: better on average over two draws and overfitted the box (KL 0.083 / 0.069 against 0.049 / 0.069;
    #: benchmarks/RESULTS.md, "Conditional compact flows: the default budget and the goals").
    default_fit_steps: ClassVar[int] = 2000
    default_fit_steps_half_line: ClassVar[int] = 4000

    #: The scale of the weights' Normal prior that ``weight_prior="auto"`` gives (:meth:`log_prior`). Without one the
    #: conditioner overfits 4,500 training rows (on the box and mixture targets of
    #: ``benchmarks/conditional_flows.py`` the training rows' KL went below zero, -0.025, while the held-out KL was
    #: 0.03-0.05); shrinking the heads towards zero shrinks the flow towards the unconditional flow
    #: (benchmarks/RESULTS.md, "Conditional compact flows: a prior on the conditioner's weights").
    default_weight_prior: ClassVar[float] = 10**-0.5
    #: The trunk's dropout rate during :func:`~pyroflows.flows.fit` that ``dropout="auto"`` gives (with the prior
    #: above it lowered the KL on 8 of the 10 target draws of the benchmark; same section of benchmarks/RESULTS.md).
    default_dropout: ClassVar[float] = 0.1

    def default_budget(self) -> int:
        """:func:`~pyroflows.flows.fit`'s default number of steps for this flow (see :attr:`default_fit_steps`).

        Example:
            >>> ConditionalCompactFlow(0.0, 1.0, 2).default_budget()
            2000
            >>> ConditionalCompactFlow(0.0, float("inf"), 2).default_budget()
            4000
        """
        half_line = bool(torch.isinf(self.low).any() or torch.isinf(self.high).any())
        return self.default_fit_steps_half_line if half_line else self.default_fit_steps

    def __init__(
        self,
        low: float | Sequence[float] | torch.Tensor,
        high: float | Sequence[float] | torch.Tensor,
        context_dim: int,
        *,
        transform: str | None = None,
        num_layers: int | None = None,
        hidden_dims: Sequence[int] | None = None,
        base: str = "logistic",
        count_bins: int = 8,
        bound: float = 8.0,
        order: str = "linear",
        scale: float = 1.0,
        weight_prior: float | None | str = "auto",
        dropout: float | str = "auto",
        dtype: torch.dtype = torch.float64,
        name: str | None = None,
    ) -> None:
        super().__init__(name or ("conditional_flow" if (n := next(_names)) == 0 else f"conditional_flow_{n}"))
        squash = make_squash(*bound_tensors(low, high), scale=scale)
        dim = squash.low.numel()
        context_dim = check_int(context_dim, "context_dim", low=1)
        transform = default_transform(dim) if transform is None else transform
        family = family_for(transform, dim, conditional=True)
        BASES.get(base)
        num_layers = (
            family.conditional_default_layers if num_layers is None else check_int(num_layers, "num_layers", low=0)
        )
        hidden = [int(h) for h in hidden_dims] if hidden_dims is not None else [64, 64]
        if not hidden or min(hidden) < 1:
            raise DataError(f"hidden_dims must be a non-empty list of positive sizes, got {hidden_dims}")
        self._config: dict[str, Any] = {
            "low": squash.low.tolist(),
            "high": squash.high.tolist(),
            "context_dim": context_dim,
            "transform": transform,
            "num_layers": num_layers,
            "hidden_dims": hidden,
            "base": base,
            "count_bins": int(count_bins),
            "bound": float(bound),
            "order": order,
            "scale": float(scale),
            "weight_prior": self._weight_prior(weight_prior),
            "dropout": self._dropout_rate(dropout),
            "dtype": str(dtype).removeprefix("torch."),
        }
        self.dim, self.context_dim = dim, context_dim
        self._dropout_active = False  # True only inside fit_dropout()
        self.register_buffer("low", squash.low.to(dtype))
        self.register_buffer("high", squash.high.to(dtype))
        self.register_buffer("context_loc", torch.zeros(context_dim, dtype=dtype))
        self.register_buffer("context_scale", torch.ones(context_dim, dtype=dtype))
        self.register_buffer("context_scaling_set", torch.tensor(False))
        trunk: list[nn.Module] = []
        width = context_dim
        for h in hidden:
            trunk += [nn.Linear(width, h), nn.SiLU()]
            width = h
        # Plain nn modules: PyroModule registers their parameters with Pyro whenever forward() touches them.
        self.trunk = nn.Sequential(*trunk).to(dtype)
        options = LayerOptions(count_bins=int(count_bins), bound=float(bound), order=order)
        # Base to data: the conditional tail layer, then the family's conditional stack (permutations included).
        self._stack: Stack = [ConditionalLayer("two_slope", dim, width)]
        # family_for(conditional=True) checked the family has a conditional version (which registers its default)
        assert family.conditional is not None and num_layers is not None
        self._stack += family.conditional(dim, num_layers, width, options)
        self.layers = nn.ModuleList(modules_of(self._stack)).to(dtype)

    @classmethod
    def _weight_prior(cls, weight_prior: float | None | str) -> float | None:
        """The prior's scale: ``"auto"`` resolved to :attr:`default_weight_prior`, else checked."""
        if isinstance(weight_prior, str) and weight_prior == "auto":
            return float(cls.default_weight_prior)
        if weight_prior is None:
            return None
        if (
            isinstance(weight_prior, bool)
            or not isinstance(weight_prior, (int, float))
            or not (math.isfinite(weight_prior) and weight_prior > 0)
        ):
            raise DataError(f"weight_prior must be a positive number, None or 'auto', got {weight_prior!r}")
        return float(weight_prior)

    @classmethod
    def _dropout_rate(cls, dropout: float | str) -> float:
        """The trunk's dropout rate: ``"auto"`` resolved to :attr:`default_dropout`, else checked."""
        if isinstance(dropout, str) and dropout == "auto":
            return float(cls.default_dropout)
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
            raise DataError(f"dropout must be a number in [0, 1) or 'auto', got {dropout!r}")
        return float(dropout)

    @contextlib.contextmanager
    def fit_dropout(self) -> Iterator[None]:
        """Inside this block the trunk drops its hidden features at rate ``config["dropout"]`` (in training mode).

        :func:`~pyroflows.flows.fit` runs its optimiser steps inside it; everywhere else the flow is deterministic.

        Example:
            >>> flow = ConditionalCompactFlow(0.0, 1.0, context_dim=2, dropout=0.5)
            >>> x = torch.randn(4, 2, dtype=torch.float64)
            >>> with flow.fit_dropout():
            ...     dropped = flow.features(x)
            >>> bool((dropped == 0).any()), bool((flow.features(x) == 0).any())
            (True, False)
        """
        self._dropout_active = True
        try:
            yield
        finally:
            self._dropout_active = False

    def weight_decays(self) -> dict[str, float]:
        r"""The weight decay :func:`~pyroflows.flows.fit` gives each parameter: :math:`1/\sigma^2` on the weights.

        Every ``nn.Linear`` weight matrix of the trunk and the layers (heads and autoregressive networks), keyed by
        its name in :meth:`named_parameters`; empty without a ``weight_prior``. Adam's ``weight_decay`` adds
        :math:`w / \sigma^2`, the gradient of :meth:`log_prior`, after the likelihood's gradient is clipped, so the
        prior's pull is never clipped away.

        Example:
            >>> flow = ConditionalCompactFlow(0.0, 1.0, context_dim=2, weight_prior=0.5)
            >>> sorted(flow.weight_decays().items())[:2]
            [('layers.0.head.weight', 4.0), ('layers.1.head.weight', 4.0)]
        """
        sigma = self._config["weight_prior"]
        if sigma is None:
            return {}
        linear = {id(m.weight) for m in itertools.chain(self.trunk.modules(), self.layers.modules())
                  if isinstance(m, nn.Linear)}  # fmt: skip
        return {name: 1.0 / sigma**2 for name, p in self.named_parameters() if id(p) in linear}

    def log_prior(self) -> torch.Tensor:
        r"""Log-density of the weights under the ``weight_prior`` (0 without one).

        :math:`\log p = -\sum_w w^2 / (2 \sigma^2)` (up to a constant) over every entry of the weight matrices of
        :meth:`weight_decays`. :func:`~pyroflows.flows.fit` maximises the likelihood plus this prior (MAP), applying
        its gradient as weight decay: the prior holds the conditioner near zero weights (the unconditional flow)
        unless the data pull it away, and its pull weakens relative to the likelihood's as the number of rows grows.
        Add it as ``pyro.factor`` to train the flow with the same prior in your own SVI loop.

        Example:
            >>> ConditionalCompactFlow(0.0, 1.0, context_dim=2, weight_prior=None).log_prior().item()
            0.0
        """
        decays, params = self.weight_decays(), dict(self.named_parameters())
        if not decays:
            return torch.zeros((), dtype=self.low.dtype, device=self.low.device)
        total = torch.stack([d * (params[name] ** 2).sum() for name, d in decays.items()]).sum()
        return -total / 2

    @property
    def config(self) -> dict[str, Any]:
        """The constructor arguments as plain values (what :meth:`save` writes and :meth:`from_config` reads)."""
        return dict(self._config)

    @property
    def squash(self) -> IntervalSquashTransform | HalfLineSquashTransform:
        """The squash onto this flow's bounds."""
        return make_squash(self.low, self.high, scale=self._config["scale"])

    def set_context_scaling(self, context: torch.Tensor) -> None:
        """Standardise contexts with this sample's mean and standard deviation (constant columns keep scale 1)."""
        c = context.to(self.context_loc)
        with torch.no_grad():
            self.context_loc.copy_(c.mean(0))
            std = c.std(0) if c.shape[0] > 1 else torch.ones_like(self.context_scale)
            self.context_scale.copy_(torch.where(std > 0, std, torch.ones_like(std)))
            self.context_scaling_set.fill_(True)

    def features(self, context: torch.Tensor) -> torch.Tensor:
        """The trunk's features for ``context`` (shape ``batch + (context_dim,)``)."""
        c = context.to(self.context_loc)
        h = (c - self.context_loc) / self.context_scale
        rate = self._config["dropout"] if self.training and self._dropout_active else 0.0
        for module in self.trunk:
            h = module(h)
            if rate and isinstance(module, nn.SiLU):
                h = F.dropout(h, rate, training=True)
        return h

    def forward(self, context: torch.Tensor) -> BoundedTransformedDistribution:
        r""":math:`p(y \mid x)` for each context row: batch shape ``context.shape[:-1]``, event shape ``(dim,)``.

        Raises:
            ValueError: the context's last dimension is not ``context_dim``.
        """
        if not torch.is_tensor(context):
            context = torch.as_tensor(context, dtype=self.low.dtype)
        if context.dim() == 0 or context.shape[-1] != self.context_dim:
            raise ValueError(f"context must have shape (..., {self.context_dim}), got {tuple(context.shape)}")
        h = self.features(context)
        list(self.layers)  # touching self.layers inside forward registers its parameters with Pyro
        layers = [t.condition(h) if isinstance(t, ConditionalTransform) else t for t in self._stack]
        zeros = torch.zeros(self.dim, dtype=self.low.dtype, device=self.low.device)
        base = BASES.build(self._config["base"], zeros, torch.ones_like(zeros)).to_event(1).expand(h.shape[:-1])
        d = BoundedTransformedDistribution(base, [*layers, self.squash])
        d.compute_dtype = self.low.dtype
        return d

    def freeze(self) -> ConditionalCompactFlow:
        """Fix the flow's current conditional density (its parameters become buffers).

        As :meth:`CompactFlow.freeze <pyroflows.flows.CompactFlow.freeze>` does; :func:`~pyroflows.flows.fit` refuses a
        frozen flow.

        Returns:
            The flow itself.

        Example:
            >>> flow = ConditionalCompactFlow(0.0, 1.0, context_dim=2).freeze()
            >>> flow.frozen, len(list(flow.parameters()))
            (True, 0)
        """
        freeze_parameters(self.trunk, self.layers)
        self._frozen = True
        return self

    @property
    def frozen(self) -> bool:
        """Whether :meth:`freeze` has been called."""
        return getattr(self, "_frozen", False)

    def condition(self, context: torch.Tensor) -> BoundedTransformedDistribution:
        """The conditional distribution for ``context`` (the same as calling the module); see :meth:`forward`.

        Example:
            >>> flow = ConditionalCompactFlow(0.0, float("inf"), context_dim=1)
            >>> flow.condition(torch.zeros(3, 1)).support
            IndependentConstraint(GreaterThan(lower_bound=tensor([0.], dtype=torch.float64)), 1)
        """
        return self(context)

    def log_prob(self, value: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """``self.condition(context).log_prob(value)``: value ``(N, dim)``, context ``(N, context_dim)``."""
        return self(context).log_prob(value)

    def sample(self, context: torch.Tensor, sample_shape: torch.Size | tuple[int, ...] = ()) -> torch.Tensor:
        """Draws of shape ``sample_shape + context.shape[:-1] + (dim,)`` (no gradient)."""
        with torch.no_grad():
            return self(context).sample(torch.Size(sample_shape))

    @classmethod
    def from_config(cls, config: dict[str, Any], **kwargs: Any) -> ConditionalCompactFlow:
        """Rebuild an (untrained) flow from :attr:`config`.

        Files written before ``weight_prior`` and ``dropout`` existed get None and 0 (how those flows were fitted).
        """
        config = dict(config)
        config.setdefault("weight_prior", None)
        config.setdefault("dropout", 0.0)
        config["dtype"] = getattr(torch, config.get("dtype", "float64"))
        return cls(config.pop("low"), config.pop("high"), config.pop("context_dim"), **config, **kwargs)
