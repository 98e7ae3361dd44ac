r"""Ancestral sampling: the DDPM's own reverse chain (Ho et al. 2020, Algorithm 2).

Each step draws :math:`x_{t-1} \sim \mathcal N(\mu_\theta(x_t, t), \sigma_t^2 I)` with
:math:`\mu_\theta(x_t, t) = \tilde\mu_t(x_t, \hat x_0)`, the forward-posterior mean
(:func:`~pyroflows.diffusion.forward.posterior_mean`) at the predicted clean point: exactly the chain of
:meth:`DDPM.model <pyroflows.diffusion.DDPM.model>`, through the same :meth:`~pyroflows.diffusion.DDPM.reverse_mean`
arithmetic and :meth:`~pyroflows.diffusion.DDPM.reverse_scale`, with one normal draw per step.

Example:
    >>> import torch
    >>> from pyroflows.diffusion import DDPM
    >>> ddpm = DDPM(data_dim=2, steps=4)
    >>> _ = ddpm.scaler.fit(torch.randn(20, 2))
    >>> sampler = AncestralSampler(ddpm)
    >>> sampler.timesteps, sampler.sample(3).shape
    ([4, 3, 2, 1], torch.Size([3, 2]))
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from pyroflows.diffusion.forward import posterior_mean
from pyroflows.diffusion.samplers.base import SAMPLERS, Sampler
from pyroflows.errors import DataError

__all__ = ["AncestralSampler"]


class AncestralSampler(Sampler):
    r"""All T reverse steps of the model, :math:`x_{t-1} = \mu_\theta(x_t, t) + \sigma_t z`.

    Args:
        ddpm: A trained model.
        sampling_steps: ``None`` or T (the chain has no shorter form; use ``"ddim"`` for fewer steps).
        denoise_last: Return :math:`\mu_\theta(x_1, 1)` at the last step instead of sampling the decoder (Ho et
            al.'s Algorithm 2; sampling it adds noise of scale :math:`\sigma_1`).

    Raises:
        DataError: ``sampling_steps`` other than T.
    """

    prediction: ClassVar[str] = "x0"

    def __init__(self, ddpm: Any, sampling_steps: int | None = None, *, denoise_last: bool = True) -> None:
        super().__init__(ddpm)
        if sampling_steps not in (None, ddpm.steps):
            raise DataError(
                f"sampling_steps: the ancestral sampler runs all T = {ddpm.steps} steps; use sampler='ddim' for "
                f"{sampling_steps}"
            )
        self.denoise_last = bool(denoise_last)
        self.timesteps = list(range(ddpm.steps, 0, -1))

    def model_output(
        self, x_t: torch.Tensor, t: int, labels: torch.Tensor | None = None, guidance: float = 0.0
    ) -> torch.Tensor:
        r""":math:`\hat x_0(x_t, t)`, as :meth:`DDPM.reverse_mean <pyroflows.diffusion.DDPM.reverse_mean>` uses it."""
        return self.ddpm.predict_x0(x_t, t, labels=labels, guidance=guidance)

    def step(
        self, model_output: torch.Tensor, t: int, x_t: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        r""":math:`\tilde\mu_t(x_t, \hat x_0) + \sigma_t z` (no noise at t = 1 with ``denoise_last``)."""
        x = posterior_mean(self.ddpm, model_output, x_t, t)
        if t > 1 or not self.denoise_last:
            x = x + self.ddpm.reverse_scale(t) * self.noise_like(x, generator)
        return x


SAMPLERS.register(
    "ancestral", AncestralSampler, "the model's own reverse chain over all T steps (Ho et al.)", default=True
)
