"""A conjugate test bed for bounded-latent guides: the Beta-Binomial model, whose posterior is a known Beta.

With a Beta(a, b) prior on a success probability and k successes in n trials the posterior is
Beta(a + k, b + n - k). With few successes it piles against 0, where a logit-normal (AutoNormal) fits poorly.
"""

from __future__ import annotations

import time
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoGuide, AutoNormal
from tqdm.auto import tqdm

from pyroflows.flows.diagnostics import kl_to_posterior, psis_khat
from pyroflows.flows.guide import AutoCompactFlow

__all__ = ["beta_binomial_model", "beta_binomial_posterior", "compare_guides"]


def beta_binomial_model(successes: torch.Tensor, trials: torch.Tensor, a: float = 1.0, b: float = 1.0) -> None:
    """``p ~ Beta(a, b)``, ``successes ~ Binomial(trials, p)`` (observed)."""
    p = pyro.sample("p", dist.Beta(torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)))
    pyro.sample("k", dist.Binomial(trials, p), obs=successes)


def beta_binomial_posterior(successes: float, trials: float, a: float = 1.0, b: float = 1.0) -> dist.Beta:
    """The exact posterior Beta(a + k, b + n - k).

    Example:
        >>> beta_binomial_posterior(1, 40).mean.item()
        0.047619047619047616
    """
    return dist.Beta(
        torch.tensor(a + successes, dtype=torch.float64), torch.tensor(b + trials - successes, dtype=torch.float64)
    )


def _fit_guide(guide: Any, data: tuple, steps: int, lr: float, particles: int, progress: bool, label: str) -> float:
    pyro.clear_param_store()
    svi = SVI(
        beta_binomial_model,
        guide,
        pyro.optim.ClippedAdam({"lr": lr, "lrd": 0.05 ** (1 / steps)}),
        Trace_ELBO(num_particles=particles, vectorize_particles=True, max_plate_nesting=0),
    )
    start = time.perf_counter()
    for _ in tqdm(range(steps), desc=label, disable=not progress, leave=False):
        svi.step(*data)
    return time.perf_counter() - start


def compare_guides(
    successes: int = 0,
    trials: int = 40,
    *,
    a: float = 1.0,
    b: float = 1.0,
    steps: int = 1000,
    lr: float = 0.05,
    num_samples: int = 20000,
    seed: int = 0,
    progress: bool = False,
    **flow_kwargs: Any,
) -> dict[str, dict[str, float]]:
    r"""Fit :class:`AutoCompactFlow` and ``AutoNormal`` to the Beta-Binomial posterior and measure both.

    The model is :func:`beta_binomial_model` with the prior ``Beta(a, b)``; the exact posterior, the KL and the
    PSIS weights all use that same prior.

    Returns, per guide, ``kl`` (Monte Carlo :math:`\mathrm{KL}(q \| p)` from ``num_samples`` draws of ``q``),
    ``khat`` (PSIS Pareto :math:`\hat k` via ArviZ on :math:`\log p(\theta, x) - \log q(\theta)`) and ``seconds``.

    Example:
        >>> result = compare_guides(steps=5, num_samples=500, num_layers=1)  # doctest: +SKIP
        >>> sorted(result)  # doctest: +SKIP
        ['AutoCompactFlow', 'AutoNormal']
    """
    data = (
        torch.tensor(float(successes), dtype=torch.float64),
        torch.tensor(float(trials), dtype=torch.float64),
        float(a),
        float(b),
    )
    prior = dist.Beta(torch.tensor(float(a), dtype=torch.float64), torch.tensor(float(b), dtype=torch.float64))
    posterior = beta_binomial_posterior(successes, trials, a, b)
    results: dict[str, dict[str, float]] = {}
    guide: AutoGuide
    for label in ("AutoCompactFlow", "AutoNormal"):
        pyro.set_rng_seed(seed)
        if label == "AutoNormal":
            guide = AutoNormal(beta_binomial_model)
            seconds = _fit_guide(guide, data, steps, lr, 8, progress, label)
            with torch.no_grad():
                loc, scale = pyro.param("AutoNormal.locs.p"), pyro.param("AutoNormal.scales.p")
                q = dist.TransformedDistribution(dist.Normal(loc, scale), [torch.distributions.SigmoidTransform()])
        else:
            guide = AutoCompactFlow(beta_binomial_model, **flow_kwargs)
            seconds = _fit_guide(guide, data, steps, lr, 8, progress, label)
            flow_dist = guide.get_posterior(*data)
            to_scalar = torch.distributions.ReshapeTransform(torch.Size((1,)), torch.Size(()))
            q = dist.TransformedDistribution(flow_dist, [to_scalar])
        with torch.no_grad():
            theta = q.sample((num_samples,))
            log_q = q.log_prob(theta)
            log_joint = prior.log_prob(theta) + dist.Binomial(data[1], theta).log_prob(data[0])
        results[label] = {
            "kl": kl_to_posterior(q, posterior.log_prob, num_samples),
            "khat": psis_khat(log_joint.numpy(), log_q.numpy()),
            "seconds": seconds,
        }
    return results
