r"""The information a bottleneck lets through, in closed form, and the Gaussian blur applied to its mask.

At a layer with feature map :math:`R`, the bottleneck passes :math:`Z = \lambda R + (1 - \lambda)\varepsilon` with
:math:`\varepsilon \sim \mathcal N(\mu_R, \sigma_R^2)`, so :math:`P(Z \mid R) = \mathcal N(\lambda R + (1-\lambda)
\mu_R, (1-\lambda)^2 \sigma_R^2)`. Against the variational marginal :math:`Q(Z) = \mathcal N(\mu_R, \sigma_R^2)`
each element carries

.. math::
    D_{KL}\big(P(Z \mid R) \,\|\, Q(Z)\big) = \tfrac12 \big((1-\lambda)^2 + (\lambda r)^2 - 1
    - \log (1-\lambda)^2\big), \qquad r = \frac{R - \mu_R}{\sigma_R},

nats (Schulz et al., 2020, Eq. 4-6); the attribution map is this capacity summed over channels, in bits.

Example:
    >>> import torch
    >>> # lambda = 1/2 at a feature two standard deviations above the mean:
    >>> per_element_capacity(torch.tensor([2.0]), torch.tensor([0.5]), torch.tensor([0.0]), torch.tensor([1.0]))
    tensor([0.8181])
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

__all__ = ["per_element_capacity", "gaussian_blur", "lambda_from_alpha", "NATS_PER_BIT"]

NATS_PER_BIT = math.log(2.0)


def per_element_capacity(
    features: torch.Tensor, one_minus_lambda: torch.Tensor, mean: torch.Tensor, std: torch.Tensor
) -> torch.Tensor:
    r"""KL divergence :math:`D_{KL}(P(Z\mid R) \| Q(Z))` per element, in nats.

    Takes :math:`1 - \lambda` rather than :math:`\lambda` so a mask that lets almost everything through
    (:math:`\lambda \to 1`) keeps its precision: :math:`\log(1-\lambda)^2` is computed from the small number
    itself, not from a difference that rounds to zero.

    Args:
        features: :math:`R`, any shape.
        one_minus_lambda: :math:`1 - \lambda`, broadcastable to ``features``, in ``(0, 1]``.
        mean: :math:`\mu_R`, broadcastable.
        std: :math:`\sigma_R > 0`, broadcastable.

    Returns:
        The capacity, shaped like the broadcast of the inputs, non-negative.

    Example:
        >>> # lambda = 0: everything replaced by noise, nothing gets through.
        >>> per_element_capacity(torch.tensor([3.0]), torch.tensor([1.0]), torch.tensor([0.0]), torch.tensor([1.0]))
        tensor([0.])
    """
    lam = 1.0 - one_minus_lambda
    r = (features - mean) / std
    var = one_minus_lambda.square()
    kl = 0.5 * (var + (lam * r).square() - 1.0 - torch.log(var))
    return kl.clamp_min(0.0)  # rounding can leave -1e-8 where the KL is zero


@functools.lru_cache(maxsize=32)  # built once per (sigma, dtype, device), not at every optimisation step; read-only
def _gaussian_kernel_1d(sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    # The official implementation's kernel size: 2 * round(2 sigma) + 1 taps (5 for sigma = 1).
    half = int(round(2 * sigma))
    with torch.inference_mode(False), torch.no_grad():  # a cached tensor must be usable under autograd later
        x = torch.arange(-half, half + 1, dtype=dtype, device=device)
        kernel = torch.exp(-0.5 * (x / sigma) ** 2)
        return kernel / kernel.sum()


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Blur ``[N, C, *spatial]`` along each spatial axis with a normalised Gaussian, reflecting at the borders.

    Works for 1, 2 or 3 spatial dimensions (sequences, images, volumes); with none, or ``sigma <= 0``, returns
    ``x``. The kernel is separable, so a 2-D blur equals the official 5x5 kernel for ``sigma = 1``. Axes shorter
    than the kernel's half width are padded by replication instead of reflection.

    Example:
        >>> torch.allclose(gaussian_blur(torch.ones(1, 2, 6, 7), 1.0), torch.ones(1, 2, 6, 7))  # weights sum to one
        True
        >>> gaussian_blur(torch.eye(5)[2].view(1, 1, 5), 1.0).squeeze().round(decimals=3)
        tensor([0.1090, 0.2440, 0.4030, 0.2440, 0.1090])
    """
    spatial = x.ndim - 2
    if sigma is None or sigma <= 0 or spatial == 0:
        return x
    if spatial > 3:
        raise ValueError(f"gaussian_blur handles 1 to 3 spatial dimensions, got a {x.ndim}-d tensor")
    kernel = _gaussian_kernel_1d(float(sigma), x.dtype, x.device)
    half = (kernel.numel() - 1) // 2
    channels = x.shape[1]
    conv = (F.conv1d, F.conv2d, F.conv3d)[spatial - 1]
    for axis in range(spatial):
        size = x.shape[2 + axis]
        view = [1, 1] + [1] * spatial
        view[2 + axis] = kernel.numel()
        shape = [channels, *view[1:]]
        pad = [0, 0] * spatial
        # F.pad lists the last axis first.
        pad[2 * (spatial - 1 - axis)] = pad[2 * (spatial - 1 - axis) + 1] = half
        x = F.pad(x, pad, mode="reflect" if size > half else "replicate")
        x = conv(x, kernel.view(view).expand(shape), groups=channels)
    return x


def lambda_from_alpha(alpha: torch.Tensor, sigma: float) -> torch.Tensor:
    r""":math:`1 - \lambda` for :math:`\lambda = \mathrm{blur}(\mathrm{sigmoid}(\alpha))`.

    Because the blur is linear with weights summing to one, :math:`1 - \lambda = \mathrm{blur}(\mathrm{sigmoid}
    (-\alpha))`, which stays positive in floating point even for large :math:`\alpha`.

    Args:
        alpha: ``[N, C, *spatial]`` logits of the mask.
        sigma: Blur width in feature-map cells (0: no blur).

    Returns:
        :math:`1 - \lambda`, the same shape, in ``(0, 1)``.

    Example:
        >>> round(lambda_from_alpha(torch.full((1, 1, 4, 4), 5.0), 1.0)[0, 0, 0, 0].item(), 5)
        0.00669
    """
    return gaussian_blur(torch.sigmoid(-alpha), sigma).clamp_min(torch.finfo(alpha.dtype).tiny)
