r"""Sampling a trained :class:`~pyroflows.diffusion.DDPM`: :func:`sample` runs any registered sampler's loop.

The samplers live in :mod:`pyroflows.diffusion.samplers`, one per file, each with ``timesteps`` and one ``step``
(diffusers' scheduler pattern), registered in :data:`SAMPLERS`: ``"ancestral"`` runs all T reverse steps of the model
and returns the mean of the last step (Ho et al. 2020, Algorithm 2); ``"ddim"`` (Song et al. 2021) runs a
deterministic (``eta = 0``) update on a sub-sequence of K <= T steps: K network evaluations instead of T. All return
samples in data units. For a class-conditional DDPM they take ``labels`` (one per sample, or one integer for all;
``None`` samples the unconditional, null-label model) and the classifier-free guidance weight ``guidance`` (w = 0:
the conditional model; each step with w != 0 costs two network evaluations). :func:`ancestral_sample` and
:func:`ddim_sample` are the two built-in samplers as functions.

Example:
    >>> import torch
    >>> from pyroflows.diffusion.ddpm import DDPM
    >>> ddpm = DDPM(data_dim=2, steps=10)
    >>> _ = ddpm.scaler.fit(torch.randn(20, 2))
    >>> ancestral_sample(ddpm, 5).shape, ddim_sample(ddpm, 5, sampling_steps=4).shape
    (torch.Size([5, 2]), torch.Size([5, 2]))
    >>> ancestral_sample(ddpm, 5, return_trajectory=True).shape
    torch.Size([11, 5, 2])
    >>> labelled = DDPM(data_dim=2, steps=10, num_classes=3)
    >>> _ = labelled.scaler.fit(torch.randn(20, 2))
    >>> sample(labelled, 4, labels=2, guidance=1.0).shape
    torch.Size([4, 2])
"""

from __future__ import annotations

from typing import Any

import torch

from pyroflows.diffusion.ddpm import DDPM
from pyroflows.diffusion.samplers import SAMPLERS, AncestralSampler, DDIMSampler, Sampler, ddim_timesteps

__all__ = ["ancestral_sample", "ddim_sample", "ddim_timesteps", "sample", "SAMPLERS"]


def ancestral_sample(
    ddpm: DDPM,
    n: int,
    *,
    return_trajectory: bool = False,
    denoise_last: bool = True,
    x_T: torch.Tensor | None = None,
    labels: Any = None,
    guidance: float = 0.0,
) -> torch.Tensor:
    r"""Run the reverse chain with :class:`~pyroflows.diffusion.samplers.AncestralSampler`.

    That is :math:`x_T \sim \mathcal N(0, I)`, :math:`x_{t-1} \sim \mathcal N(\mu_\theta(x_t, t), \sigma_t^2 I)`.

    Args:
        ddpm: A trained model.
        n: Number of samples.
        return_trajectory: Return every state ``x_T, ..., x_0`` as a ``(T + 1, n, D)`` tensor.
        denoise_last: Return :math:`\mu_\theta(x_1, 1)` at the last step instead of sampling the decoder (Ho et
            al.'s Algorithm 2; sampling it adds noise of scale :math:`\sigma_1`).
        x_T: Optional start of shape ``(n, D)`` in scaled units.
        labels: Class labels ``(n,)`` or one integer in ``0..K-1`` (class-conditional DDPMs); ``None``: unconditional.
        guidance: Classifier-free guidance weight w (0: the conditional model).

    Returns:
        Samples ``(n, D)`` (or the trajectory) in data units.
    """
    sampler = AncestralSampler(ddpm, denoise_last=denoise_last)
    return sampler.sample(n, x_T=x_T, return_trajectory=return_trajectory, labels=labels, guidance=guidance)


def ddim_sample(
    ddpm: DDPM,
    n: int,
    *,
    sampling_steps: int | None = None,
    eta: float = 0.0,
    return_trajectory: bool = False,
    x_T: torch.Tensor | None = None,
    labels: Any = None,
    guidance: float = 0.0,
) -> torch.Tensor:
    r"""DDIM with :class:`~pyroflows.diffusion.samplers.DDIMSampler` (the update is in its module's docstring).

    Args:
        ddpm: A trained model.
        n: Number of samples.
        sampling_steps: K, the length of the sub-sequence (default T, every step).
        eta: 0 for the deterministic sampler, 1 for DDPM-like noise.
        return_trajectory: Return the K + 1 states as a ``(K + 1, n, D)`` tensor.
        x_T: Optional start of shape ``(n, D)`` in scaled units.
        labels: Class labels ``(n,)`` or one integer in ``0..K-1`` (class-conditional DDPMs); ``None``: unconditional.
        guidance: Classifier-free guidance weight w (0: the conditional model).

    Returns:
        Samples ``(n, D)`` (or the trajectory) in data units.
    """
    sampler = DDIMSampler(ddpm, sampling_steps, eta=eta)
    return sampler.sample(n, x_T=x_T, return_trajectory=return_trajectory, labels=labels, guidance=guidance)


def sample(
    ddpm: DDPM,
    n: int,
    *,
    sampler: str | Sampler = "ancestral",
    sampling_steps: int | None = None,
    return_trajectory: bool = False,
    labels: Any = None,
    guidance: float = 0.0,
    generator: torch.Generator | None = None,
    **options: Any,
) -> torch.Tensor:
    """Draw ``n`` samples in data units with a registered sampler or a sampler object.

    A registered sampler is a name in :data:`SAMPLERS` (``"ancestral"``, all T steps, or ``"ddim"``); an object is a
    :class:`~pyroflows.diffusion.samplers.Sampler`.

    Args:
        ddpm: A trained model.
        n: Number of samples.
        sampler: A name in :data:`SAMPLERS`, or a sampler built on ``ddpm``.
        sampling_steps: Steps the sampler visits (default T; the ancestral sampler accepts only T).
        return_trajectory: Return every state the sampler visits.
        labels: The class of each sample, for a class-conditional DDPM (see :func:`ancestral_sample`).
        guidance: The classifier-free guidance weight (see :func:`ancestral_sample`).
        generator: A ``torch.Generator`` for every draw (default: torch's global stream).
        **options: Further arguments of the sampler (``eta=`` for DDIM, ``denoise_last=`` for ancestral).

    Raises:
        DataError: unknown sampler (the message lists the choices), or ``sampling_steps`` the sampler cannot run.

    Example:
        >>> from pyroflows.diffusion.ddpm import DDPM
        >>> ddpm = DDPM(data_dim=2, steps=6)
        >>> _ = ddpm.scaler.fit(torch.randn(20, 2))
        >>> sample(ddpm, 3, sampler="ddim", sampling_steps=2, generator=torch.Generator().manual_seed(0)).shape
        torch.Size([3, 2])
    """
    chosen: Sampler = (
        sampler if isinstance(sampler, Sampler) else SAMPLERS.build(sampler, ddpm, sampling_steps, **options)
    )
    return chosen.sample(n, return_trajectory=return_trajectory, labels=labels, guidance=guidance,
                          generator=generator)  # fmt: skip
