r"""An elementwise map with a separate learnable slope in each tail.

Under the squash onto :math:`[low, high]`, the tails of a distribution in logit space decide how the density behaves
at the ends: a density that decays like :math:`e^{-a|x|}` in the lower tail becomes :math:`\propto (y - low)^{a-1}`
near ``low``. A Logistic base has :math:`a = 1` (a finite, non-zero density at the ends), a Normal base an
infinitely fast decay (density zero at the ends), while a U-shaped Beta(0.5, 0.5) needs :math:`a = 1/2` and Beta(1, 3)
needs :math:`a = 3` at its upper end. Radial and spline layers are asymptotically shifts, so they cannot change
:math:`a`; this layer can, independently at each end:

.. math:: y = m x + d\sqrt{x^2 + 1} + c, \qquad m = \tfrac{s_+ + s_-}{2},\; d = \tfrac{s_+ - s_-}{2},

with slopes :math:`s_\pm = e^{\ell_\pm} > 0`. Its derivative lies between :math:`s_-` and :math:`s_+`, and the
inverse is the root of a quadratic.
"""

from __future__ import annotations

import torch
from pyro.distributions.torch_transform import TransformModule
from torch import nn
from torch.distributions import constraints

__all__ = ["TwoSlopeAffine", "two_slope_affine"]


class TwoSlopeAffine(TransformModule):
    r"""Smooth elementwise map, affine with one slope as :math:`x \to -\infty` and another as :math:`x \to \infty`.

    The slopes are :math:`s_-` and :math:`s_+`; the map is initialised to the identity.

    Args:
        input_dim: Dimension of the (vector) input.
        cache_size: As for :class:`torch.distributions.Transform`.

    Example:
        >>> t = TwoSlopeAffine(1).double()
        >>> with torch.no_grad():
        ...     _ = t.log_slope_lower.fill_(-0.7)
        >>> x = torch.linspace(-30, 30, 7, dtype=torch.float64)[:, None]
        >>> bool((t._inverse(t(x)) - x).abs().max() < 1e-9)
        True
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True
    sign = 1

    def __init__(self, input_dim: int, cache_size: int = 1) -> None:
        super().__init__(cache_size=cache_size)
        self.input_dim = input_dim
        self.log_slope_lower = nn.Parameter(torch.zeros(input_dim))
        self.log_slope_upper = nn.Parameter(torch.zeros(input_dim))
        self.shift = nn.Parameter(torch.zeros(input_dim))

    def _coefficients(self) -> tuple[torch.Tensor, torch.Tensor]:
        lower, upper = self.log_slope_lower.exp(), self.log_slope_upper.exp()
        return (upper + lower) / 2, (upper - lower) / 2

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        m, d = self._coefficients()
        return m * x + d * torch.hypot(x, torch.ones_like(x)) + self.shift

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        m, d = self._coefficients()
        z = y - self.shift
        # (m^2 - d^2) x^2 - 2 m z x + z^2 - d^2 = 0 with m^2 - d^2 = s_- s_+ > 0; two algebraically equal forms of
        # the root, each free of cancellation on one side.
        root = torch.sqrt(z * z + (m * m - d * d))
        direct = (m * z - d * root) / (m * m - d * d)
        use_conjugate = d * z > 0
        # The masked-out denominator is replaced so torch.where never back-propagates a 0/0.
        denominator = torch.where(use_conjugate, m * z + d * root, torch.ones_like(z))
        conjugate = (z * z - d * d) / denominator
        return torch.where(use_conjugate, conjugate, direct)

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The log of the slope :math:`T'(x)`, summed over the last dimension."""
        m, d = self._coefficients()
        slope = m + d * x / torch.hypot(x, torch.ones_like(x))
        return torch.log(slope).sum(-1)


def two_slope_affine(input_dim: int) -> TwoSlopeAffine:
    """Build a :class:`TwoSlopeAffine` layer (identity at initialisation).

    Example:
        >>> two_slope_affine(2).shift.shape
        torch.Size([2])
    """
    return TwoSlopeAffine(input_dim)
