"""``AutoCompactFlow``: an autoguide for models whose latent sites live in intervals.

Pyro's AutoNormal and friends map a bounded latent through the logit and fit a Normal there, so a posterior piled
against a bound is approximated by a logit-normal. This guide instead fits one :class:`~pyroflows.flows.CompactFlow`
on the box formed by the bounds of every latent element, so the approximate posterior lives on exactly the latent
space and can take the shape the posterior has near the bounds.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer.autoguide import AutoGuide
from pyro.infer.autoguide.initialization import InitMessenger
from torch.distributions import constraints

from pyroflows.errors import DataError
from pyroflows.flows.amortized import plan_local_sites
from pyroflows.flows.compact import BoundedTransformedDistribution, CompactFlow
from pyroflows.flows.conditional import ConditionalCompactFlow
from pyroflows.flows.families import default_transform

__all__ = ["AutoCompactFlow", "interval_bounds", "support_bounds"]


def support_bounds(support: constraints.Constraint) -> tuple[Any, Any] | None:
    """``(lower, upper)`` of a support bounded on at least one side, else ``None``.

    The support may be wrapped in ``independent`` (a box); ``-inf`` / ``inf`` stand for an open side.

    Covers ``interval`` (``unit_interval``), ``half_open_interval``, ``greater_than`` (``positive``),
    ``greater_than_eq`` (``nonnegative``) and ``less_than``, by ``isinstance`` on torch's constraint classes.

    Example:
        >>> support_bounds(constraints.half_open_interval(0.0, 2.0))
        (0.0, 2.0)
        >>> support_bounds(constraints.positive)
        (0.0, inf)
        >>> support_bounds(constraints.real) is None
        True
    """
    while isinstance(support, constraints.independent):
        support = support.base_constraint
    if isinstance(support, (constraints.interval, constraints.half_open_interval)):
        return support.lower_bound, support.upper_bound
    if isinstance(support, (constraints.greater_than, constraints.greater_than_eq)):
        return support.lower_bound, math.inf
    if isinstance(support, constraints.less_than):
        return -math.inf, support.upper_bound
    return None


def interval_bounds(support: constraints.Constraint) -> tuple[Any, Any] | None:
    """``(lower, upper)`` of an interval support with two finite ends, else ``None``.

    The support is ``interval`` or ``half_open_interval``, possibly wrapped in ``independent``; see
    :func:`support_bounds` for half-lines.

    Example:
        >>> interval_bounds(constraints.unit_interval)
        (0.0, 1.0)
        >>> interval_bounds(constraints.half_open_interval(-1.0, 1.0))
        (-1.0, 1.0)
        >>> interval_bounds(constraints.positive) is None
        True
    """
    bounds = support_bounds(support)
    if bounds is None or not all(bool(torch.isfinite(torch.as_tensor(b)).all()) for b in bounds):
        return None
    return bounds


class AutoCompactFlow(AutoGuide):
    r"""Autoguide: compact-support flows over the latent sites, each of which must have an interval support.

    Global latents (outside any plate that holds observations) are flattened into one vector whose bounds form a
    box; a :class:`CompactFlow` on that box is their joint approximate posterior. Per-datum latents, those inside a
    plate that also holds observed sites (subsampled or not), get an *amortised* guide instead: a
    :class:`~pyroflows.flows.ConditionalCompactFlow` over one datum's latents, conditioned on that datum's observed
    values (and on the global latents' draw), so

    .. math:: q(\theta_g)\,\prod_{i \in \text{subsample}} q(z_i \mid y_i, \theta_g).

    Its size does not grow with the plate's size, and in a subsampled plate each datum's guide follows the datum
    drawn. To read the subsample's observed values, the guide runs the model once per call (blocked, with the
    guide's subsample indices replayed). Each model site receives its slice through a ``Delta`` site.

    Args:
        model: A Pyro model whose latent sites all have interval supports (``Beta``, ``Uniform``, ...).
        transform: Flow layers of the global flow, a name in :data:`~pyroflows.flows.families.FAMILIES`; by default
            :func:`~pyroflows.flows.families.default_transform` with ``guide=True`` (``"spline"``).
        init_loc_fn: As for Pyro's autoguides (``init_to_median``, ``init_to_value(values=...)``, ...): where the
            global flow starts. Its tail layer is shifted so the base distribution's median maps to the initial
            values of the global latents (their marginal medians, for elementwise layers); ``None`` (default) keeps
            the flow's own initialisation, close to uniform on the box. Needs the tail layer (``tail_slopes``) and
            refuses models with per-datum latents, whose amortised guides have no such starting point.
        amortized_kwargs: Passed to each plate's :class:`~pyroflows.flows.ConditionalCompactFlow` (``num_layers``,
            ``hidden_dims``, ``count_bins``, ...).
        **flow_kwargs: Passed to the global :class:`CompactFlow` (``num_layers``, ``count_bins``, ``dtype``, ...).

    Raises:
        ValueError: the model has no latent site (a :class:`~pyroflows.errors.DataError`); a latent site's support
            is not an interval (use AutoNormal or an AutoGuideList for those); a per-datum latent in nested data
            plates, with other batch dimensions, with bounds that differ between data, or in a subsampled plate
            without observed sites (no amortised guide is right for those yet); ``init_loc_fn`` with per-datum
            latents.

    Example:
        >>> def model():
        ...     pyro.sample("p", dist.Beta(2.0, 5.0))
        >>> guide = AutoCompactFlow(model, num_layers=1)
        >>> sorted(guide())
        ['p']
    """

    def __init__(
        self,
        model: Callable,
        *,
        transform: str | None = None,
        init_loc_fn: Callable | None = None,
        amortized_kwargs: dict[str, Any] | None = None,
        **flow_kwargs: Any,
    ):
        transform = default_transform(1, guide=True) if transform is None else transform
        self._transform = transform
        # The guide keeps the spline it was measured with (benchmarks/flows.py, Beta-Binomial): Pyro's fixed ends.
        self._flow_kwargs = {"ends": "fixed", **flow_kwargs} if transform == "spline" else flow_kwargs
        self._init_loc_fn = init_loc_fn
        if init_loc_fn is not None:
            # As Pyro's AutoNormal does: the prototype trace then holds the initial values.
            model = InitMessenger(init_loc_fn)(model)
        # A Normal base and a smaller context network: in a short check (a conjugate Beta-Binomial model, N = 1,000,
        # subsample 50) a Logistic base let the rarest data's guides leak mass into the far tail, and 64 hidden
        # units per layer were not needed.
        self._amortized_kwargs = {"base": "normal", "hidden_dims": [32, 32], **(amortized_kwargs or {})}
        super().__init__(model)

    def _setup_prototype(self, *args: Any, **kwargs: Any) -> None:
        super()._setup_prototype(*args, **kwargs)
        lows, highs = [], []
        self._site_shapes: dict[str, torch.Size] = {}
        self._global_sites: list[str] = []
        # The prototype trace hides observed sites; a plain (hidden) trace of the model shows which plates hold data.
        # Forked RNG: the extra run of the model leaves the random stream as plain AutoGuide set-up leaves it.
        with torch.random.fork_rng(devices=[]), poutine.block():
            full_trace = poutine.trace(self.model).get_trace(*args, **kwargs)
        self._local_plans = plan_local_sites(full_trace)
        local_sites = {name for plan in self._local_plans.values() for name in plan.sites}
        for name, site in self.prototype_trace.iter_stochastic_nodes():
            bounds = interval_bounds(site["fn"].support)
            if bounds is None:
                raise ValueError(
                    f"AutoCompactFlow: latent site {name!r} has support {site['fn'].support}, not an interval; "
                    "use AutoNormal for it (pyro.infer.autoguide.AutoGuideList can combine the two)"
                )
            if name in local_sites:
                continue
            shape = site["value"].shape
            self._site_shapes[name] = shape
            self._global_sites.append(name)
            lows.append(torch.as_tensor(bounds[0], dtype=torch.float64).expand(shape).reshape(-1))
            highs.append(torch.as_tensor(bounds[1], dtype=torch.float64).expand(shape).reshape(-1))
        if not lows and not self._local_plans:
            raise DataError("AutoCompactFlow found no latent variables; use an empty guide instead")
        self.flow = (
            CompactFlow(torch.cat(lows), torch.cat(highs), transform=self._transform, **self._flow_kwargs)
            if lows
            else None
        )
        self._place_at_init_values()
        global_dim = self.flow.dim if self.flow is not None else 0
        self.amortized = torch.nn.ModuleDict(
            {
                plate: plan.make_flow(global_dim, full_trace, **self._amortized_kwargs)
                for plate, plan in self._local_plans.items()
            }
        )

    def _place_at_init_values(self) -> None:
        """Centre the global flow on ``init_loc_fn``'s values (the prototype trace's), when one is given."""
        if self._init_loc_fn is None:
            return
        if self._local_plans:
            raise DataError(
                "AutoCompactFlow: init_loc_fn is not supported with per-datum latents "
                f"({', '.join(n for plan in self._local_plans.values() for n in plan.sites)}); their amortised "
                "guides have no starting point to set"
            )
        values = [self.prototype_trace.nodes[name]["value"].detach().reshape(-1) for name in self._global_sites]
        assert self.flow is not None  # no per-datum latents, so the latents are global and the flow exists
        self.flow.center_at(torch.cat(values))

    def get_posterior(self, *args: Any, **kwargs: Any) -> BoundedTransformedDistribution:
        """The flow distribution over the flattened global latent vector.

        Raises:
            NotImplementedError: the model has only per-datum latents (their guides are conditional: see
                :attr:`amortized`).
        """
        if self.prototype_trace is None:
            self._setup_prototype(*args, **kwargs)
        if self.flow is None:
            raise NotImplementedError(
                "AutoCompactFlow: this model has only per-datum latents; their amortised guides are "
                "guide.amortized[plate].condition(context)"
            )
        return self.flow()

    def forward(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """Draw the latents from the guide (inside the model's plates); the values by site name."""
        if self.prototype_trace is None:
            self._setup_prototype(*args, **kwargs)
        with poutine.trace() as plate_trace:
            plates = self._create_plates(*args, **kwargs)
        result = {}
        latent = None
        if self.flow is not None:
            latent = pyro.sample(
                f"_{self._pyro_name}_latent", self.get_posterior(*args, **kwargs), infer={"is_auxiliary": True}
            )
            offset = 0
            for name in self._global_sites:
                site = self.prototype_trace.nodes[name]
                shape = self._site_shapes[name]
                size = shape.numel()
                value = latent[..., offset : offset + size].reshape(latent.shape[:-1] + shape)
                offset += size
                result[name] = self._delta(name, site, value, plates)
        if self._local_plans:
            observed = _observed_values(self.model, plate_trace.trace, args, kwargs)
            for plate, plan in self._local_plans.items():
                context = plan.context(observed, latent)
                flow = self.amortized[plate]
                assert isinstance(flow, ConditionalCompactFlow)  # plan.make_flow built it
                with plates[plate]:
                    local = pyro.sample(
                        f"_{self._pyro_name}_{plate}_latent",
                        flow.condition(context),
                        infer={"is_auxiliary": True},
                    )
                for name, value in plan.split(local).items():
                    result[name] = self._delta(name, self.prototype_trace.nodes[name], value, plates)
        return result

    @staticmethod
    def _delta(name: str, site: dict, value: torch.Tensor, plates: dict) -> torch.Tensor:
        with ExitStack() as stack:
            for frame in site["cond_indep_stack"]:
                if frame.vectorized:
                    stack.enter_context(plates[frame.name])
            return pyro.sample(name, dist.Delta(value, event_dim=site["fn"].event_dim))


def _observed_values(model: Callable, plate_trace: Any, args: tuple, kwargs: dict) -> dict[str, torch.Tensor]:
    """The model's observed values for the guide's current subsample (the model run hidden, its plates replayed)."""
    replay = poutine.Trace()
    for name, node in plate_trace.nodes.items():
        if node["type"] == "sample":
            replay.add_node(name, **node)
    with poutine.block():
        trace = poutine.trace(poutine.replay(model, trace=replay)).get_trace(*args, **kwargs)
    return {
        name: site["value"]
        for name, site in trace.nodes.items()
        if site["type"] == "sample" and site["is_observed"] and site["value"] is not None and not name.startswith("_")
    }
