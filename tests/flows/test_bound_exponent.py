"""Hill's estimate of the density's power-law exponent at a bound, and the flat-bound decision built on it."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pyroflows.flows.bound_exponent import FLAT_Z, BoundExponent, bound_exponents, exponent_window, hill_exponent


@pytest.mark.parametrize("a", [0.5, 1.0, 2.0, 5.0])
def test_the_estimate_recovers_the_exponent_of_an_exact_power_law_at_either_bound(a):
    """Beta(a, 1) has P(X <= t) = t^a exactly, so Hill's estimate is a's maximum-likelihood estimate: within 4 of its
    standard errors a / sqrt(k) (a miss has probability 6e-5 per draw); Beta(1, a) is the same at the upper bound."""
    rng = np.random.default_rng(int(10 * a))
    x = torch.as_tensor(rng.beta(a, 1.0, 20000))
    lower = hill_exponent(x)
    upper = hill_exponent(1 - torch.as_tensor(rng.beta(1.0, a, 20000)))
    for e in (lower, upper):
        assert e.k == exponent_window(20000) == 737
        assert abs(e.a - a) < 4 * a / math.sqrt(e.k)
        assert e.se == pytest.approx(e.a / math.sqrt(e.k), rel=1e-12)
        assert e.z == pytest.approx(math.log(e.a) * math.sqrt(e.k), rel=1e-12)
        assert e.flat == (a == 1.0)  # 0.5, 2 and 5 are 19 to 44 standard errors away at k = 737


def test_the_standard_error_is_calibrated_at_a_flat_bound():
    """Under a = 1 (uniform data) z is close to standard normal: over 400 draws its mean within 4 standard errors
    of 0 (4 / sqrt(400) = 0.2) and its standard deviation within 15% of 1 (that of a sample of 400 is 1 +- 0.035)."""
    rng = np.random.default_rng(0)
    z = np.array([hill_exponent(torch.as_tensor(rng.uniform(size=1000))).z for _ in range(400)])
    assert abs(z.mean()) < 0.2
    assert 0.85 < z.std() < 1.15
    assert (np.abs(z) > FLAT_Z).mean() < 0.02  # 0.3% expected


def test_the_decision_is_deterministic_and_reads_each_bound_and_dimension():
    rng = np.random.default_rng(3)
    # Column 0: uniform (flat at both bounds); column 1: Beta(2, 5) on [0, 1] (vanishing at both).
    x = torch.as_tensor(np.stack([rng.uniform(size=900), rng.beta(2, 5, 900)], 1))
    low, high = torch.zeros(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64)
    first, second = bound_exponents(x, low, high), bound_exponents(x.clone(), low, high)
    assert first == second
    assert [[e.flat for e in pair] for pair in first] == [[True, True], [False, False]]
    assert 1.5 < first[1][0].a < 2.5 and first[1][1].a > 3  # a = 2 at 0; a = 5 at 1, read over a wider window


def test_points_on_a_bound_infinite_bounds_and_tiny_samples_are_never_flat_and_never_nan():
    on_bound = torch.cat([torch.zeros(5, dtype=torch.float64), torch.linspace(0.1, 1, 95, dtype=torch.float64)])
    e = hill_exponent(on_bound)
    assert (e.a, e.flat) == (0.0, False)
    atoms = hill_exponent(torch.zeros(50, dtype=torch.float64))  # more than k points on the bound
    assert (atoms.a, atoms.flat) == (0.0, False)
    ties = hill_exponent(torch.full((50,), 0.5, dtype=torch.float64))
    assert (ties.a, ties.flat) == (math.inf, False)
    x = torch.rand(100, 1, dtype=torch.float64)
    ((lower, upper),) = bound_exponents(x, torch.zeros(1), torch.tensor([math.inf]))
    assert lower.k > 0 and upper.k == 0 and math.isnan(upper.a) and not upper.flat
    ((one_lower, one_upper),) = bound_exponents(x[:1], torch.zeros(1), torch.ones(1))
    assert not one_lower.flat and not one_upper.flat


def test_the_window_and_a_bad_window_are_checked():
    assert [exponent_window(n) for n in (2, 3, 8, 1000, 1001)] == [1, 2, 4, 100, 101]
    with pytest.raises(ValueError, match=r"k must be in \[1, 9\] for 10 distances, got 10"):
        hill_exponent(torch.rand(10), k=10)


def test_flat_means_within_flat_z_standard_errors_of_one():
    at = math.exp(FLAT_Z / 10)  # k = 100: se(log a) = 0.1
    assert BoundExponent(a=at * 0.999, k=100, z=math.log(at * 0.999) * 10).flat
    assert not BoundExponent(a=at * 1.001, k=100, z=math.log(at * 1.001) * 10).flat
    assert not BoundExponent(a=math.nan, k=0, z=math.nan).flat
