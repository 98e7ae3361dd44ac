"""The energy distance against a loop over all pairs; the noise floor and the quality ratio against their
expectations."""

import itertools
import math

import numpy as np
import pytest
import torch

from pyroflows.diffusion import energy_distance, energy_distance_ratio, noise_floor


def _naive(x, y):
    def mean_dist(a, b):
        return np.mean([np.linalg.norm(p - q) for p, q in itertools.product(a, b)])

    return 2 * mean_dist(x, y) - mean_dist(x, x) - mean_dist(y, y)


def test_matches_all_pairs_loop():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(17, 3)), rng.normal(0.5, 1.0, size=(11, 3))
    assert float(energy_distance(x, y, chunk=4)) == pytest.approx(_naive(x, y), rel=1e-12)
    assert float(energy_distance(torch.tensor(x), torch.tensor(y))) == pytest.approx(_naive(x, y), rel=1e-12)


def test_zero_symmetric_and_sensitive():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(50, 2)), rng.normal(size=(60, 2))
    assert float(energy_distance(x, x)) == pytest.approx(0.0, abs=1e-12)
    assert float(energy_distance(x, y)) == pytest.approx(float(energy_distance(y, x)))
    assert float(energy_distance(x, y + 3.0)) > 10 * float(energy_distance(x, y))


def test_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="expected shapes"):
        energy_distance(np.zeros((3, 2)), np.zeros((3, 3)))


def _standard_normal(n, seed):
    return np.random.default_rng(seed).normal(size=(n, 1))


def test_noise_floor_matches_its_expectation():
    # V-statistic with self-pairs: E = 2 delta - 2 (n - 1) / n delta = 2 delta / n, delta = E|X - X'| = 2 / sqrt(pi).
    n = 400
    floor, se = noise_floor(_standard_normal, n, pairs=200)
    expected = 2 * (2 / np.sqrt(np.pi)) / n
    assert abs(floor - expected) < 4 * se
    assert se < 0.15 * expected


def test_ratio_of_a_perfect_model_is_one_and_of_a_shifted_one_large():
    rng = np.random.default_rng(5)
    perfect = energy_distance_ratio(lambda n: rng.normal(size=(n, 1)), _standard_normal, 300, pairs=60, floor_pairs=60)
    assert abs(perfect.ratio - 1.0) < 4 * perfect.se
    assert perfect.pairs == 60 and perfect.floor_pairs == 60
    assert perfect.ratio == pytest.approx(perfect.distance / perfect.floor)
    # Shift by 1: E[V] = 2 E|X - Y| - 2 (n - 1) / n E|X - X'|, with X - Y ~ N(1, 2) a folded normal.
    shifted = energy_distance_ratio(lambda n: rng.normal(1.0, 1.0, size=(n, 1)), _standard_normal, 300, pairs=10)
    delta = 2 / np.sqrt(np.pi)
    folded = np.sqrt(2) * np.sqrt(2 / np.pi) * np.exp(-0.25) + (1 - 2 * 0.5 * math.erfc(1 / 2))
    expected = (2 * folded - 2 * (299 / 300) * delta) / (2 * delta / 300)
    assert abs(shifted.ratio - expected) < 4 * shifted.se
    assert shifted.ratio > 50


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"n": 1}, "n: expected"), ({"pairs": 1}, "pairs: expected"), ({"floor_pairs": 0}, "floor_pairs: expected"),
     ({"pairs": 1000}, "fewer than 1000")],
)  # fmt: skip
def test_ratio_rejects_bad_counts(kwargs, match):
    with pytest.raises(ValueError, match=match):
        energy_distance_ratio(lambda n: np.zeros((n, 1)), _standard_normal, **kwargs)


def test_ratio_reuses_a_given_floor():
    floor = noise_floor(_standard_normal, 100, pairs=5)
    rng = np.random.default_rng(6)
    q = energy_distance_ratio(lambda n: rng.normal(size=(n, 1)), _standard_normal, 100, pairs=4, floor=floor)
    assert q.floor == floor[0] and q.floor_pairs == 0
    with pytest.raises(ValueError, match="floor: expected a positive"):
        energy_distance_ratio(lambda n: rng.normal(size=(n, 1)), _standard_normal, 100, floor=(0.0, 0.0))
