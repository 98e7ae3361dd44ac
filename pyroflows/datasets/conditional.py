r"""Bounded conditional targets :math:`p(y \mid x)` with exact conditional log-densities and means.

Each target draws features :math:`x` and responses :math:`y \mid x`, evaluates :math:`\log p(y \mid x)` exactly and
knows the conditional mean :math:`E[y \mid x]`. On held-out pairs, a model's mean NLL minus the true density's mean
NLL on the same pairs is a Monte Carlo estimate of the expected KL divergence
:math:`E_x\, \mathrm{KL}(p(\cdot \mid x) \,\|\, q(\cdot \mid x))`, i.e. NLL minus the true conditional entropy
:math:`H(Y \mid X)`, with the sampling noise of the entropy removed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy import special, stats

__all__ = ["ConditionalTarget", "CONDITIONAL_TARGETS", "conditional_target"]


@dataclass(frozen=True)
class ConditionalTarget:
    """A conditional distribution on :math:`[low, high]` given ``context_dim`` features.

    Attributes:
        name: Short identifier.
        description: One line for tables.
        low: Lower bound per dimension of :math:`y` (``-inf`` allowed).
        high: Upper bound per dimension (``inf`` allowed).
        context_dim: Number of features.
    """

    name: str
    description: str
    low: tuple[float, ...]
    high: tuple[float, ...]
    context_dim: int
    _features: Callable[[np.random.Generator, int], np.ndarray] = field(repr=False)
    _sample: Callable[[np.random.Generator, np.ndarray], np.ndarray] = field(repr=False)
    _log_prob: Callable[[np.ndarray, np.ndarray], np.ndarray] = field(repr=False)
    _mean: Callable[[np.ndarray], np.ndarray] = field(repr=False)

    @property
    def dim(self) -> int:
        """Dimension of :math:`y`."""
        return len(self.low)

    def sample(self, n: int, seed: int | np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``n`` i.i.d. pairs: features ``(n, context_dim)`` and responses ``(n, dim)``, float64.

        Example:
            >>> x, y = conditional_target("beta").sample(4, seed=0)
            >>> x.shape, y.shape
            ((4, 2), (4, 1))
        """
        rng = np.random.default_rng(seed)
        x = self._features(rng, n)
        return x, self._sample(rng, x)

    def log_prob(self, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        r"""Exact :math:`\log p(y \mid x)` per row."""
        return self._log_prob(np.asarray(y, dtype=np.float64).reshape(len(x), self.dim), np.asarray(x, np.float64))

    def mean(self, x: np.ndarray) -> np.ndarray:
        r"""Exact :math:`E[y \mid x]`, shape ``(n, dim)``."""
        return self._mean(np.asarray(x, dtype=np.float64)).reshape(len(x), self.dim)


def _uniform_features(k: int) -> Callable[[np.random.Generator, int], np.ndarray]:
    return lambda rng, n: rng.uniform(-1.0, 1.0, size=(n, k))


# 1. A Beta whose two parameters move with two features (from U-shaped through edge-peaked to interior peaks).
def _beta_ab(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.exp(0.3 + 1.2 * x[:, 0]), np.exp(0.5 + 1.0 * x[:, 1] - 0.4 * x[:, 0])


def _beta() -> ConditionalTarget:
    def sample(rng, x):
        a, b = _beta_ab(x)
        return rng.beta(a, b)[:, None]

    def log_prob(y, x):
        a, b = _beta_ab(x)
        return stats.beta.logpdf(y[:, 0], a, b)

    def mean(x):
        a, b = _beta_ab(x)
        return a / (a + b)

    return ConditionalTarget(
        "beta", "Beta(a(x), b(x)), a in [0.4, 4.5], b in [0.4, 6]", (0.0,), (1.0,), 2,
        _uniform_features(2), sample, log_prob, mean,
    )  # fmt: skip


# 2. A mixture whose weight moves between a U shape and an interior peak.
def _mixture_weight(x: np.ndarray) -> np.ndarray:
    return special.expit(3.0 * (x[:, 0] + 0.5 * x[:, 1]))


def _mixture() -> ConditionalTarget:
    def sample(rng, x):
        w = _mixture_weight(x)
        u_shape = rng.beta(0.5, 0.5, size=len(x))
        peak = rng.beta(12.0, 8.0, size=len(x))
        return np.where(rng.uniform(size=len(x)) < w, u_shape, peak)[:, None]

    def log_prob(y, x):
        w = _mixture_weight(x)
        return np.logaddexp(
            np.log(w) + stats.beta.logpdf(y[:, 0], 0.5, 0.5), np.log1p(-w) + stats.beta.logpdf(y[:, 0], 12.0, 8.0)
        )

    def mean(x):
        w = _mixture_weight(x)
        return w * 0.5 + (1 - w) * 0.6

    return ConditionalTarget(
        "mixture", "w(x) Beta(0.5, 0.5) + (1 - w(x)) Beta(12, 8): U shape <-> interior peak", (0.0,), (1.0,), 2,
        _uniform_features(2), sample, log_prob, mean,
    )  # fmt: skip


# 3. A heteroscedastic normal truncated to [0, 1], piling mass against 0.
def _truncnorm_params(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    mu = 0.2 + 0.4 * x[:, 0]
    sigma = np.exp(-2.0 + 0.6 * x[:, 1])
    return mu, sigma, (0.0 - mu) / sigma, (1.0 - mu) / sigma


def _truncnorm() -> ConditionalTarget:
    def sample(rng, x):
        mu, sigma, a, b = _truncnorm_params(x)
        return stats.truncnorm.rvs(a, b, loc=mu, scale=sigma, random_state=rng)[:, None]

    def log_prob(y, x):
        mu, sigma, a, b = _truncnorm_params(x)
        return stats.truncnorm.logpdf(y[:, 0], a, b, loc=mu, scale=sigma)

    def mean(x):
        mu, sigma, a, b = _truncnorm_params(x)
        return stats.truncnorm.mean(a, b, loc=mu, scale=sigma)

    return ConditionalTarget(
        "truncnorm", "N(mu(x), sigma(x)^2) truncated to [0, 1], mu in [-0.2, 0.6], sigma in [0.07, 0.25]",
        (0.0,), (1.0,), 2, _uniform_features(2), sample, log_prob, mean,
    )  # fmt: skip


# 4. A dependent pair on the box [0, 1] x [0, 2]: y1 | x Beta, y2 / 2 | y1, x Beta around a mean set by y1 and x.
def _box_params(x: np.ndarray, y1: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    a1, b1 = np.exp(0.7 + 0.8 * x[:, 0]), np.exp(0.7 - 0.8 * x[:, 0])
    m = special.expit(3.0 * (y1 - 0.5) * (1.0 + x[:, 1]) + 0.5 * x[:, 0])
    kappa = 12.0
    return a1, b1, kappa * m, kappa * (1 - m)


def _box() -> ConditionalTarget:
    def sample(rng, x):
        a1, b1, _, _ = _box_params(x, np.zeros(len(x)))
        y1 = rng.beta(a1, b1)
        _, _, a2, b2 = _box_params(x, y1)
        return np.stack([y1, 2.0 * rng.beta(a2, b2)], axis=1)

    def log_prob(y, x):
        a1, b1, a2, b2 = _box_params(x, y[:, 0])
        return stats.beta.logpdf(y[:, 0], a1, b1) + stats.beta.logpdf(y[:, 1] / 2.0, a2, b2) - math.log(2.0)

    def mean(x):
        a1, b1, _, _ = _box_params(x, np.zeros(len(x)))
        # E[y2 | x] = 2 E[m(y1)]: Gauss-Jacobi-free quadrature on a fine grid of the Beta(a1, b1) quantiles.
        q = (np.arange(2000) + 0.5) / 2000
        y1 = stats.beta.ppf(q[None, :], a1[:, None], b1[:, None])
        m = special.expit(3.0 * (y1 - 0.5) * (1.0 + x[:, 1:2]) + 0.5 * x[:, 0:1])
        return np.stack([a1 / (a1 + b1), 2.0 * m.mean(1)], axis=1)

    return ConditionalTarget(
        "box", "(y1, y2) on [0, 1] x [0, 2]: y1 ~ Beta(x), y2 / 2 ~ Beta around logistic(y1, x) (dependent)",
        (0.0, 0.0), (1.0, 2.0), 2, _uniform_features(2), sample, log_prob, mean,
    )  # fmt: skip


# 5. One-sided: a Gamma on [0, inf) whose shape (below and above 1: unbounded or zero density at 0) and rate move.
def _gamma_params(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.exp(0.2 + 0.9 * x[:, 0]), np.exp(0.5 * x[:, 1])


def _gamma() -> ConditionalTarget:
    def sample(rng, x):
        k, rate = _gamma_params(x)
        return rng.gamma(k, 1.0 / rate)[:, None]

    def log_prob(y, x):
        k, rate = _gamma_params(x)
        return stats.gamma.logpdf(y[:, 0], k, scale=1.0 / rate)

    def mean(x):
        k, rate = _gamma_params(x)
        return k / rate

    return ConditionalTarget(
        "gamma", "Gamma(k(x), rate(x)) on [0, inf), k in [0.5, 3], rate in [0.6, 1.6]", (0.0,), (math.inf,), 2,
        _uniform_features(2), sample, log_prob, mean,
    )  # fmt: skip


CONDITIONAL_TARGETS: dict[str, Callable[[], ConditionalTarget]] = {
    "beta": _beta,
    "mixture": _mixture,
    "truncnorm": _truncnorm,
    "box": _box,
    "gamma": _gamma,
}


def conditional_target(name: str) -> ConditionalTarget:
    """Look up a target by name (``beta``, ``mixture``, ``truncnorm``, ``box``, ``gamma``).

    Raises:
        ValueError: an unknown name.

    Example:
        >>> conditional_target("gamma").high
        (inf,)
    """
    if name not in CONDITIONAL_TARGETS:
        raise ValueError(f"unknown conditional target {name!r}; choose from {sorted(CONDITIONAL_TARGETS)}")
    return CONDITIONAL_TARGETS[name]()
