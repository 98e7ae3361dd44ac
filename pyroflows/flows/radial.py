r"""An invertible radial flow: Pyro's radial map with the closed-form inverse it lacks.

Pyro's :class:`pyro.distributions.transforms.Radial` cannot invert a value it did not produce itself (pyro issue
#2718), so a flow built from it scores its own samples but not data. The radial map

.. math:: y = x + \frac{\beta\,(x - x_0)}{\alpha + r}, \qquad r = \lVert x - x_0 \rVert_2,

moves points along rays from :math:`x_0`, and along a ray :math:`\rho = \lVert y - x_0 \rVert` satisfies
:math:`\rho(\alpha + r) = r(\alpha + r + \beta)`, a quadratic in :math:`r` with exactly one non-negative root
when :math:`\beta \ge -\alpha`. | Variational Inference with Normalizing Flows (Rezende & Mohamed, 2015)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pyro.distributions.torch_transform import TransformModule
from torch import nn
from torch.distributions import constraints

__all__ = ["Radial", "radial"]


class Radial(TransformModule):
    r"""Radial flow with an exact inverse and a log-determinant that does not rely on a forward cache.

    The parameters are :math:`x_0 \in \mathbb{R}^D`, :math:`\alpha = \mathrm{softplus}(\alpha') > 0` and
    :math:`\beta = -\alpha + \mathrm{softplus}(\beta')`, which keeps :math:`\beta > -\alpha` so the map
    stays bijective.

    Args:
        input_dim: Dimension :math:`D` of the (vector) input.
        cache_size: Passed to :class:`torch.distributions.Transform` (1 caches the last pair, as in Pyro).

    Example:
        >>> t = Radial(2)
        >>> x = torch.randn(5, 2, dtype=torch.float64)
        >>> t.double()._inverse(t(x)).sub(x).abs().max() < 1e-10
        tensor(True)
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True
    sign = 1

    def __init__(self, input_dim: int, cache_size: int = 1) -> None:
        super().__init__(cache_size=cache_size)
        if input_dim < 1:
            raise ValueError(f"input_dim must be a positive integer, got {input_dim}")
        self.input_dim = input_dim
        self.x0 = nn.Parameter(torch.empty(input_dim))
        self.alpha_prime = nn.Parameter(torch.empty(1))
        self.beta_prime = nn.Parameter(torch.empty(1))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        r"""Draw the parameters as Pyro's ``Radial`` does (uniform on :math:`\pm 1/\sqrt{D}`)."""
        stdv = 1.0 / math.sqrt(self.input_dim)
        with torch.no_grad():
            self.x0.uniform_(-stdv, stdv)
            self.alpha_prime.uniform_(-stdv, stdv)
            self.beta_prime.uniform_(-stdv, stdv)

    def _alpha_beta(self) -> tuple[torch.Tensor, torch.Tensor]:
        alpha = F.softplus(self.alpha_prime)
        beta = -alpha + F.softplus(self.beta_prime)
        return alpha, beta

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        alpha, beta = self._alpha_beta()
        diff = x - self.x0
        r = diff.norm(dim=-1, keepdim=True)
        return x + beta * diff / (alpha + r)

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        alpha, beta = self._alpha_beta()
        diff = y - self.x0
        rho = diff.norm(dim=-1, keepdim=True)
        # r^2 + b r - alpha rho = 0 with b = alpha + beta - rho; pick the cancellation-free form of the root.
        b = alpha + beta - rho
        disc = torch.sqrt(b * b + 4 * alpha * rho)
        r = torch.where(b > 0, 2 * alpha * rho / (b + disc), (disc - b) / 2)
        return self.x0 + diff * (alpha + r) / (alpha + r + beta)

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        r""":math:`(D-1)\log(1 + \beta h) + \log(1 + \beta h + \beta h' r)` with :math:`h = 1/(\alpha + r)`.

        Computed from ``x`` alone, so it is right on the inverse path too (Pyro's reads the forward cache).
        """
        alpha, beta = self._alpha_beta()
        r = (x - self.x0).norm(dim=-1)
        alpha, beta = alpha.squeeze(-1), beta.squeeze(-1)
        h = 1 / (alpha + r)
        beta_h = beta * h
        # 1 + beta h + beta h' r simplifies to 1 + beta alpha h^2, positive whenever beta > -alpha.
        return (self.input_dim - 1) * torch.log1p(beta_h) + torch.log1p(beta * alpha * h * h)


def radial(input_dim: int) -> Radial:
    """Build an invertible :class:`Radial` flow (the helper-function convention of Pyro's transforms).

    Args:
        input_dim: Dimension of the input.

    Returns:
        A fresh :class:`Radial` module.

    Example:
        >>> radial(3).x0.shape
        torch.Size([3])
    """
    return Radial(input_dim)
