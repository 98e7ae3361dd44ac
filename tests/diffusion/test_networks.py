"""Noise predictors: the post's one-hot network is computed by lookup without changing the function."""

import torch
from torch import nn

from pyroflows.diffusion import MLPNoisePredictor, PostNoisePredictor


def test_post_network_lookup_equals_one_hot_linear():
    net = PostNoisePredictor(data_dim=3, steps=7)
    x, t = torch.randn(11, 3), torch.randint(1, 8, (11,))
    one_hot = nn.functional.one_hot(t - 1, num_classes=7).to(x.dtype)
    expected = net.model(torch.cat([x, net.t_encoder(one_hot)], dim=1))
    assert torch.allclose(net(x, t), expected, atol=1e-6)


def test_mlp_depends_on_the_step_and_accepts_leading_dims():
    net = MLPNoisePredictor(data_dim=2, steps=1000)
    x = torch.randn(4, 5, 2)
    out = net(x, torch.full((4, 5), 10))
    assert out.shape == (4, 5, 2)
    assert not torch.allclose(out, net(x, torch.full((4, 5), 900)))
