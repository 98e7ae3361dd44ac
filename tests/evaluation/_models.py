"""Small models whose relevance is known, shared by the evaluation tests."""

from __future__ import annotations

import torch
from torch import nn


class LinearPixelModel(nn.Module):
    """Two logits, ``l_0 = w . x`` and ``l_1 = -w . x``: pixel i contributes ``w_i (x_i - b_i)`` to the drop of
    ``l_0`` when replaced by ``b_i``, so that is the true relevance under a baseline ``b``. The weights sum to
    zero, so a constant (fully mean-replaced) image has both probabilities 1/2."""

    def __init__(self, side: int, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        weight = torch.randn(side * side, generator=generator, dtype=torch.float64)
        self.weight = nn.Parameter(0.5 * (weight - weight.mean()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logit = x.flatten(1) @ self.weight
        return torch.stack([logit, -logit], dim=1)

    def relevance(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """True relevance for replacement by each image's mean: ``[N, H, W]``, signed for the target."""
        side = x.shape[-1]
        centred = x[:, 0] - x.mean(dim=(1, 2, 3))[:, None, None]
        sign = (1 - 2 * target).to(x.dtype)[:, None, None]
        return sign * self.weight.detach().reshape(side, side) * centred


def tiny_cnn(seed: int = 0, side: int = 16, classes: int = 3) -> nn.Module:
    """A small conv net with ``nn.ReLU`` modules and an ``nn.Flatten``, in eval mode."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 8, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * (side // 2) ** 2, 16),
        nn.ReLU(),
        nn.Linear(16, classes),
    ).eval()


def images(n: int, side: int = 16, seed: int = 0, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``n`` uniform images ``[n, 1, side, side]`` in ``dtype`` (default: torch's default dtype, as the models)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, side, side, generator=generator, dtype=dtype)
