r"""The DDPM forward process in closed form: the one home of the diffusion math.

:math:`q(x_t \mid x_0)` (:func:`forward_marginal`, its reparameterised draw :func:`add_noise`) and the forward
posterior :math:`q(x_{t-1} \mid x_t, x_0)` (:func:`forward_posterior`, from :func:`posterior_mean` and
:func:`posterior_variance`). :class:`~pyroflows.diffusion.DDPM`'s reverse mean, its guide and its simple loss, the
schedules' ``posterior_variance`` and the samplers all call these functions, so each formula is written once.

Every function takes anything with the schedule tensors ``betas``, ``alphas`` and ``alpha_bar`` indexed by
``t = 0..T`` (a :class:`~pyroflows.diffusion.Schedule` or a :class:`~pyroflows.diffusion.DDPM`); the distributions
are ``Normal(...).to_event(1)`` over the last dimension of ``x0``, batched over the rest. ``t`` is one step (an int
or a 0-d tensor) or a tensor of steps shaped like ``x0.shape[:-1]``.

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

from pyroflows.errors import DataError

__all__ = [
    "forward_marginal",
    "forward_posterior",
    "add_noise",
    "posterior_mean",
    "posterior_variance",
    "NoiseLevels",
]


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
        raise DataError(f"t: expected diffusion steps in [{low}, {steps}], got values in [{t_min}, {t_max}]")


def forward_marginal(levels: NoiseLevels, x0: torch.Tensor, t: int | torch.Tensor) -> dist.TorchDistribution:
    r""":math:`q(x_t \mid x_0) = \mathcal N(\sqrt{\bar\alpha_t}\, x_0, (1 - \bar\alpha_t) I)`.

    Args:
        levels: The schedule tensors.
        x0: Clean data, shape ``(..., D)``.
        t: One step ``0..T`` or a tensor of steps of shape ``x0.shape[:-1]``. At ``t = 0`` the scale is 0, so
            only ``t >= 1`` gives a valid ``Normal``.

    Returns:
        ``Normal(loc, scale).to_event(1)``.

    Raises:
        DataError: ``t`` outside ``[1, T]`` (a ``ValueError``).
    """
    _check_t(levels, t, 1)
    alpha_bar = _at(levels.alpha_bar, t, x0)
    loc = alpha_bar.sqrt() * x0
    scale = (1 - alpha_bar).sqrt().expand_as(x0)
    return dist.Normal(loc, scale).to_event(1)


def forward_posterior(
    levels: NoiseLevels, x0: torch.Tensor, xt: torch.Tensor, t: int | torch.Tensor
) -> dist.TorchDistribution:
    r"""The forward posterior :math:`q(x_{t-1} \mid x_t, x_0) = \mathcal N(\tilde\mu_t, \tilde\beta_t I)`.

    Its parameters are

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
        DataError: ``t`` outside ``[2, T]`` (a ``ValueError``).

    Example:
        >>> import torch
        >>> from pyroflows.diffusion.schedules import PolynomialSchedule
        >>> q = forward_posterior(PolynomialSchedule(10), torch.zeros(1, 2), torch.ones(1, 2), t=2)
        >>> q.mean.shape
        torch.Size([1, 2])
    """
    _check_t(levels, t, 2)
    loc = posterior_mean(levels, x0, xt, t)
    scale = posterior_variance(levels, t, like=x0).sqrt()
    return dist.Normal(loc, scale.expand_as(loc)).to_event(1)


def add_noise(levels: NoiseLevels, x0: torch.Tensor, t: int | torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    r"""A draw of :math:`q(x_t \mid x_0)` from its standard-normal ``noise``.

    :math:`x_t = \sqrt{\bar\alpha_t}\, x_0 + \sqrt{1 - \bar\alpha_t}\, \epsilon` (diffusers' ``add_noise``).

    Args:
        levels: The schedule tensors.
        x0: Clean data, shape ``(..., D)``.
        t: One step or a tensor of steps of shape ``x0.shape[:-1]`` (not checked: the training loop's hot path).
        noise: :math:`\epsilon`, shaped like ``x0``.

    Example:
        >>> import torch
        >>> from pyroflows.diffusion.schedules import PolynomialSchedule
        >>> s = PolynomialSchedule(4)
        >>> x = add_noise(s, torch.ones(2, 1, dtype=torch.float64), 4, torch.zeros(2, 1, dtype=torch.float64))
        >>> bool(torch.allclose(x, s.alpha_bar[4].sqrt().expand(2, 1)))
        True
    """
    alpha_bar = _at(levels.alpha_bar, t, x0)
    return alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * noise


def posterior_mean(levels: NoiseLevels, x0: torch.Tensor, xt: torch.Tensor, t: int | torch.Tensor) -> torch.Tensor:
    r"""The forward-posterior mean :math:`\tilde\mu_t(x_t, x_0)` (see :func:`forward_posterior`).

    At ``t = 1`` it is ``x0`` itself. :meth:`DDPM.reverse_mean <pyroflows.diffusion.DDPM.reverse_mean>` is this at the
    predicted :math:`\hat x_0`.

    Args:
        levels: The schedule tensors.
        x0: The clean point (or its prediction), shape ``(..., D)``.
        xt: The noisy point at step ``t``, same shape.
        t: A step ``1..T`` or a tensor of steps (not checked).

    Example:
        >>> import torch
        >>> from pyroflows.diffusion.schedules import PolynomialSchedule
        >>> x0 = torch.tensor([[0.3, -0.2]], dtype=torch.float64)
        >>> bool(torch.allclose(posterior_mean(PolynomialSchedule(5), x0, torch.randn(1, 2).double(), 1), x0))
        True
    """
    beta = _at(levels.betas, t, x0)
    alpha = _at(levels.alphas, t, x0)
    alpha_bar = _at(levels.alpha_bar, t, x0)
    alpha_bar_prev = _at(levels.alpha_bar, t - 1, x0)
    return (alpha_bar_prev.sqrt() * beta / (1 - alpha_bar)) * x0 + (
        alpha.sqrt() * (1 - alpha_bar_prev) / (1 - alpha_bar)
    ) * xt


def posterior_variance(levels: NoiseLevels, t: int | torch.Tensor, like: torch.Tensor | None = None) -> torch.Tensor:
    r"""The forward-posterior variance :math:`\tilde\beta_t = \beta_t (1 - \bar\alpha_{t-1}) / (1 - \bar\alpha_t)`.

    It is 0 at ``t = 1``.

    Args:
        levels: The schedule tensors.
        t: A step ``1..T`` or a tensor of steps (not checked).
        like: With a tensor of steps, the result is shaped ``(..., 1)`` to broadcast against ``like`` and takes its
            dtype and device; ``None`` keeps the schedule's dtype and returns ``t``'s shape.

    Example:
        >>> from pyroflows.diffusion.schedules import PolynomialSchedule
        >>> s = PolynomialSchedule(4)
        >>> float(posterior_variance(s, 1)), bool(posterior_variance(s, 4) < s.betas[4])
        (0.0, True)
    """
    if like is None:
        index = t if isinstance(t, torch.Tensor) else int(t)
        beta, alpha_bar, alpha_bar_prev = levels.betas[index], levels.alpha_bar[index], levels.alpha_bar[index - 1]
    else:
        beta, alpha_bar = _at(levels.betas, t, like), _at(levels.alpha_bar, t, like)
        alpha_bar_prev = _at(levels.alpha_bar, t - 1, like)
    return beta * (1 - alpha_bar_prev) / (1 - alpha_bar)
