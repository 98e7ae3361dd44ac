r"""Noise predictors :math:`\epsilon_\theta(x_t, t)` for :class:`~pyroflows.diffusion.DDPM`.

Both take ``x_t`` of shape ``(N, D)`` and integer steps ``t`` of shape ``(N,)`` in ``1..T`` and return a tensor
shaped like ``x_t``.

Example:
    >>> import torch
    >>> net = MLPNoisePredictor(data_dim=3, steps=10)
    >>> net(torch.zeros(5, 3), torch.full((5,), 4)).shape
    torch.Size([5, 3])
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

__all__ = ["MLPNoisePredictor", "PostNoisePredictor", "SinusoidalEmbedding", "make_network", "NETWORKS"]


class SinusoidalEmbedding(nn.Module):
    r"""Transformer-style features of the step: :math:`[\sin(\omega_k s), \cos(\omega_k s)]_k` with
    :math:`s = 1000\, t / T`, so a step means the same noise fraction whatever T is.

    Args:
        dim: Embedding size (even).
        steps: T.
    """

    frequencies: torch.Tensor

    def __init__(self, dim: int, steps: int) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(f"dim: the sinusoidal embedding size must be even, got {dim}")
        self.steps = int(steps)
        half = dim // 2
        self.register_buffer("frequencies", torch.exp(-math.log(10000.0) * torch.arange(half) / half))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        s = (t.to(self.frequencies.dtype) * (1000.0 / self.steps)).unsqueeze(-1) * self.frequencies
        return torch.cat([s.sin(), s.cos()], dim=-1)


class MLPNoisePredictor(nn.Module):
    """The default: an MLP on ``[x_t, embed(t)]`` with SiLU activations, the step embedded sinusoidally and passed
    through a small learned layer.

    Its cost per call does not depend on T. The default size (128 wide, 4 hidden layers) beat 64 x 3 at T = 10
    (mean energy-distance ratio over 3 training seeds, both with the benchmark's first, 3-pair estimator, whose
    floor was low by about 1.8x, so compare them with each other only: two moons 2.92 vs 3.30, a 5 x 5 grid of
    Gaussians 3.14 vs 4.42) at about 1.6x the training time.

    Args:
        data_dim: D.
        steps: T.
        hidden: Width of the hidden layers.
        depth: Number of hidden layers.
        embedding_dim: Size of the sinusoidal step embedding.
    """

    def __init__(self, data_dim: int, steps: int, hidden: int = 128, depth: int = 4, embedding_dim: int = 32) -> None:
        super().__init__()
        self.config = {"data_dim": data_dim, "steps": steps, "hidden": hidden, "depth": depth,
                       "embedding_dim": embedding_dim}  # fmt: skip
        self.embedding = nn.Sequential(SinusoidalEmbedding(embedding_dim, steps), nn.Linear(embedding_dim, hidden),
                                       nn.SiLU())  # fmt: skip
        layers: list[nn.Module] = []
        width = data_dim + hidden
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        layers.append(nn.Linear(width, data_dim))
        self.layers = nn.Sequential(*layers)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.layers(torch.cat([x_t, self.embedding(t)], dim=-1))


class PostNoisePredictor(nn.Module):
    """The post's network: one-hot(t - 1) -> ``Linear(T, 1)``, concatenated with ``x_t``, then
    100-100-100-20 LeakyReLU layers.

    The one-hot product is computed as a column lookup of the same ``Linear(T, 1)`` weights (the same function
    and parameters), so a call costs O(1) in T instead of O(T).

    Args:
        data_dim: D.
        steps: T.
    """

    def __init__(self, data_dim: int, steps: int) -> None:
        super().__init__()
        self.config = {"data_dim": data_dim, "steps": steps}
        self.t_encoder = nn.Linear(steps, 1)
        self.model = nn.Sequential(
            nn.Linear(data_dim + 1, 100),
            nn.LeakyReLU(),
            nn.Linear(100, 100),
            nn.LeakyReLU(),
            nn.Linear(100, 100),
            nn.LeakyReLU(),
            nn.Linear(100, 20),
            nn.LeakyReLU(),
            nn.Linear(20, data_dim),
        )

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        # weight[0, t - 1] + bias == Linear(one_hot(t - 1)), without building the (N, T) one-hot matrix.
        t_embedding = (self.t_encoder.weight[0, t - 1] + self.t_encoder.bias).unsqueeze(-1)
        return self.model(torch.cat([x_t, t_embedding.to(x_t.dtype)], dim=-1))


NETWORKS: dict[str, type[nn.Module]] = {"mlp": MLPNoisePredictor, "post": PostNoisePredictor}


def make_network(name: str, data_dim: int, steps: int, **kwargs: Any) -> nn.Module:
    """Build a noise predictor by name: ``mlp`` (default) or ``post``.

    Raises:
        ValueError: unknown name.

    Example:
        >>> type(make_network("post", 2, 10)).__name__
        'PostNoisePredictor'
    """
    if name not in NETWORKS:
        raise ValueError(f"unknown network {name!r}; expected one of {', '.join(sorted(NETWORKS))}")
    return NETWORKS[name](data_dim, steps, **kwargs)
