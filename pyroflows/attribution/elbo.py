"""The bottlenecks' ELBO: ``TraceMeanField_ELBO`` without the log-densities its closed-form KL terms never read.

Example:
    >>> import pyro, torch
    >>> import pyro.distributions as dist
    >>> def model():
    ...     pyro.sample("z", dist.Normal(0.0, 1.0))
    >>> def guide():
    ...     pyro.sample("z", dist.Normal(pyro.param("loc", torch.tensor(1.0)), 1.0))
    >>> with pyro.get_param_store().scope():
    ...     round(ClosedFormKLELBO().loss(model, guide), 6)  # KL(N(1, 1) || N(0, 1))
    0.5
"""

from __future__ import annotations

from typing import Any

from pyro import poutine
from pyro.infer import TraceMeanField_ELBO
from pyro.infer.util import is_validation_enabled
from pyro.poutine.util import prune_subsample_sites

__all__ = ["ClosedFormKLELBO"]


class ClosedFormKLELBO(TraceMeanField_ELBO):
    """``TraceMeanField_ELBO`` that skips the log-densities its closed-form KL terms never read.

    ``TraceMeanField_ELBO`` replaces each latent site's ``log q - log p`` by ``KL(q || p)`` but still evaluates both
    log-densities for every noise copy of every element, which costs a bottleneck more than its KL. Here only
    observed sites get a log-density. Valid for model/guide pairs whose every latent site has a registered KL (the
    bottlenecks' do); other pairs should use ``TraceMeanField_ELBO``.

    How: it overrides ``_get_trace(model, guide, args, kwargs)``, the private method through which every Pyro
    ``Trace*_ELBO`` builds one (vectorised) pair of model and guide traces (``ELBO._get_traces`` calls it per
    particle, or once under ``vectorize_particles``). Pyro's version runs ``pyro.infer.enum.get_importance_trace``,
    which calls ``model_trace.compute_log_prob()`` for every site; this one does the same tracing and pruning but
    computes log-densities of observed sites only (and the guide's score parts only where validation reads them).
    No public Pyro API does this: a ``poutine`` handler changes what is traced, not which log-densities the ELBO
    computes afterwards, and ``TraceMeanField_ELBO`` reads the KL but computes the log-densities anyway. Checked
    against ``TraceMeanField_ELBO`` (same loss and gradients) in ``tests/attribution/test_per_sample.py``; The
    signature followed is that of ``pyro-ppl`` 1.9 (``pyproject.toml`` bounds it below 2).

    Example:
        >>> elbo = ClosedFormKLELBO(num_particles=10, vectorize_particles=True, max_plate_nesting=1)
        >>> elbo.num_particles
        10
    """

    def _get_trace(self, model: Any, guide: Any, args: Any, kwargs: Any) -> tuple[Any, Any]:
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
        guide_trace, model_trace = prune_subsample_sites(guide_trace), prune_subsample_sites(model_trace)
        model_trace.compute_log_prob(site_filter=lambda _name, site: site["is_observed"])
        if is_validation_enabled():  # Pyro's reparameterisation check reads the guide's score parts
            guide_trace.compute_score_parts()
        return model_trace, guide_trace
