"""Sensitivity-N: exact correlations on a linear model, random and constant maps, batching, errors."""

import pytest
import torch

from pyroflows.errors import DataError
from pyroflows.evaluation import default_sensitivity_ns, pearson_rows, sensitivity_n

from ._models import LinearPixelModel, images, tiny_cnn


@pytest.fixture
def linear_case():
    model = LinearPixelModel(8)
    x = images(5, side=8, dtype=torch.float64)
    target = torch.tensor([0, 1, 0, 1, 0])
    return model, x, target, model.relevance(x, target)


@pytest.mark.parametrize("tile_size", [1, 2])
def test_true_relevance_correlates_perfectly_and_its_negative_anti_correlates(linear_case, tile_size):
    model, x, target, truth = linear_case
    ns = [tile_size**2 * k for k in (1, 3, 8)]
    # The logit drop of a linear model is exactly the summed relevance of the removed pixels.
    perfect = sensitivity_n(model, x, truth, target, tile_size=tile_size, ns=ns, n_masks=30)
    inverted = sensitivity_n(model, x, -truth, target, tile_size=tile_size, ns=ns, n_masks=30)
    torch.testing.assert_close(perfect.correlation, torch.ones(5, 3).double())
    torch.testing.assert_close(inverted.correlation, -torch.ones(5, 3).double())
    assert perfect.ns.tolist() == ns
    torch.testing.assert_close(perfect.fraction, torch.tensor(ns).double() / 64)


def test_random_map_correlates_near_zero(linear_case):
    model, x, target, _ = linear_case
    random_map = torch.rand(5, 8, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    result = sensitivity_n(model, x, random_map, target, ns=[4, 16, 32], n_masks=200)
    assert result.correlation.abs().mean() < 0.2
    assert result.mean().shape == (3,)


def test_constant_map_gives_nan(linear_case):
    model, x, target, _ = linear_case
    result = sensitivity_n(model, x, torch.ones(5, 8, 8), target, ns=[4, 16], n_masks=10)
    assert torch.isnan(result.correlation).all()
    assert torch.isnan(result.mean()).all()


def test_batched_equals_one_at_a_time():
    model, x = tiny_cnn(), images(4)
    maps = torch.rand(4, 16, 16)
    target = torch.tensor([0, 1, 2, 1])
    batched = sensitivity_n(model, x, maps, target, tile_size=4, ns=[16, 64], n_masks=10, batch_size=13)
    for i in range(4):
        single = sensitivity_n(model, x[i : i + 1], maps[i : i + 1], target[i], tile_size=4, ns=[16, 64], n_masks=10)
        torch.testing.assert_close(single.correlation[0], batched.correlation[i])


def test_same_seed_same_masks_and_other_seed_other_masks():
    model, x = tiny_cnn(), images(2)
    maps = torch.rand(2, 16, 16)
    first = sensitivity_n(model, x, maps, 0, ns=[20], n_masks=10, seed=5)
    again = sensitivity_n(model, x, maps, 0, ns=[20], n_masks=10, seed=5)
    other = sensitivity_n(model, x, maps, 0, ns=[20], n_masks=10, seed=6)
    assert torch.equal(first.correlation, again.correlation)
    assert not torch.equal(first.correlation, other.correlation)


def test_default_ns_are_log_spaced_tile_multiples_up_to_80_percent():
    ns = default_sensitivity_ns(49, 8)
    assert ns[0] == 64 and ns[-1] == 39 * 64
    assert all(n % 64 == 0 for n in ns) and ns == sorted(set(ns))
    assert default_sensitivity_ns(56 * 56, 1)[-1] == round(0.8 * 56 * 56)


def test_pearson_rows_matches_numpy():
    a, b = torch.randn(3, 20, dtype=torch.float64), torch.randn(3, 20, dtype=torch.float64)
    expected = torch.tensor([torch.corrcoef(torch.stack([a[i], b[i]]))[0, 1] for i in range(3)])
    torch.testing.assert_close(pearson_rows(a, b), expected)


def test_errors_name_the_problem():
    model, x, maps = tiny_cnn(), images(2), torch.rand(2, 16, 16)
    with pytest.raises(DataError, match="positive multiple of tile_size\\*\\*2 = 16"):
        sensitivity_n(model, x, maps, 0, tile_size=4, ns=[10])
    with pytest.raises(DataError, match="at most 256 pixels, got 512"):
        sensitivity_n(model, x, maps, 0, ns=[512])
    with pytest.raises(DataError, match="n_masks must be at least 3"):
        sensitivity_n(model, x, maps, 0, n_masks=2)
    with pytest.raises(DataError, match="tile_size=3 does not divide"):
        sensitivity_n(model, x, maps, 0, tile_size=3)
    with pytest.raises(DataError, match=r"attributions must be \[N, H, W\]"):
        sensitivity_n(model, x, maps[:, :8], 0)
    with pytest.raises(DataError, match="target: classes outside 0..2"):
        sensitivity_n(model, x, maps, -1)
