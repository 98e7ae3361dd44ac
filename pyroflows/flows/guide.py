"""``AutoCompactFlow``: an autoguide for models whose latent sites live in intervals.

Pyro's AutoNormal and friends map a bounded latent through the logit and fit a Normal there, so a posterior piled
against a bound is approximated by a logit-normal. This guide instead fits one :class:`~pyroflows.flows.CompactFlow`
on the box formed by the bounds of every latent element, so the approximate posterior lives on exactly the latent
space and can take the shape the posterior has near the bounds.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro.infer.autoguide import AutoGuide
from torch.distributions import constraints

from pyroflows.flows.compact import BoundedTransformedDistribution, CompactFlow

__all__ = ["AutoCompactFlow", "interval_bounds"]


def interval_bounds(support: constraints.Constraint) -> tuple[Any, Any] | None:
    """``(lower, upper)`` of an interval support (possibly wrapped in ``independent``), else ``None``.

    Example:
        >>> interval_bounds(constraints.unit_interval)
        (0.0, 1.0)
        >>> interval_bounds(constraints.positive) is None
        True
    """
    while isinstance(support, constraints.independent):
        support = support.base_constraint
    if isinstance(support, constraints.interval) or type(support).__name__ == "_Interval":
        return support.lower_bound, support.upper_bound
    return None


class AutoCompactFlow(AutoGuide):
    """Autoguide: a compact-support flow over all latent sites, each of which must have an interval support.

    The latent elements are flattened into one vector whose bounds form a box; a :class:`CompactFlow` on that box
    is the approximate posterior (sampled as an auxiliary site), and each model site receives its slice through a
    ``Delta`` site.

    Args:
        model: A Pyro model whose latent sites all have interval supports (``Beta``, ``Uniform``, ...).
        transform: Flow layers (``"spline"`` by default; ``"radial"``; ``"autoregressive"`` for several latents).
        init_loc_fn: Accepted for AutoGuide compatibility (the flow starts near the uniform on the box).
        **flow_kwargs: Passed to :class:`CompactFlow` (``num_layers``, ``count_bins``, ``dtype``, ...).

    Raises:
        ValueError: a latent site's support is not an interval (use AutoNormal or an AutoGuideList for those).

    Example:
        >>> def model():
        ...     pyro.sample("p", dist.Beta(2.0, 5.0))
        >>> guide = AutoCompactFlow(model, num_layers=1)
        >>> sorted(guide())
        ['p']
    """

    def __init__(
        self, model: Callable, *, transform: str = "spline", init_loc_fn: Callable | None = None, **flow_kwargs: Any
    ):
        self._transform = transform
        # The guide keeps the spline it was measured with (benchmarks/flows.py, Beta-Binomial): Pyro's fixed ends.
        self._flow_kwargs = {"ends": "fixed", **flow_kwargs} if transform == "spline" else flow_kwargs
        super().__init__(model)

    def _setup_prototype(self, *args: Any, **kwargs: Any) -> None:
        super()._setup_prototype(*args, **kwargs)
        lows, highs = [], []
        self._site_shapes: dict[str, torch.Size] = {}
        for name, site in self.prototype_trace.iter_stochastic_nodes():
            bounds = interval_bounds(site["fn"].support)
            if bounds is None:
                raise ValueError(
                    f"AutoCompactFlow: latent site {name!r} has support {site['fn'].support}, not an interval; "
                    "use AutoNormal for it (pyro.infer.autoguide.AutoGuideList can combine the two)"
                )
            shape = site["value"].shape
            self._site_shapes[name] = shape
            lows.append(torch.as_tensor(bounds[0], dtype=torch.float64).expand(shape).reshape(-1))
            highs.append(torch.as_tensor(bounds[1], dtype=torch.float64).expand(shape).reshape(-1))
        if not lows:
            raise RuntimeError("AutoCompactFlow found no latent variables; use an empty guide instead")
        self.flow = CompactFlow(torch.cat(lows), torch.cat(highs), transform=self._transform, **self._flow_kwargs)

    def get_posterior(self, *args: Any, **kwargs: Any) -> BoundedTransformedDistribution:
        """The flow distribution over the flattened latent vector."""
        if self.prototype_trace is None:
            self._setup_prototype(*args, **kwargs)
        return self.flow()

    def forward(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        if self.prototype_trace is None:
            self._setup_prototype(*args, **kwargs)
        latent = pyro.sample(
            f"_{self._pyro_name}_latent", self.get_posterior(*args, **kwargs), infer={"is_auxiliary": True}
        )
        plates = self._create_plates(*args, **kwargs)
        result = {}
        offset = 0
        for name, site in self.prototype_trace.iter_stochastic_nodes():
            shape = self._site_shapes[name]
            size = shape.numel()
            value = latent[..., offset : offset + size].reshape(latent.shape[:-1] + shape)
            offset += size
            with ExitStack() as stack:
                for frame in site["cond_indep_stack"]:
                    if frame.vectorized:
                        stack.enter_context(plates[frame.name])
                result[name] = pyro.sample(name, dist.Delta(value, event_dim=site["fn"].event_dim))
        return result
