r"""Variance schedules of the DDPM forward process.

A schedule fixes :math:`\beta_1, \dots, \beta_T`; with :math:`\alpha_t = 1 - \beta_t` and
:math:`\bar\alpha_t = \prod_{s \le t} \alpha_s` the forward marginal is
:math:`q(x_t \mid x_0) = \mathcal N(\sqrt{\bar\alpha_t}\, x_0, (1 - \bar\alpha_t) I)`. Every tensor here is indexed
by ``t = 0..T`` (length ``T + 1``) with the convention :math:`\beta_0 = 0`, :math:`\bar\alpha_0 = 1`, so
``schedule.alpha_bar[t]`` is :math:`\bar\alpha_t` without index shifts.

Example:
    >>> s = PolynomialSchedule(10)
    >>> s.alpha_bar.shape, float(s.alpha_bar[0]), round(float(1 - s.alpha_bar[-1]), 3)
    (torch.Size([11]), 1.0, 0.999)
"""

from __future__ import annotations

import math
from typing import Any

import torch

from pyroflows.errors import DataError
from pyroflows.registry import Registry
from pyroflows.validation import check_int

__all__ = [
    "Schedule",
    "LinearSchedule",
    "PolynomialSchedule",
    "CosineSchedule",
    "make_schedule",
    "plot_schedules",
    "SCHEDULES",
    "check_steps",
]


def check_steps(steps: Any) -> int:
    """The number of diffusion steps T as an int >= 1: the one check of T (schedules, and so every DDPM, call it).

    Raises:
        DataError: ``steps`` is not an integer >= 1.

    Example:
        >>> check_steps(10.0)
        10
        >>> check_steps(0)
        Traceback (most recent call last):
        ...
        pyroflows.errors.DataError: steps: the number of diffusion steps T must be an integer >= 1, got 0
    """
    try:
        return check_int(steps, "steps", low=1)
    except DataError:
        raise DataError(f"steps: the number of diffusion steps T must be an integer >= 1, got {steps!r}") from None


class Schedule:
    r"""Base class: holds ``betas`` (length ``T + 1``, ``betas[0] = 0``) and derives the rest.

    Subclasses compute :math:`\beta_{1..T}` in float64 in ``_betas``. Tensors are float64 on the CPU; a
    :class:`~pyroflows.diffusion.DDPM` copies them into buffers of its own dtype and device.

    Attributes:
        steps: The number of diffusion steps :math:`T`.
        betas: :math:`\beta_t`, ``t = 0..T``.
        alphas: :math:`\alpha_t = 1 - \beta_t`.
        alpha_bar: :math:`\bar\alpha_t`, with :math:`\bar\alpha_0 = 1`.
    """

    name: str = ""

    def __init__(self, steps: int) -> None:
        self.steps = check_steps(steps)
        betas = self._betas().to(torch.float64)
        if betas.shape != (self.steps,) or not torch.isfinite(betas).all():
            raise DataError(f"{type(self).__name__}: invalid betas {betas}")
        if (betas <= 0).any() or (betas >= 1).any():
            raise DataError(f"{type(self).__name__}: every beta must lie in (0, 1), got {betas.tolist()}")
        self.betas = torch.cat([betas.new_zeros(1), betas])
        self.alphas = 1.0 - self.betas
        self.alpha_bar = torch.cumprod(self.alphas, dim=0)

    def _betas(self) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def config(self) -> dict[str, Any]:
        """Constructor arguments as plain values (for checkpoints); ``make_schedule(**config)`` rebuilds it."""
        return {"name": self.name, "steps": self.steps}

    @property
    def posterior_variance(self) -> torch.Tensor:
        r""":math:`\tilde\beta_t = \beta_t (1 - \bar\alpha_{t-1}) / (1 - \bar\alpha_t)`, ``t = 0..T`` (0 at t <= 1).

        That is :func:`pyroflows.diffusion.forward.posterior_variance` at every step.
        """
        from pyroflows.diffusion.forward import posterior_variance

        out = torch.zeros_like(self.betas)
        out[1:] = posterior_variance(self, torch.arange(1, self.steps + 1))
        return out

    def __repr__(self) -> str:
        """The class and its settings."""
        args = ", ".join(f"{k}={v!r}" for k, v in self.config.items() if k != "name")
        return f"{type(self).__name__}({args})"


class LinearSchedule(Schedule):
    r"""Linear :math:`\beta_t` from ``beta_start`` to ``beta_end`` (Ho et al. 2020).

    With ``rescale=True`` (default) both ends are multiplied by :math:`1000 / T`, as in the improved-DDPM code, so
    that :math:`\bar\alpha_T` stays close to Ho's value at T = 1000 (about 4e-5) for any T. Below T = 20 that makes
    :math:`\beta_T > 1`; every beta is then clipped to ``max_beta`` (0.999, as for the cosine schedule), which keeps
    the forward process valid but makes the last reverse steps divide by :math:`\sqrt{\alpha_t} \approx 0.03`: at
    small T use :class:`PolynomialSchedule`, or sample with ``clip_x0`` (the default). ``rescale=False`` gives the
    unscaled 1e-4..0.02 of ``diffusers`` (at T = 10, :math:`\bar\alpha_T` = 0.90: far from pure noise).

    Args:
        steps: T >= 1.
        beta_start: :math:`\beta_1` at T = 1000.
        beta_end: :math:`\beta_T` at T = 1000.
        rescale: Multiply both by 1000 / T.
        max_beta: Upper clip for every beta.

    Example:
        >>> LinearSchedule(1000).betas[[1, -1]].tolist()
        [0.0001, 0.02]
        >>> float(LinearSchedule(10).betas.max())
        0.999
    """

    name = "linear"

    def __init__(
        self,
        steps: int,
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        rescale: bool = True,
        max_beta: float = 0.999,
    ) -> None:
        self.beta_start, self.beta_end, self.rescale, self.max_beta = beta_start, beta_end, rescale, max_beta
        super().__init__(steps)

    def _betas(self) -> torch.Tensor:
        scale = 1000.0 / self.steps if self.rescale else 1.0
        if self.steps == 1:
            betas = torch.tensor([self.beta_end * scale], dtype=torch.float64)
        else:
            betas = torch.linspace(self.beta_start * scale, self.beta_end * scale, self.steps, dtype=torch.float64)
        return betas.clamp(max=self.max_beta)

    @property
    def config(self) -> dict[str, Any]:
        """The settings that rebuild the schedule (see :meth:`Schedule.config`)."""
        return {
            **super().config,
            "beta_start": self.beta_start,
            "beta_end": self.beta_end,
            "rescale": self.rescale,
            "max_beta": self.max_beta,
        }


class PolynomialSchedule(Schedule):
    r"""The post's schedule: :math:`1 - \bar\alpha_t = c\, (t / T)^p`, small changes near t = 0.

    Args:
        steps: T >= 1.
        power: The exponent :math:`p` (2 trains best at T = 10 on two moons).
        max_noise: :math:`c = 1 - \bar\alpha_T`, below 1 so that every :math:`\beta_t < 1`.

    Example:
        >>> s = PolynomialSchedule(4, power=2, max_noise=0.999)
        >>> [round(float(v), 4) for v in 1 - s.alpha_bar]
        [0.0, 0.0624, 0.2498, 0.5619, 0.999]
    """

    name = "polynomial"

    def __init__(self, steps: int, power: float = 2.0, max_noise: float = 0.999) -> None:
        if not 0 < max_noise < 1:
            raise DataError(f"max_noise: expected a value in (0, 1), got {max_noise}")
        if power <= 0:
            raise DataError(f"power: expected a positive exponent, got {power}")
        self.power, self.max_noise = power, max_noise
        super().__init__(steps)

    def _betas(self) -> torch.Tensor:
        t = torch.arange(self.steps + 1, dtype=torch.float64)
        alpha_bar = 1.0 - self.max_noise * (t / self.steps) ** self.power
        return 1.0 - alpha_bar[1:] / alpha_bar[:-1]

    @property
    def config(self) -> dict[str, Any]:
        """The settings that rebuild the schedule (see :meth:`Schedule.config`)."""
        return {**super().config, "power": self.power, "max_noise": self.max_noise}


class CosineSchedule(Schedule):
    r"""Nichol & Dhariwal (2021): :math:`\bar\alpha_t = f(t)/f(0)`, with a squared cosine :math:`f`.

    Here :math:`f(t) = \cos^2\!\big(\frac{t/T + s}{1 + s} \frac{\pi}{2}\big)`, with :math:`\beta_t` clipped to
    ``max_beta`` = 0.999 as in the paper.

    Args:
        steps: T >= 1.
        offset: :math:`s` (0.008).
        max_beta: Upper clip for every beta.

    Example:
        >>> float(CosineSchedule(10).betas[-1])
        0.999
    """

    name = "cosine"

    def __init__(self, steps: int, offset: float = 0.008, max_beta: float = 0.999) -> None:
        self.offset, self.max_beta = offset, max_beta
        super().__init__(steps)

    def _betas(self) -> torch.Tensor:
        t = torch.arange(self.steps + 1, dtype=torch.float64)
        f = torch.cos((t / self.steps + self.offset) / (1 + self.offset) * math.pi / 2) ** 2
        return (1.0 - f[1:] / f[:-1]).clamp(max=self.max_beta)

    @property
    def config(self) -> dict[str, Any]:
        """The settings that rebuild the schedule (see :meth:`Schedule.config`)."""
        return {**super().config, "offset": self.offset, "max_beta": self.max_beta}


#: The schedule family: name -> class (``factory(steps, **kwargs)``), one-line help and the default. A new schedule is
#: one file with a :class:`Schedule` subclass plus one ``SCHEDULES.register(...)`` line; the CLI's ``--schedule``
#: choices and help, :class:`~pyroflows.diffusion.DDPM` and the shared tests read it.
SCHEDULES: Registry[Any] = Registry("schedule")
SCHEDULES.register("linear", LinearSchedule, "Ho et al.'s linear betas, rescaled by 1000 / T")
SCHEDULES.register(
    "polynomial", PolynomialSchedule, "1 - alpha_bar_t = 0.999 (t/T)^2 (the post's; best at small T)", default=True
)
SCHEDULES.register("cosine", CosineSchedule, "Nichol & Dhariwal's cosine alpha_bar")


def make_schedule(name: str | Schedule, steps: int | None = None, **kwargs: Any) -> Schedule:
    """Build a schedule by name (see :data:`SCHEDULES`); a :class:`Schedule` passes through.

    Args:
        name: The schedule's name, or a schedule.
        steps: T >= 1 (required with a name).
        **kwargs: Further constructor arguments of the schedule class.

    Returns:
        The schedule.

    Raises:
        DataError: unknown name (the message lists the choices), or T < 1.

    Example:
        >>> make_schedule("cosine", 100)
        CosineSchedule(steps=100, offset=0.008, max_beta=0.999)
        >>> make_schedule("quadratic", 10)
        Traceback (most recent call last):
        ...
        pyroflows.errors.DataError: schedule: unknown 'quadratic'; expected one of linear, polynomial, cosine
    """
    if isinstance(name, Schedule):
        return name
    factory = SCHEDULES.get(name).factory
    if steps is None:
        raise DataError("steps: the number of diffusion steps T is required")
    return factory(steps, **kwargs)


def plot_schedules(schedules: dict[str, Schedule] | list[Schedule], ax: Any = None) -> Any:
    r"""Plot the forward variance :math:`1 - \bar\alpha_t` against :math:`t / T` (the post's Figure 5).

    Args:
        schedules: Schedules to compare, as a list or a ``{label: schedule}`` dictionary.
        ax: A matplotlib axis (a new ``matplotlib.figure.Figure`` when ``None``: no pyplot, no backend needed;
            ``ax.figure`` is the figure to save).

    Returns:
        The axis.

    Example:
        >>> ax = plot_schedules([LinearSchedule(10), PolynomialSchedule(10)])
        >>> len(ax.lines)
        2
    """
    if ax is None:
        from matplotlib.figure import Figure

        ax = Figure(figsize=(4, 3)).add_subplot()
    items = schedules.items() if isinstance(schedules, dict) else ((repr(s), s) for s in schedules)
    for label, schedule in items:
        t = torch.arange(schedule.steps + 1) / schedule.steps
        ax.plot(t.numpy(), (1 - schedule.alpha_bar).numpy(), marker="." if schedule.steps <= 50 else None, label=label)
    ax.set_xlabel("t / T")
    ax.set_ylabel(r"$1 - \bar\alpha_t$")
    ax.legend(fontsize="small")
    return ax
