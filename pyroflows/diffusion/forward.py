r"""The DDPM forward process in closed form, as Pyro distributions.

Both functions take anything with the schedule tensors ``betas``, ``alphas`` and ``alpha_bar`` indexed by
``t = 0..T`` (a :class:`~pyroflows.diffusion.Schedule` or a :class:`~pyroflows.diffusion.DDPM`) and return a
``Normal(...).to_event(1)`` over the last dimension of ``x0``, batched over the rest.

Example:
    >>> import torch
    >>> from pyroflows.diffusion.schedules import PolynomialSchedule
    >>> q = forward_marginal(PolynomialSchedule(10), torch.zeros(3, 2), t=10)
    >>> q.batch_shape, q.event_shape, round(float(q.stddev[0, 0]), 4)
    (torch.Size([3]), torch.Size([2]), 0.9995)
"""

from __future__ import annotations

from typing import Protocol

import pyro.distributions as dist
import torch

__all__ = ["forward_marginal", "forward_posterior", "NoiseLevels"]


class NoiseLevels(Protocol):
    """What the forward process needs from a schedule: tensors indexed by ``t = 0..T``."""

    betas: torch.Tensor
    alphas: torch.Tensor
    alpha_bar: torch.Tensor


def _at(values: torch.Tensor, t: int | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``values[t]`` shaped to broadcast against ``like`` (a scalar for an int ``t``, ``(..., 1)`` for a tensor)."""
    values = values.to(device=like.device, dtype=like.dtype)
    if isinstance(t, torch.Tensor) and t.dim() > 0:
        return values[t.to(like.device)].unsqueeze(-1)
    return values[int(t)]


def _check_t(levels: NoiseLevels, t: int | torch.Tensor, low: int) -> None:
    steps = levels.betas.shape[-1] - 1
    t_min, t_max = (int(t.min()), int(t.max())) if isinstance(t, torch.Tensor) else (int(t), int(t))
    if t_min < low or t_max > steps:
        raise ValueError(f"t: expected diffusion steps in [{low}, {steps}], got values in [{t_min}, {t_max}]")


def forward_marginal(levels: NoiseLevels, x0: torch.Tensor, t: int | torch.Tensor) -> dist.Distribution:
    r""":math:`q(x_t \mid x_0) = \mathcal N(\sqrt{\bar\alpha_t}\, x_0, (1 - \bar\alpha_t) I)`.

    Args:
        levels: The schedule tensors.
        x0: Clean data, shape ``(..., D)``.
        t: One step ``0..T`` or a tensor of steps of shape ``x0.shape[:-1]``. At ``t = 0`` the scale is 0, so
            only ``t >= 1`` gives a valid ``Normal``.

    Returns:
        ``Normal(loc, scale).to_event(1)``.

    Raises:
        ValueError: ``t`` outside ``[1, T]``.
    """
    _check_t(levels, t, 1)
    alpha_bar = _at(levels.alpha_bar, t, x0)
    loc = alpha_bar.sqrt() * x0
    scale = (1 - alpha_bar).sqrt().expand_as(x0)
    return dist.Normal(loc, scale).to_event(1)


def forward_posterior(
    levels: NoiseLevels, x0: torch.Tensor, xt: torch.Tensor, t: int | torch.Tensor
) -> dist.Distribution:
    r"""The forward posterior :math:`q(x_{t-1} \mid x_t, x_0) = \mathcal N(\tilde\mu_t, \tilde\beta_t I)` with

    .. math::
        \tilde\mu_t = \frac{\sqrt{\bar\alpha_{t-1}}\,\beta_t}{1 - \bar\alpha_t} x_0
        + \frac{\sqrt{\alpha_t}\,(1 - \bar\alpha_{t-1})}{1 - \bar\alpha_t} x_t, \qquad
        \tilde\beta_t = \frac{1 - \bar\alpha_{t-1}}{1 - \bar\alpha_t} \beta_t.

    Args:
        levels: The schedule tensors.
        x0: Clean data, shape ``(..., D)``.
        xt: The noisy point at step ``t``, same shape.
        t: A step ``2..T`` (at ``t = 1`` the posterior is the point mass at ``x0``) or a tensor of steps.

    Returns:
        ``Normal(loc, scale).to_event(1)``.

    Raises:
        ValueError: ``t`` outside ``[2, T]``.

    Example:
        >>> import torch
        >>> from pyroflows.diffusion.schedules import PolynomialSchedule
        >>> q = forward_posterior(PolynomialSchedule(10), torch.zeros(1, 2), torch.ones(1, 2), t=2)
        >>> q.mean.shape
        torch.Size([1, 2])
    """
    _check_t(levels, t, 2)
    beta = _at(levels.betas, t, x0)
    alpha = _at(levels.alphas, t, x0)
    alpha_bar = _at(levels.alpha_bar, t, x0)
    alpha_bar_prev = _at(levels.alpha_bar, t - 1, x0)
    loc = (alpha_bar_prev.sqrt() * beta / (1 - alpha_bar)) * x0 + (
        alpha.sqrt() * (1 - alpha_bar_prev) / (1 - alpha_bar)
    ) * xt
    scale = ((1 - alpha_bar_prev) / (1 - alpha_bar) * beta).sqrt()
    return dist.Normal(loc, scale.expand_as(loc)).to_event(1)
