"""The method registry: every Captum baseline through one signature, Captum's invariants, LRP's limits."""

import pytest
import torch
from torch import nn

from pyroflows.errors import DataError
from pyroflows.evaluation import (
    DEFAULT_METHODS,
    MethodContext,
    MethodNotSupported,
    available_methods,
    make_attribute_fn,
    reduce_channels,
    register_method,
)

from ._models import images, tiny_cnn

CAPTUM_METHODS = [m for m in DEFAULT_METHODS if m not in ("per-sample", "readout")]
DETERMINISTIC = [m for m in CAPTUM_METHODS if m not in ("random", "smoothgrad")]


def _hook_count(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())


@pytest.mark.parametrize("name", CAPTUM_METHODS)
def test_every_method_returns_finite_maps_and_leaves_the_model_as_it_was(name):
    model, x = tiny_cnn(side=28), images(3, side=28)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    maps = make_attribute_fn(name)(model, x, torch.tensor([0, 1, 2]))
    assert maps.shape == (3, 28, 28) and torch.isfinite(maps).all() and not maps.requires_grad
    assert _hook_count(model) == 0 and not model.training
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    if name != "random":
        assert maps.abs().sum() > 0


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_batched_equals_one_at_a_time(name):
    model, x = tiny_cnn(side=28), images(3, side=28)
    target = torch.tensor([2, 0, 1])
    attribute = make_attribute_fn(name)
    batched = attribute(model, x, target)
    for i in range(3):
        torch.testing.assert_close(attribute(model, x[i : i + 1], target[i : i + 1])[0], batched[i])


@pytest.mark.parametrize("name", ["random", "smoothgrad"])
def test_random_methods_are_deterministic_under_their_seed(name):
    model, x = tiny_cnn(), images(2)
    first = make_attribute_fn(name, MethodContext(seed=3))(model, x, torch.tensor([0, 1]))
    again = make_attribute_fn(name, MethodContext(seed=3))(model, x, torch.tensor([0, 1]))
    other = make_attribute_fn(name, MethodContext(seed=4))(model, x, torch.tensor([0, 1]))
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_saliency_is_the_absolute_weight_of_a_linear_model():
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    maps = make_attribute_fn("saliency")(model, images(2, side=4), torch.tensor([1, 1]))
    torch.testing.assert_close(maps[0], model[1].weight[1].detach().abs().reshape(4, 4))


def test_integrated_gradients_is_complete():
    model, x = tiny_cnn(), images(2)
    target = torch.tensor([0, 2])
    maps = make_attribute_fn("integrated-gradients", n_steps=200)(model, x, target)
    # Completeness: the map sums to f(x) - f(0).
    gap = (model(x) - model(torch.zeros_like(x)))[torch.arange(2), target].detach()
    torch.testing.assert_close(maps.sum(dim=(1, 2)), gap, atol=2e-2, rtol=2e-2)


def test_lrp_runs_through_flatten_and_conserves_relevance_without_biases():
    model = tiny_cnn()
    for module in model.modules():
        if getattr(module, "bias", None) is not None:
            nn.init.zeros_(module.bias)
    x = images(2)
    maps = make_attribute_fn("lrp")(model, x, torch.tensor([0, 1]))
    torch.testing.assert_close(maps.sum(dim=(1, 2)), model(x)[[0, 1], [0, 1]].detach(), atol=1e-4, rtol=1e-3)


def test_lrp_handles_adaptive_max_pooling_like_max_pooling():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.ReLU(), nn.AdaptiveMaxPool2d(1), nn.Flatten(),
        nn.Linear(4, 2, bias=False),
    ).eval()  # fmt: skip
    x = images(2)
    maps = make_attribute_fn("lrp")(model, x, torch.tensor([0, 1]))
    assert not hasattr(model[2], "rule")  # the rule is set on a copy only
    torch.testing.assert_close(maps.sum(dim=(1, 2)), model(x)[[0, 1], [0, 1]].detach(), atol=1e-4, rtol=1e-3)


class _Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(64, 2))

    def forward(self, x):
        return self.head(x + self.conv(x))


def test_lrp_on_a_residual_model_is_reported_as_not_supported():
    with pytest.raises(MethodNotSupported, match="Captum's LRP does not support this model"):
        make_attribute_fn("lrp")(_Residual(), images(1, side=8), torch.tensor([0]))


def test_registry_names_and_errors():
    assert set(DEFAULT_METHODS) <= set(available_methods())
    with pytest.raises(DataError, match="unknown attribution method 'gradcam'; choose from"):
        make_attribute_fn("gradcam")
    with pytest.raises(ValueError, match="already registered"):
        register_method("saliency", lambda context: None, "again")
    with pytest.raises(DataError, match="unknown layer 'nope' for Grad-CAM"):
        make_attribute_fn("grad-cam", MethodContext(cam_layer="nope"))(tiny_cnn(), images(1), torch.tensor([0]))
    with pytest.raises(MethodNotSupported, match="no nn.Conv2d"):
        make_attribute_fn("grad-cam")(nn.Sequential(nn.Flatten(), nn.Linear(16, 2)), images(1, 4), torch.tensor([0]))
    assert reduce_channels(torch.ones(1, 3, 2, 2)).tolist() == [[[3.0, 3.0], [3.0, 3.0]]]


def test_per_sample_bottleneck_through_the_registry_reestimates_on_each_model():
    model, x = tiny_cnn(), images(2)
    context = MethodContext(layer="1", data=images(40, seed=5), options={"steps": 2, "n_steps": 7})
    attribute = make_attribute_fn("per-sample", context)  # "n_steps" (an IG option) is not passed to it
    maps = attribute(model, x, torch.tensor([0, 1]))
    assert maps.shape == (2, 16, 16) and (maps >= 0).all() and maps.sum() > 0
    other = tiny_cnn(seed=9)
    assert not torch.allclose(attribute(other, x, torch.tensor([0, 1])), maps)
    with pytest.raises(DataError, match="needs context.layer and context.data"):
        make_attribute_fn("per-sample")(model, x, torch.tensor([0, 1]))
