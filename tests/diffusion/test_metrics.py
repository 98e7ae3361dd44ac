"""The energy distance against a loop over all pairs."""

import itertools

import numpy as np
import pytest
import torch

from pyroflows.diffusion import energy_distance


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
