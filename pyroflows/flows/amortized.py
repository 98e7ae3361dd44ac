"""Which latents of a model are per-datum, and how an amortised guide reads and writes them.

A latent site is *per-datum* when it sits in a plate that also holds observed sites (one latent per datum, such as
a per-row success probability) or in a subsampled plate. :class:`~pyroflows.flows.AutoCompactFlow` gives the
per-datum latents of each such plate one :class:`~pyroflows.flows.ConditionalCompactFlow` whose context is a datum's
observed values (and the global latents), instead of flattening ``N`` copies into one joint flow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from pyro.poutine.subsample_messenger import _Subsample

from pyroflows.flows.conditional import ConditionalCompactFlow

__all__ = ["LocalPlan", "plan_local_sites"]


def _per_datum(value: torch.Tensor, event_dim: int, plate_dim: int) -> torch.Tensor:
    """``value`` with the plate's axis first and everything else flattened: shape ``(n, -1)``."""
    axis = value.dim() - event_dim + plate_dim
    return value.movedim(axis, 0).reshape(value.shape[axis], -1)


@dataclass
class LocalPlan:
    """The per-datum latents of one plate and the observed sites whose values condition their guide.

    Attributes:
        plate: The plate's name.
        dim: The plate's (negative) dimension.
        size: The number of data per call (the subsample size).
        sites: ``{name: (shape, per-datum size)}`` of the latent sites, in model order.
        observed: ``{name: event_dim}`` of the observed sites in the plate.
        low: Per-datum lower bounds of the concatenated latents.
        high: Per-datum upper bounds.
    """

    plate: str
    dim: int
    size: int
    sites: dict[str, tuple[torch.Size, int]] = field(default_factory=dict)
    observed: dict[str, int] = field(default_factory=dict)
    low: list[torch.Tensor] = field(default_factory=list)
    high: list[torch.Tensor] = field(default_factory=list)

    def context(self, observed: dict[str, torch.Tensor], global_latent: torch.Tensor | None) -> torch.Tensor:
        """Each datum's context row: its observed values, then the global latents' draw; shaped for the plate."""
        parts = [_per_datum(observed[name], event_dim, self.dim).to(torch.float64)
                 for name, event_dim in self.observed.items()]  # fmt: skip
        if global_latent is not None:
            if global_latent.dim() != 1:
                raise ValueError(
                    "AutoCompactFlow: amortised per-datum guides take one draw of the global latents at a time "
                    f"(got a batch of shape {tuple(global_latent.shape[:-1])}); vectorised particles are not supported"
                )
            parts.append(global_latent.to(torch.float64).expand(parts[0].shape[0], -1))
        context = torch.cat(parts, dim=-1)
        return context.reshape((context.shape[0],) + (1,) * (-self.dim - 1) + (context.shape[-1],))

    def split(self, local: torch.Tensor) -> dict[str, torch.Tensor]:
        """Cut a draw of the concatenated per-datum latents into the model's sites, in their own shapes."""
        flat = local.reshape(local.shape[0], -1)
        values, offset = {}, 0
        for name, (shape, size) in self.sites.items():
            values[name] = flat[:, offset : offset + size].reshape(shape)
            offset += size
        return values

    def make_flow(self, global_dim: int, trace: Any, **kwargs: Any) -> ConditionalCompactFlow:
        """The amortised flow for this plate, its context scaled by the prototype trace's observed values."""
        observed = [_per_datum(trace.nodes[name]["value"], event_dim, self.dim).to(torch.float64)
                    for name, event_dim in self.observed.items()]  # fmt: skip
        context = torch.cat(observed, dim=-1)
        flow = ConditionalCompactFlow(torch.cat(self.low), torch.cat(self.high), context.shape[-1] + global_dim,
                                      name=f"amortized_{self.plate}", **kwargs)  # fmt: skip
        scaling = torch.cat([context, torch.zeros(context.shape[0], global_dim, dtype=context.dtype)], dim=-1)
        flow.set_context_scaling(scaling)
        return flow


def plan_local_sites(trace: Any) -> dict[str, LocalPlan]:
    """Find the per-datum latent sites of a prototype trace, grouped by plate.

    Raises:
        ValueError: a per-datum latent in two data plates, with other batch dimensions of size > 1, with bounds that
            differ between data, or in a subsampled plate that holds no observed site.
    """
    from pyroflows.flows.guide import interval_bounds

    data_plates: set[str] = set()
    for site in trace.nodes.values():
        if site["type"] == "sample" and site["is_observed"]:
            data_plates.update(f.name for f in site["cond_indep_stack"] if f.vectorized)
    plans: dict[str, LocalPlan] = {}
    for name, site in trace.iter_stochastic_nodes():
        if isinstance(site["fn"], _Subsample):
            continue  # a plate's subsample indices, not a latent
        frame = _data_frame(name, site, data_plates)
        if frame is not None:
            _add_site(plans, name, site, frame, interval_bounds)
    for plan in plans.values():
        for name, site in trace.nodes.items():
            if (
                site["type"] == "sample"
                and site["is_observed"]
                and any(f.name == plan.plate for f in site["cond_indep_stack"])
            ):
                plan.observed[name] = site["fn"].event_dim
    return plans


def _data_frame(name: str, site: dict, data_plates: set[str]) -> Any:
    """The one data plate (or subsampled plate) that makes a latent site per-datum, ``None`` for a global site."""
    frames = [f for f in site["cond_indep_stack"] if f.vectorized]
    subsampled = [f for f in frames if f.full_size is not None and f.full_size != f.size]
    local = [f for f in frames if f.name in data_plates or f in subsampled]
    if not local:
        return None
    if len(local) > 1:
        raise ValueError(
            f"AutoCompactFlow: latent site {name!r} is per-datum in several plates "
            f"({', '.join(f.name for f in local)}); amortised guides support one data plate per site"
        )
    frame = local[0]
    if frame.name not in data_plates:
        raise ValueError(
            f"AutoCompactFlow: latent site {name!r} sits in the subsampled plate {frame.name!r}, which holds no "
            "observed site to condition an amortised guide on; use AutoNormal for it (it indexes per-datum "
            "parameters by the subsample)"
        )
    return frame


def _add_site(plans: dict[str, LocalPlan], name: str, site: dict, frame: Any, interval_bounds: Any) -> None:
    """Add a per-datum latent site to its plate's plan, checking its batch shape and that its bounds are shared."""
    value, event_dim = site["value"], site["fn"].event_dim
    batch = value.shape[: value.dim() - event_dim]
    axis = len(batch) + frame.dim
    if axis < 0 or any(s != 1 for i, s in enumerate(batch) if i != axis):
        raise ValueError(
            f"AutoCompactFlow: per-datum latent site {name!r} has batch shape {tuple(batch)}; amortised guides "
            f"need the plate {frame.name!r} to be its only batch dimension larger than 1"
        )
    bounds = interval_bounds(site["fn"].support)
    if bounds is None:
        return  # AutoCompactFlow reports unsupported supports itself
    low, high = (_per_datum(torch.as_tensor(b, dtype=torch.float64).expand(value.shape), event_dim, frame.dim)
                 for b in bounds)  # fmt: skip
    if not (torch.equal(low, low[:1].expand_as(low)) and torch.equal(high, high[:1].expand_as(high))):
        raise ValueError(
            f"AutoCompactFlow: per-datum latent site {name!r} has bounds that differ between data; one amortised "
            "flow needs the same bounds for every datum"
        )
    plan = plans.setdefault(frame.name, LocalPlan(frame.name, frame.dim, frame.size))
    plan.sites[name] = (value.shape, low.shape[1])
    plan.low.append(low[0])
    plan.high.append(high[0])
