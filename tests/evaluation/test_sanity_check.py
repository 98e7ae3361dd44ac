"""Cascading randomisation: the caller's model is untouched, model-independent maps fail, gradients pass."""

import pytest
import torch
from skimage.metrics import structural_similarity

from pyroflows.errors import DataError
from pyroflows.evaluation import cascading_randomization, make_attribute_fn, map_ssim, randomizable_layers

from ._models import images, tiny_cnn


def _fixed_map(model, x, target):
    return torch.linspace(0, 1, x.shape[-1] ** 2).reshape(x.shape[-2:]).expand(len(x), -1, -1)


def test_users_model_is_left_unchanged_and_layers_go_from_the_output():
    model, x = tiny_cnn(), images(3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    check = cascading_randomization(model, x, 0, make_attribute_fn("saliency"))
    assert check.layers == ["8", "6", "3", "0"]
    assert check.ssim.shape == (3, 4) and check.maps.shape == (4, 3, 16, 16)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_model_independent_map_fails_and_gradient_passes():
    model, x = tiny_cnn(seed=1), images(4, seed=1)
    fixed = cascading_randomization(model, x, 1, _fixed_map)
    torch.testing.assert_close(fixed.ssim, torch.ones(4, 4).double())
    gradient = cascading_randomization(model, x, 1, make_attribute_fn("saliency"))
    # Destroying every layer leaves the gradient map unrelated to the original.
    assert gradient.mean()[-1] < 0.5
    assert gradient.mean()[-1] < gradient.mean()[0] + 1e-9


def test_reinitialisation_is_seeded_and_leaves_global_rng_alone():
    model, x = tiny_cnn(), images(2)
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    first = cascading_randomization(model, x, 0, make_attribute_fn("saliency"), seed=7)
    assert torch.equal(torch.rand(1), expected_next)
    second = cascading_randomization(model, x, 0, make_attribute_fn("saliency"), seed=7)
    assert torch.equal(first.ssim, second.ssim)


def test_map_ssim_is_scikit_image_on_minmax_normalised_maps():
    a, b = torch.rand(2, 16, 16), torch.rand(2, 16, 16)
    expected = [
        structural_similarity(
            ((x - x.min()) / (x.max() - x.min())).double().numpy(),
            ((y - y.min()) / (y.max() - y.min())).double().numpy(),
            data_range=1.0,
        )
        for x, y in zip(a, b, strict=True)
    ]
    torch.testing.assert_close(map_ssim(a, b), torch.tensor(expected).double())
    # Positive rescaling and shifting do not change the normalised map.
    torch.testing.assert_close(map_ssim(a, 5 * a - 2), torch.ones(2).double())


def test_explicit_layers_and_errors():
    model, x = tiny_cnn(), images(2)
    assert randomizable_layers(model) == ["0", "3", "6", "8"]
    check = cascading_randomization(model, x, 0, make_attribute_fn("saliency"), layers=["8"])
    assert check.layers == ["8"]
    with pytest.raises(DataError, match=r"unknown layer names \['classifier'\]"):
        cascading_randomization(model, x, 0, make_attribute_fn("saliency"), layers=["classifier"])
    with pytest.raises(DataError, match=r"attributions must be \[N, H, W\]"):
        cascading_randomization(model, x, 0, lambda m, inputs, t: torch.zeros(2, 4, 4))
    with pytest.raises(DataError, match="maps to compare must both be"):
        map_ssim(torch.rand(2, 4, 4), torch.rand(2, 4, 5))
