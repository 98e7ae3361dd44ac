r"""The power-law exponent of a density at each bound, estimated from the points nearest it (Hill's estimator).

Near a bound the distance :math:`t` of a point from it has :math:`F(t) = P(T \le t) \approx c\,t^a`: :math:`a = 1`
is a finite, non-zero density at the bound (the post's piecewise-uniform target), :math:`a > 1` a density that
vanishes there (Beta(2, 5) has :math:`a = 2` at 0 and :math:`a = 5` at 1), :math:`a < 1` one that diverges (the
arcsine law, :math:`a = 1/2`). Given the :math:`(k+1)`-th smallest distance :math:`t_{(k+1)}`, the ratios
:math:`t_{(i)} / t_{(k+1)}` of the :math:`k` closer points are independent with distribution function :math:`u^a`
when the power law holds exactly below :math:`t_{(k+1)}`, so :math:`\log(t_{(k+1)} / t_{(i)})` is exponential with
rate :math:`a` and the maximum-likelihood estimate is Hill's

.. math:: \hat a = \frac{k}{\sum_{i=1}^{k} \log\big(t_{(k+1)} / t_{(i)}\big)}, \qquad
    \operatorname{se}(\log \hat a) \approx 1 / \sqrt{k}.

The window :math:`k = \lceil n^{2/3} \rceil` is where the test's own bias stops depending on :math:`n` (the
mean-squared-error-optimal order; Hall, 1982). In units of the interval's width, a smooth density with :math:`p_0 =
p(low) > 0` and relative slope :math:`r = p'(low) / p_0` has :math:`F(t) \approx p_0 t (1 + r t / 2)`, so
:math:`\hat a \to 1 + r\,t_{(k+1)} / 4` with :math:`t_{(k+1)} \approx k / (n p_0)`: a bias of :math:`r k^{3/2} /
(4 n p_0)` standard errors, which is :math:`r / (4 p_0)` at :math:`k = n^{2/3}` whatever :math:`n`, under one
standard error for :math:`|r| \le 4 p_0`. A bound is *flat* (:math:`\hat a` consistent with 1) when :math:`|\log
\hat a| \le z / \sqrt{k}` with :math:`z` = :data:`FLAT_Z` = 3: an exactly flat bound is called otherwise 0.3% of the
time, and what is called flat is :math:`a` within :math:`e^{\pm 3 / \sqrt{k}}` (0.83-1.20 on 4,500 points,
0.73-1.36 on 900, where Beta(2, 5)'s 2 is 6.7 standard errors away). :func:`~pyroflows.flows.fit` uses it for
``ends="data"`` (:data:`~pyroflows.flows.families.SPLINE_ENDS`): secant spline ends and a strong tail prior at a
flat bound, free ends and a weak prior elsewhere (``benchmarks/RESULTS.md``, "spline ends chosen per bound").
| A simple general approach to inference about the tail of a distribution (Hill, 1975); On some simple estimates
of an exponent of regular variation (Hall, 1982)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["BoundExponent", "FLAT_Z", "hill_exponent", "exponent_window", "bound_exponents"]

#: Standard errors of :math:`\log \hat a` within which a bound counts as flat (:math:`a = 1`).
FLAT_Z = 3.0


@dataclass(frozen=True)
class BoundExponent:
    r"""The estimated exponent :math:`a` of :math:`F(t) \approx c\,t^a` at one bound.

    Attributes:
        a: Hill's estimate :math:`\hat a` (0 when more than ``k`` points lie on the bound itself: an atom there;
            ``nan`` for an infinite bound).
        k: The number of nearest points it was computed from (0 for an infinite bound).
        z: :math:`\log(\hat a) \sqrt{k}`, the distance of :math:`\hat a` from 1 in standard errors of its log.
    """

    a: float
    k: int
    z: float

    @property
    def se(self) -> float:
        r"""The standard error of :math:`\hat a`, :math:`\hat a / \sqrt{k}`."""
        return self.a / math.sqrt(self.k) if self.k else math.nan

    @property
    def flat(self) -> bool:
        r"""Whether :math:`\hat a` is consistent with 1 (within :data:`FLAT_Z` standard errors of its log).

        Example:
            >>> BoundExponent(a=1.1, k=100, z=math.log(1.1) * 10).flat, BoundExponent(2.0, 100, 6.93).flat
            (True, False)
        """
        return self.k > 0 and abs(self.z) <= FLAT_Z


def exponent_window(n: int) -> int:
    r"""The number of nearest points the estimate uses: :math:`\lceil n^{2/3} \rceil`, at most :math:`n - 1`.

    Example:
        >>> exponent_window(900), exponent_window(4500), exponent_window(2)
        (94, 273, 1)
    """
    return max(0, min(n - 1, math.ceil(n ** (2 / 3) - 1e-9)))


def hill_exponent(distance: torch.Tensor, k: int | None = None) -> BoundExponent:
    r"""Hill's estimate of :math:`a` in :math:`P(T \le t) \approx c\,t^a` from distances :math:`t_i \ge 0` to a bound.

    Args:
        distance: Distances of the points from the bound, shape ``(n,)``, non-negative.
        k: The number of nearest points to use (default :func:`exponent_window`), at most ``n - 1``.

    Returns:
        The estimate, its window and its distance from 1 in standard errors of its log. Points on the bound itself
        (distance 0) make :math:`\hat a = 0` (a density too steep to estimate: not flat).

    Example:
        >>> t = torch.rand(20000, generator=torch.Generator().manual_seed(0), dtype=torch.float64) ** (1 / 3)
        >>> e = hill_exponent(t)  # P(T <= t) = t^3
        >>> e.k, abs(e.a - 3) < 4 * e.se
        (737, True)
    """
    n = distance.numel()
    k = exponent_window(n) if k is None else k
    if not 1 <= k < n:
        raise ValueError(f"k must be in [1, {n - 1}] for {n} distances, got {k}")
    t = torch.topk(distance.reshape(-1).to(torch.float64), k + 1, largest=False).values  # ascending
    if not t[k] > 0:
        return BoundExponent(a=0.0, k=k, z=-math.inf)
    total = float((torch.log(t[k]) - torch.log(t[:k])).sum())  # inf when a point is on the bound
    if total <= 0:  # the k + 1 nearest points all at one distance: a density too steep to read an exponent from
        return BoundExponent(a=math.inf, k=k, z=math.inf)
    if not math.isfinite(total):
        return BoundExponent(a=0.0, k=k, z=-math.inf)
    a = k / total
    return BoundExponent(a=a, k=k, z=math.log(a) * math.sqrt(k))


def bound_exponents(
    x: torch.Tensor, low: torch.Tensor, high: torch.Tensor
) -> list[tuple[BoundExponent, BoundExponent]]:
    """The exponent at the lower and the upper bound of each dimension of ``x`` (shape ``(n, dim)``).

    An infinite bound has none (``a = nan``, ``k = 0``, not flat); fewer than two points give none either.

    Example:
        >>> u = torch.rand(5000, 1, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        >>> [(round(lo.a, 1), round(hi.a, 1)) for lo, hi in bound_exponents(u, torch.zeros(1), torch.ones(1))]
        [(1.0, 1.0)]
        >>> [(lo.flat, hi.flat) for lo, hi in bound_exponents(u**2, torch.zeros(1), torch.ones(1))]
        [(False, True)]
    """
    none = BoundExponent(a=math.nan, k=0, z=math.nan)
    out = []
    for d in range(x.shape[1]):
        column = x[:, d].to(torch.float64)
        lo, hi = float(low.reshape(-1)[d]), float(high.reshape(-1)[d])
        ends = []
        for bound, distance in ((lo, column - lo), (hi, hi - column)):
            ends.append(hill_exponent(distance.clamp(min=0)) if math.isfinite(bound) and column.numel() > 1 else none)
        out.append((ends[0], ends[1]))
    return out
