r"""The sampler contract (diffusers' scheduler pattern) and the registry of samplers.

A sampler is built on a trained :class:`~pyroflows.diffusion.DDPM` (``factory(ddpm, sampling_steps=None,
**options)``), holds the ``timesteps`` it visits (descending), and moves a state one step with
``step(model_output, t, x_t, generator) -> x_prev``, where ``model_output`` is what :meth:`Sampler.model_output`
asks the model for (the predicted clean point for the ancestral sampler, the predicted noise for DDIM). The loop,
:meth:`Sampler.sample`, is shared: draw :math:`x_T \sim \mathcal N(0, I)` (or take ``x_T``), run ``step`` over
``timesteps``, map the result back to data units. The model never knows which sampler runs it.

Adding a sampler is one new file with a :class:`Sampler` subclass and one ``SAMPLERS.register(...)`` line (imported
by ``samplers/__init__.py``); :func:`pyroflows.diffusion.sample`, the CLI's ``--sampler`` and the shared sampler
tests pick it up.

Example:
    >>> import torch
    >>> from pyroflows.diffusion import DDPM
    >>> ddpm = DDPM(data_dim=2, steps=6)
    >>> _ = ddpm.scaler.fit(torch.randn(20, 2))
    >>> sampler = SAMPLERS.build("ddim", ddpm, sampling_steps=3)
    >>> sampler.timesteps, sampler.sample(4).shape
    ([5, 3, 1], torch.Size([4, 2]))
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch

from pyroflows.errors import DataError
from pyroflows.registry import Registry
from pyroflows.validation import check_float, check_int

__all__ = ["Sampler", "SAMPLERS"]


class Sampler:
    """Base class: the timesteps, one ``step``, and the shared sampling loop.

    Subclasses set :attr:`timesteps` in ``__init__`` (descending steps ``t`` at which :meth:`step` runs), and
    implement :meth:`model_output` and :meth:`step`.

    Args:
        ddpm: The trained model whose reverse process is sampled.

    Attributes:
        timesteps: The steps visited, from the first (near T) to the last (1 for a full chain).
        stochastic: Whether :meth:`step` draws noise (a deterministic sampler maps ``x_T`` to one sample).
    """

    #: What :meth:`model_output` returns: ``"x0"`` (the predicted clean point) or ``"eps"`` (the predicted noise).
    prediction: ClassVar[str] = "eps"

    def __init__(self, ddpm: Any) -> None:
        self.ddpm = ddpm
        self.timesteps: list[int] = []
        self.stochastic = True

    def model_output(
        self, x_t: torch.Tensor, t: int, labels: torch.Tensor | None = None, guidance: float = 0.0
    ) -> torch.Tensor:
        """What :meth:`step` needs from the network at ``(x_t, t)``: :meth:`DDPM.predict_noise` by default."""
        return self.ddpm.predict_noise(x_t, t, labels, guidance)

    def step(
        self, model_output: torch.Tensor, t: int, x_t: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:  # pragma: no cover - abstract
        """The state after step ``t`` (scaled units), from the model's output at ``(x_t, t)``."""
        raise NotImplementedError

    @staticmethod
    def noise_like(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Standard normal noise shaped like ``x``.

        From ``generator`` if given, else torch's global stream (the stream ``pyro.set_rng_seed`` seeds).
        """
        if generator is None:
            return torch.randn_like(x)
        return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)

    def start(self, n: int, x_T: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """:math:`x_T`: the given ``(n, D)`` start (scaled units) or a standard normal draw."""
        ddpm = self.ddpm
        ddpm._check_fitted()
        if x_T is not None:
            if x_T.shape != (n, ddpm.data_dim):
                raise DataError(f"x_T: expected shape ({n}, {ddpm.data_dim}), got {tuple(x_T.shape)}")
            return x_T.to(ddpm.betas)
        shape, like = (n, ddpm.data_dim), ddpm.betas
        if generator is None:
            return torch.randn(*shape, dtype=like.dtype, device=like.device)
        return torch.randn(*shape, generator=generator, dtype=like.dtype, device=like.device)

    @torch.no_grad()
    def sample(
        self,
        n: int,
        *,
        x_T: torch.Tensor | None = None,
        return_trajectory: bool = False,
        labels: Any = None,
        guidance: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Run :meth:`step` over :attr:`timesteps` from :math:`x_T`; samples ``(n, D)`` in data units.

        Args:
            n: Number of samples.
            x_T: Optional start of shape ``(n, D)`` in scaled units.
            return_trajectory: Return every state, ``(len(timesteps) + 1, n, D)``.
            labels: Class labels ``(n,)`` or one integer in ``0..K-1`` (class-conditional DDPMs); ``None``:
                unconditional.
            guidance: Classifier-free guidance weight w (0: the conditional model).
            generator: A ``torch.Generator`` for every draw (default: torch's global stream).

        Raises:
            DataError: ``n`` not a positive integer, a non-finite ``guidance`` or one for a model without classes,
                bad labels, ``x_T`` of the wrong shape, an unfitted model (all ``ValueError``s).
        """
        n = _check_n(n)
        guidance = _check_guidance(self.ddpm, guidance)
        labels = self.ddpm.as_labels(labels, n)
        x = self.start(n, x_T, generator)
        states = [x]
        for t in self.timesteps:
            x = self.step(self.model_output(x, t, labels, guidance), t, x, generator)
            if return_trajectory:
                states.append(x)
        return self.ddpm.scaler.inverse(torch.stack(states) if return_trajectory else x)

    def __repr__(self) -> str:
        """The class and its time steps."""
        return f"{type(self).__name__}(timesteps={self.timesteps})"


def _check_n(n: Any) -> int:
    try:
        return check_int(n, "n", low=1)
    except DataError:
        raise DataError(f"n: expected a positive number of samples, got {n!r}") from None


def _check_guidance(ddpm: Any, guidance: Any) -> float:
    try:
        guidance = check_float(guidance, "guidance")
    except DataError:
        raise DataError(f"guidance: expected a finite weight w, got {guidance!r}") from None
    if guidance and not ddpm.num_classes:
        raise DataError("guidance: classifier-free guidance needs a class-conditional DDPM (num_classes=K)")
    return guidance


#: The sampler family: name -> ``factory(ddpm, sampling_steps=None, **options)`` returning a :class:`Sampler`, with
#: its one-line help and the default (``ancestral``).
SAMPLERS: Registry[Callable[..., Sampler]] = Registry("sampler")
