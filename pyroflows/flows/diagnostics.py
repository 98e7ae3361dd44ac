r"""How close an approximate posterior is: Monte Carlo KL to a known posterior, and PSIS Pareto :math:`\hat k`."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import torch

__all__ = ["kl_to_posterior", "psis_khat"]

#: The start of ArviZ's daily FutureWarning (a regular expression, as ``warnings.filterwarnings`` takes it).
ARVIZ_DAILY_NOTICE = r"\s*ArviZ is undergoing a major refactor"


def kl_to_posterior(
    guide_dist: torch.distributions.Distribution,
    posterior_log_prob: Callable[[torch.Tensor], torch.Tensor],
    num_samples: int = 20000,
) -> float:
    r"""Monte Carlo estimate of :math:`\mathrm{KL}(q \,\|\, p) = E_q[\log q(\theta) - \log p(\theta)]`.

    Args:
        guide_dist: The approximation :math:`q` (any distribution with ``sample`` and ``log_prob``).
        posterior_log_prob: The exact, normalised posterior log-density.
        num_samples: Draws from :math:`q`.

    Returns:
        The estimate in nats.

    Example:
        >>> q = torch.distributions.Beta(torch.tensor(2.0), torch.tensor(3.0))
        >>> round(kl_to_posterior(q, q.log_prob, 100), 6)
        0.0
    """
    with torch.no_grad():
        theta = guide_dist.sample((num_samples,))
        return (guide_dist.log_prob(theta) - posterior_log_prob(theta)).mean().item()


def psis_khat(log_joint: torch.Tensor | np.ndarray, log_q: torch.Tensor | np.ndarray) -> float:
    r"""Pareto-smoothed importance sampling :math:`\hat k` of draws from :math:`q` (ArviZ's ``psislw``).

    The log-weights are :math:`\log p(\theta, x) - \log q(\theta)` at draws :math:`\theta \sim q`. Below 0.5 the
    importance weights have finite variance and :math:`q` is a good proposal for the posterior; above 0.7 it is not
    reliable. | Pareto Smoothed Importance Sampling (Vehtari et al., 2015-2024)

    Args:
        log_joint: :math:`\log p(\theta_s, x)` per draw.
        log_q: :math:`\log q(\theta_s)` per draw.

    Returns:
        :math:`\hat k`.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> theta = rng.normal(size=4000)  # draws from q = N(0, 1)
        >>> log_q = -theta**2 / 2
        >>> psis_khat(-theta**2 / (2 * 0.8**2), log_q) < 0.5  # p = N(0, 0.8^2), narrower than q: fine
        True
        >>> psis_khat(-theta**2 / (2 * 3.0**2), log_q) > 0.7  # p = N(0, 3^2): q misses its tails
        True
    """
    with warnings.catch_warnings():
        # ArviZ's once-a-day notice of its coming refactor (a FutureWarning on the first import of each day) is about
        # ArviZ's own API, which this function hides; under ``-W error`` it would fail the first call of the day.
        warnings.filterwarnings("ignore", message=ARVIZ_DAILY_NOTICE, category=FutureWarning)
        import arviz

    log_weights = np.asarray(log_joint, dtype=np.float64) - np.asarray(log_q, dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ArviZ warns when k-hat is large; the caller reports the value
        _, khat = arviz.psislw(log_weights)
    return float(khat)
