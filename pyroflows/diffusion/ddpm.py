r"""The DDPM as a Pyro model: the reverse process is a ``pyro.markov`` chain of ``pyro.sample`` statements.

Generative model (in scaled units, inside ``pyro.plate("data", N)``):

.. math::
    x_T \sim \mathcal N(0, I), \qquad
    x_{t-1} \mid x_t \sim \mathcal N(\mu_\theta(x_t, t), \sigma_t^2 I), \quad t = T, \dots, 1,

with :math:`x_0` observed when data are given. The guide is the forward posterior in reverse order,
:math:`q(x_T \mid x_0) \prod_{t=2}^T q(x_{t-1} \mid x_t, x_0)`, so ``TraceMeanField_ELBO`` computes every step's KL
in closed form and the ELBO is exactly the DDPM variational bound (Ho et al. 2020, eq. 5):

.. math::
    -\mathrm{ELBO} = \mathrm{KL}(q(x_T|x_0) \| p(x_T))
    + \sum_{t=2}^T \mathbb E_q\, \mathrm{KL}(q(x_{t-1}|x_t,x_0) \| p_\theta(x_{t-1}|x_t))
    - \mathbb E_q \log p_\theta(x_0 | x_1).

Site names follow Pyro's deep Markov model example: ``x_T, ..., x_1, x_0``, plus the deterministic ``x`` (the
last state mapped back to data units). Data go in and come out in data units; a :class:`MinMaxScaler` that is
part of the module maps them to [-1, 1]. **The sample sites ``x_T .. x_0`` are in scaled units** (``ddpm.scaler``
maps data units to them); ``x`` is a deterministic function of ``x_0`` and cannot be conditioned on (the model
raises a :class:`DataError` if a handler tries). To condition on whole rows pass ``x0=`` (data units) to
:meth:`DDPM.model`; to condition on some entries of a row use :func:`pyroflows.diffusion.impute`, which runs this
model under a sequential Monte Carlo handler.

With ``num_classes=K`` the model is class-conditional: every reverse step gets the row's label, and label ``K``
(``ddpm.null_label``) is the unconditional model that classifier-free guidance (Ho & Salimans 2021) mixes in,

.. math::
    \hat\epsilon_w(x_t, t, c) = (1 + w)\, \epsilon_\theta(x_t, t, c) - w\, \epsilon_\theta(x_t, t, \varnothing),

so ``guidance = w = 0`` is the conditional model itself and larger ``w`` sharpens the classes.

Example:
    >>> import torch
    >>> ddpm = DDPM(data_dim=2, steps=3)
    >>> _ = ddpm.scaler.fit(torch.randn(50, 2))
    >>> trace = pyro.poutine.trace(ddpm.model).get_trace(num_samples=4)
    >>> [name for name in trace.nodes if name.startswith("x")]
    ['x_3', 'x_2', 'x_1', 'x_0', 'x']
"""

from __future__ import annotations

import itertools
from typing import Any, NamedTuple, cast

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.distributions.kl import kl_divergence
from pyro.nn import PyroModule, pyro_method
from pyro.nn.module import to_pyro_module_

from pyroflows import distributed
from pyroflows.diffusion.forward import (
    add_noise,
    forward_marginal,
    forward_posterior,
    posterior_mean,
    posterior_variance,
)
from pyroflows.diffusion.networks import make_network
from pyroflows.diffusion.scaler import MinMaxScaler
from pyroflows.diffusion.schedules import Schedule, check_steps, make_schedule
from pyroflows.errors import DataError
from pyroflows.serialization import Checkpointable
from pyroflows.validation import as_finite_2d, bad_rows

__all__ = ["DDPM", "NLLEstimate", "REVERSE_VARIANCES", "PARAMETERIZATIONS", "DEFAULT_STEPS"]

REVERSE_VARIANCES = ("beta", "posterior")
#: T when neither ``steps`` nor a :class:`Schedule` says otherwise.
DEFAULT_STEPS = 10
PARAMETERIZATIONS = ("v", "eps")

# PyroModule parameters live in Pyro's global parameter store under "<module name>.<attribute>", and a module
# takes the store's value when the name is already there: two DDPMs with the same name would share weights.
_INSTANCE_NUMBERS = itertools.count()


def _check_options(
    data_dim: Any, reverse_variance: str, parameterization: str, num_classes: Any, network_kwargs: Any
) -> None:
    if isinstance(data_dim, bool) or int(data_dim) != data_dim or data_dim < 1:
        raise DataError(f"data_dim: expected a positive integer, got {data_dim!r}")
    if reverse_variance not in REVERSE_VARIANCES:
        raise DataError(f"reverse_variance: expected one of {REVERSE_VARIANCES}, got {reverse_variance!r}")
    if parameterization not in PARAMETERIZATIONS:
        raise DataError(f"parameterization: expected one of {PARAMETERIZATIONS}, got {parameterization!r}")
    if isinstance(num_classes, bool) or int(num_classes) != num_classes or num_classes < 0:
        raise DataError(f"num_classes: expected a non-negative integer, got {num_classes!r}")
    if "num_classes" in (network_kwargs or {}):
        raise DataError("network_kwargs: pass num_classes to DDPM(num_classes=K), not to the network")


class NLLEstimate(NamedTuple):
    """A negative ELBO (nats per sample, data units) with its standard error over the ``n`` samples."""

    nll: float
    se: float
    n: int


class DDPM(Checkpointable, PyroModule):
    r"""Denoising diffusion probabilistic model with an :math:`\epsilon`-predicting network.

    The reverse mean is the forward-posterior mean at the predicted clean point,
    :math:`\mu_\theta(x_t, t) = \tilde\mu_t(x_t, \hat x_0)` with
    :math:`\hat x_0 = (x_t - \sqrt{1 - \bar\alpha_t}\,\epsilon_\theta(x_t, t)) / \sqrt{\bar\alpha_t}`; without
    clipping this is Ho et al.'s :math:`\frac{1}{\sqrt{\alpha_t}}(x_t - \frac{\beta_t}{\sqrt{1 - \bar\alpha_t}}
    \epsilon_\theta)`. With ``clip_x0`` (default) :math:`\hat x_0` is clipped to the scaled data range [-1, 1], as
    ``diffusers`` does by default: this stops the last reverse steps of a few-step chain from amplifying errors
    of :math:`\epsilon_\theta` by :math:`1/\sqrt{\alpha_t}`.

    The noise predictor is the network :math:`f_\theta` behind a skip connection (``parameterization="v"``,
    default),

    .. math::
        \epsilon_\theta(x_t, t) = \sqrt{1 - \bar\alpha_t}\, x_t + \sqrt{\bar\alpha_t}\, f_\theta(x_t, t),

    so :math:`f_\theta` predicts :math:`v = \sqrt{\bar\alpha_t}\,\epsilon - \sqrt{1 - \bar\alpha_t}\, x_0`
    (Salimans & Ho, 2022) and :math:`\hat x_0 = \sqrt{\bar\alpha_t}\, x_t - \sqrt{1 - \bar\alpha_t}\, f_\theta`:
    an error of the network reaches :math:`\hat x_0` undivided by :math:`\sqrt{\bar\alpha_t}`. With the plain
    :math:`\epsilon_\theta = f_\theta` (``"eps"``, Ho et al. and the post) an error at :math:`t = T` reaches
    :math:`\hat x_0` multiplied by :math:`1/\sqrt{\bar\alpha_T} \approx 32` (at T = 10 with the default
    schedule). On two moons at T = 10 the benchmark measured the two level within its error (see
    ``benchmarks/RESULTS.md``); ``"v"`` is the default for its conditioning. Training still minimises Ho et al.'s
    :math:`\|\epsilon - \epsilon_\theta\|^2` (or the exact bound) either way.

    Args:
        data_dim: D, the number of data columns.
        steps: T >= 1 (default 10, or the given :class:`Schedule`'s T).
        schedule: ``"polynomial"`` (default: :math:`1 - \bar\alpha_t = 0.999 (t/T)^2`), ``"linear"``, ``"cosine"``
            or a :class:`Schedule` with ``steps`` equal to T.
        network: ``"mlp"`` (default, sinusoidal step embedding) or ``"post"`` (the post's one-hot network).
        reverse_variance: :math:`\sigma_t^2 = \beta_t` (``"beta"``, default; samples better at small T) or the
            posterior variance :math:`\tilde\beta_t` (``"posterior"``; :math:`\beta_1` at t = 1, where
            :math:`\tilde\beta_1 = 0`).
        clip_x0: Clip the predicted clean point to [-1, 1].
        parameterization: ``"v"`` (default: the skip connection above) or ``"eps"`` (the network's output is
            :math:`\epsilon_\theta`).
        schedule_kwargs: Further arguments of the schedule class.
        network_kwargs: Further arguments of the network class.
        num_classes: K > 0 makes the model class-conditional with labels ``0..K-1`` (and the null label K, the
            unconditional model, learned by dropping labels in training: see :func:`~pyroflows.diffusion.train`);
            0 (default) builds the unconditional model.
        name: Prefix of its parameters in Pyro's parameter store; default a fresh ``"ddpm<k>"`` for each instance,
            so that two models never share weights through the store.

    Raises:
        DataError: T < 1, unknown schedule, network, reverse variance or parameterization, or ``data_dim < 1`` (a
            ``ValueError``).
    """

    betas: torch.Tensor
    alphas: torch.Tensor
    alpha_bar: torch.Tensor

    def __init__(
        self,
        data_dim: int,
        steps: int | None = None,
        schedule: str | Schedule = "polynomial",
        network: str = "mlp",
        reverse_variance: str = "beta",
        clip_x0: bool = True,
        parameterization: str = "v",
        schedule_kwargs: dict[str, Any] | None = None,
        network_kwargs: dict[str, Any] | None = None,
        name: str | None = None,
        num_classes: int = 0,
    ) -> None:
        super().__init__(name=name if name is not None else f"ddpm{next(_INSTANCE_NUMBERS)}")
        _check_options(data_dim, reverse_variance, parameterization, num_classes, network_kwargs)
        self.num_classes = int(num_classes)
        if isinstance(schedule, Schedule):
            if steps is not None and check_steps(steps) != schedule.steps:
                raise DataError(f"steps: the schedule has T = {schedule.steps}, but steps = {steps}")
            self.schedule = schedule
        else:  # T is checked once, by the schedule, and stored once: ``self.steps`` reads ``self.schedule.steps``
            steps = DEFAULT_STEPS if steps is None else steps
            self.schedule = make_schedule(schedule, steps, **(schedule_kwargs or {}))
        self.data_dim = int(data_dim)
        self.network_name, self.network_kwargs = network, dict(network_kwargs or {})
        self.reverse_variance, self.clip_x0 = reverse_variance, bool(clip_x0)
        self.parameterization = parameterization
        dtype = torch.get_default_dtype()
        self.register_buffer("betas", self.schedule.betas.to(dtype))
        self.register_buffer("alphas", self.schedule.alphas.to(dtype))
        self.register_buffer("alpha_bar", self.schedule.alpha_bar.to(dtype))
        labels_kwargs = {"num_classes": self.num_classes} if self.num_classes else {}
        net = make_network(network, self.data_dim, self.steps, **self.network_kwargs, **labels_kwargs)
        to_pyro_module_(net)  # so its parameters are Pyro parameters inside model/guide/SVI
        self.network = net
        self.scaler = MinMaxScaler(self.data_dim)

    @property
    def steps(self) -> int:
        """T, the number of diffusion steps (the schedule's: the one place it is stored)."""
        return self.schedule.steps

    # ----------------------------------------------------------------------------------------------- the math
    def _steps_like(self, t: int | torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if isinstance(t, torch.Tensor) and t.dim() > 0:
            return t.to(x.device)
        return torch.full(x.shape[:-1], int(t), dtype=torch.long, device=x.device)

    @property
    def null_label(self) -> int:
        """The label of the unconditional model (K, one past the last class)."""
        return self.num_classes

    def network_output(
        self,
        x_t: torch.Tensor,
        t: int | torch.Tensor,
        labels: torch.Tensor | None = None,
        guidance: float = 0.0,
    ) -> torch.Tensor:
        r"""The network's output :math:`f_\theta(x_t, t, c)`, with classifier-free guidance.

        The guided output is :math:`(1 + w) f_\theta(x_t, t, c) - w f_\theta(x_t, t, \varnothing)` for
        ``guidance = w != 0``.

        :math:`\epsilon_\theta` and :math:`\hat x_0` are affine in :math:`f_\theta` with coefficients that do not
        depend on the label, so mixing the outputs is the same as mixing the noise predictions. ``w = 0`` runs
        the conditional network alone (no unconditional evaluation).

        Args:
            x_t: Scaled states ``(N, D)``.
            t: A step or steps of shape ``(N,)``.
            labels: Integer labels ``(N,)`` in ``0..K`` (K: the null label), or ``None`` (the null label; the only
                choice for an unconditional model).
            guidance: w.
        """
        steps = self._steps_like(t, x_t)
        if not self.num_classes:
            if labels is not None:
                raise DataError("labels: this DDPM has no classes (build it with DDPM(..., num_classes=K))")
            if guidance:
                raise DataError("guidance: classifier-free guidance needs a class-conditional DDPM (num_classes=K)")
            return self.network(x_t, steps)
        if labels is None:
            labels = torch.full(steps.shape, self.null_label, dtype=torch.long, device=x_t.device)
        out = self.network(x_t, steps, labels)
        if guidance:
            unconditional = self.network(x_t, steps, torch.full_like(labels, self.null_label))
            out = (1 + guidance) * out - guidance * unconditional
        return out

    def predict_noise(
        self, x_t: torch.Tensor, t: int | torch.Tensor, labels: torch.Tensor | None = None, guidance: float = 0.0
    ) -> torch.Tensor:
        r""":math:`\epsilon_\theta(x_t, t)` for scaled ``x_t`` of shape ``(..., D)``.

        Guided as in :meth:`network_output` when ``labels``/``guidance`` are given.
        """
        steps = self._steps_like(t, x_t)
        out = self.network_output(x_t, steps, labels, guidance)
        if self.parameterization == "eps":
            return out
        alpha_bar = self.alpha_bar[steps].unsqueeze(-1)
        return (1 - alpha_bar).sqrt() * x_t + alpha_bar.sqrt() * out

    def predict_x0(
        self,
        x_t: torch.Tensor,
        t: int,
        eps: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        guidance: float = 0.0,
    ) -> torch.Tensor:
        r""":math:`\hat x_0 = (x_t - \sqrt{1 - \bar\alpha_t}\,\epsilon) / \sqrt{\bar\alpha_t}`.

        Clipped when ``clip_x0``; with ``eps`` omitted and ``parameterization="v"``, the same value computed without
        the division, :math:`\sqrt{\bar\alpha_t}\, x_t - \sqrt{1 - \bar\alpha_t}\, f_\theta(x_t, t)`.
        """
        alpha_bar = self.alpha_bar[t]
        if eps is None and self.parameterization == "v":
            x0 = alpha_bar.sqrt() * x_t - (1 - alpha_bar).sqrt() * self.network_output(x_t, t, labels, guidance)
        else:
            if eps is None:
                eps = self.predict_noise(x_t, t, labels, guidance)
            x0 = (x_t - (1 - alpha_bar).sqrt() * eps) / alpha_bar.sqrt()
        return x0.clamp(-1.0, 1.0) if self.clip_x0 else x0

    def reverse_mean(
        self, x_t: torch.Tensor, t: int, labels: torch.Tensor | None = None, guidance: float = 0.0
    ) -> torch.Tensor:
        r""":math:`\mu_\theta(x_t, t) = \tilde\mu_t(x_t, \hat x_0)` (scaled units).

        Guided when ``labels`` and ``guidance`` are given, see :meth:`network_output`.
        """
        return posterior_mean(self, self.predict_x0(x_t, t, labels=labels, guidance=guidance), x_t, t)

    def reverse_scale(self, t: int) -> torch.Tensor:
        r""":math:`\sigma_t` of the reverse step :math:`t \to t - 1`.

        Either :math:`\sqrt{\beta_t}`, or the forward posterior's :math:`\sqrt{\tilde\beta_t}`
        (``reverse_variance="posterior"``, for t > 1).
        """
        if self.reverse_variance == "posterior" and t > 1:
            variance = posterior_variance(self, t)
        else:
            variance = self.betas[t]
        return variance.sqrt()

    # ----------------------------------------------------------------------------------------- data checks
    def as_data(
        self,
        x: Any,
        name: str = "x",
        *,
        allow_nan: bool = False,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """Check and convert data of shape ``(N, D)`` (array or tensor) to a tensor.

        The checks are :func:`pyroflows.validation.as_finite_2d`'s.

        Args:
            x: The data (data units).
            name: The argument's name, for the message.
            allow_nan: Accept NaN (a missing entry, as :func:`~pyroflows.diffusion.impute` does) but never infinity.
            dtype: The result's dtype (default: this model's buffers' dtype).
            device: The result's device (default: this model's buffers' device).

        Raises:
            DataError: not 2-D, wrong number of columns, empty, or NaN/inf rows (named).

        Example:
            >>> DDPM(2).as_data([[1.0, 2.0]]).shape
            torch.Size([1, 2])
        """
        if isinstance(x, torch.Tensor):
            x = x.detach()
        elif not isinstance(x, np.ndarray):
            try:
                x = np.asarray(x, dtype=np.float64)
            except (TypeError, ValueError) as exc:
                raise DataError(f"{name}: expected a numeric array of shape (N, {self.data_dim})") from exc
        if x.ndim == 1:
            raise DataError(
                f"{name}: expected a 2-D array of shape (N, {self.data_dim}), got a 1-D array of shape "
                f"{tuple(x.shape)}; use x.reshape(-1, 1) for one column of data"
            )
        return as_finite_2d(
            x,
            name,
            dim=self.data_dim,
            allow_1d=False,
            allow_nan=allow_nan,
            dtype=self.betas.dtype if dtype is None else dtype,
            device=self.betas.device if device is None else device,
        )

    def as_labels(self, labels: Any, n: int, name: str = "labels", allow_null: bool = False) -> torch.Tensor | None:
        """Check and convert class labels for ``n`` rows to a long tensor of shape ``(n,)`` (``None`` stays ``None``).

        A single integer is broadcast to every row. Labels are integers in ``0..K-1``; with ``allow_null`` the null
        label K (the unconditional model) is accepted too.

        Raises:
            DataError: labels for a model without classes, a wrong length, NaN, non-integer or out-of-range values
                (named with their rows).
        """
        if labels is None:
            return None
        if not self.num_classes:
            raise DataError(f"{name}: this DDPM has no classes (build it with DDPM(..., num_classes=K) to use labels)")
        if isinstance(labels, torch.Tensor):
            values = labels.detach().cpu()
        else:
            try:
                values = torch.as_tensor(np.asarray(labels, dtype=np.float64))
            except (TypeError, ValueError) as exc:
                raise DataError(f"{name}: expected integer class labels in 0..{self.num_classes - 1}") from exc
        if values.dim() == 0:
            values = values.expand(n)
        if values.dim() == 2 and values.shape[1] == 1:
            values = values[:, 0]
        if values.dim() != 1 or values.shape[0] != n:
            raise DataError(f"{name}: expected {n} label(s), one per row, got shape {tuple(values.shape)}")
        if values.is_floating_point():
            infinite = bad_rows(values)
            if infinite:
                raise DataError(f"{name}: {len(infinite)} label(s) are NaN or inf, e.g. rows {infinite[:5]}")
            bad = values != values.round()
            if bad.any():
                rows = torch.nonzero(bad).flatten()
                raise DataError(f"{name}: labels must be integers; rows {rows[:5].tolist()} are not")
        values = values.round().long()
        top = self.num_classes if allow_null else self.num_classes - 1
        bad = (values < 0) | (values > top)
        if bad.any():
            rows = torch.nonzero(bad).flatten()
            raise DataError(
                f"{name}: expected labels in 0..{top} (the model has {self.num_classes} classes), got "
                f"{values[rows[0]].item()} in row {rows[0].item()} ({rows.numel()} row(s) out of range)"
            )
        return values.to(self.betas.device)

    def _check_fitted(self) -> None:
        if not bool(self.scaler.fitted):
            raise DataError("the model's data scaler is not fitted: train the model (or call ddpm.scaler.fit(x)) first")

    def _scaled(self, x0: torch.Tensor) -> torch.Tensor:
        self._check_fitted()
        return self.scaler(self.as_data(x0, "x0"))

    # ------------------------------------------------------------------------------------------ model / guide
    @pyro_method
    def model(
        self,
        x0: torch.Tensor | None = None,
        num_samples: int | None = None,
        labels: Any = None,
        guidance: float = 0.0,
    ) -> torch.Tensor:
        r"""The reverse chain :math:`x_T \to \dots \to x_0`, with ``x_0`` observed when ``x0`` (data units) is given.

        Args:
            x0: Data of shape ``(N, D)`` in data units, or ``None`` to sample.
            num_samples: N when ``x0`` is ``None`` (default 1).
            labels: Class labels of the rows, shape ``(N,)`` (or one integer for all) in ``0..K-1``, or the null
                label K; ``None``: the unconditional model (class-conditional DDPMs) or no labels at all.
            guidance: The classifier-free guidance weight w (0: the conditional model).

        Returns:
            The last state ``x_0`` in scaled units (the ``x`` site holds it in data units). When sampling, the
            decoder step is sampled too; :func:`~pyroflows.diffusion.ancestral_sample` returns its mean instead.

        Raises:
            DataError: a handler conditions ``x_0`` on a value of the wrong shape or with NaN entries, or conditions
                the deterministic ``x`` site; bad labels.
        """
        self._check_fitted()
        y0 = self._scaled(x0) if x0 is not None else None
        n = y0.shape[0] if y0 is not None else int(num_samples or 1)
        labels = self.as_labels(labels, n, allow_null=True)
        zeros = self.betas.new_zeros(n, self.data_dim)
        with pyro.plate("data", n):
            x = pyro.sample(f"x_{self.steps}", dist.Normal(zeros, 1.0).to_event(1))
            for t in pyro.markov(range(self.steps, 0, -1)):
                loc = self.reverse_mean(x, t, labels, guidance)
                scale = self.reverse_scale(t).expand_as(loc)
                x = pyro.sample(f"x_{t - 1}", dist.Normal(loc, scale).to_event(1), obs=y0 if t == 1 else None)
            self._check_conditioned_x0(x, n)
            data_units = self.scaler.inverse(x)
            if pyro.deterministic("x", data_units, event_dim=1) is not data_units:
                raise DataError(
                    "x: the data-units site is deterministic (the image of x_0 under ddpm.scaler.inverse) and cannot "
                    "be conditioned on; pass whole rows as model(x0=...) (data units), condition x_0 on "
                    "ddpm.scaler(x) (scaled units), or use pyroflows.diffusion.impute(ddpm, x) for rows with NaN "
                    "(missing) entries"
                )
        return x

    def _check_conditioned_x0(self, x: torch.Tensor, n: int) -> None:
        # A value put on x_0 by poutine.condition (or another handler) is not checked by Pyro: catch the common
        # mistakes (one column only, NaN for missing entries) with a message that says what to use instead.
        if x.shape != (n, self.data_dim):
            raise DataError(
                f"x_0: expected shape ({n}, {self.data_dim}) (scaled units), got {tuple(x.shape)}; x_0 cannot be "
                "conditioned on some columns only: use pyroflows.diffusion.impute(ddpm, x) with NaN for the "
                "unobserved entries"
            )
        if torch.isnan(x).any():
            raise DataError(
                "x_0: the conditioned value holds NaN; x_0 cannot be conditioned on partially observed rows: use "
                "pyroflows.diffusion.impute(ddpm, x) with NaN for the unobserved entries"
            )

    @pyro_method
    def guide(
        self, x0: torch.Tensor, num_samples: int | None = None, labels: Any = None, guidance: float = 0.0
    ) -> None:
        r"""The forward posterior in reverse order: :math:`q(x_T|x_0) \prod_{t=2}^T q(x_{t-1}|x_t, x_0)`.

        Args:
            x0: Data of shape ``(N, D)`` in data units.
            num_samples: Ignored (mirrors :meth:`model`'s signature).
            labels: Ignored (the forward process does not depend on the label).
            guidance: Ignored.
        """
        y0 = self._scaled(x0)
        with pyro.plate("data", y0.shape[0]):
            x = pyro.sample(f"x_{self.steps}", forward_marginal(self, y0, self.steps))
            for t in pyro.markov(range(self.steps, 1, -1)):
                x = pyro.sample(f"x_{t - 1}", forward_posterior(self, y0, x, t))

    @pyro_method
    def eps_mse(self, x0: torch.Tensor, labels: Any = None) -> torch.Tensor:
        r"""Ho et al.'s simple loss :math:`\mathbb E_{t, \epsilon} \|\epsilon - \epsilon_\theta(x_t, t)\|^2 / D`.

        With :math:`t \sim U\{1..T\}`, on data ``x0`` in data units (one draw of t and noise per row), given the rows'
        labels (``0..K``, K the null label) for a class-conditional model.
        """
        y0 = self._scaled(x0)
        labels = self.as_labels(labels, y0.shape[0], allow_null=True)
        # draw_rows: under a distributed global batch, the whole batch's draws and this rank's rows of them.
        t = distributed.draw_rows(lambda m: torch.randint(1, self.steps + 1, (m,), device=y0.device), y0.shape[0])
        eps = distributed.draw_rows(lambda m: torch.randn(m, *y0.shape[1:], dtype=y0.dtype, device=y0.device), len(y0))
        x_t = add_noise(self, y0, t, eps)
        return (self.predict_noise(x_t, t, labels) - eps).pow(2).mean()

    # ---------------------------------------------------------------------------------------------- the bound
    def bound_terms(self, x0: Any, labels: Any = None) -> torch.Tensor:
        r"""Per-sample terms of the negative ELBO in scaled units, one Monte Carlo draw of the guide.

        Column 0 is :math:`\mathrm{KL}(q(x_T|x_0) \| p(x_T))`, column ``T - t + 1`` (for t = T..2) is the KL of
        step :math:`t \to t-1`, and the last column is :math:`-\log p_\theta(x_0 | x_1)`. Their sum over
        columns, averaged over rows, is what ``TraceMeanField_ELBO`` returns for the same draw.

        Returns:
            A tensor of shape ``(N, T + 1)``.
        """
        x0 = self.as_data(x0, "x0")
        guide_trace = poutine.trace(self.guide).get_trace(x0)
        model_trace = poutine.trace(poutine.replay(self.model, trace=guide_trace)).get_trace(x0, labels=labels)
        columns = []
        for t in range(self.steps, -1, -1):
            site = model_trace.nodes[f"x_{t}"]
            # A sample site's fn is its distribution (Pyro's trace types it as any callable).
            p = cast(dist.TorchDistribution, site["fn"])
            if site["is_observed"]:
                assert site["value"] is not None  # x_0, observed
                columns.append(-p.log_prob(site["value"]))
            else:
                columns.append(kl_divergence(cast(dist.TorchDistribution, guide_trace.nodes[f"x_{t}"]["fn"]), p))
        return torch.stack(columns, dim=-1)

    @torch.no_grad()
    def nll(self, x: Any, num_particles: int = 16, batch_size: int = 4096, labels: Any = None) -> NLLEstimate:
        r"""The negative ELBO in nats per sample in data units, an upper bound on :math:`-\log p(x)`.

        Each row's bound is averaged over ``num_particles`` draws of the guide; the data-unit density adds the
        scaler's log-Jacobian. The standard error is over rows (it includes the Monte Carlo noise).

        Args:
            x: Data of shape ``(N, D)`` in data units.
            num_particles: Guide draws per row.
            batch_size: Rows (times particles) per forward pass.
            labels: Class labels ``(N,)`` in ``0..K-1`` for a class-conditional model (the bound of
                :math:`-\log p(x \mid c)`); ``None`` scores the unconditional (null-label) model.

        Returns:
            ``NLLEstimate(nll, se, n)``.
        """
        self._check_fitted()
        x = self.as_data(x, "x")
        labels = self.as_labels(labels, x.shape[0])
        if num_particles < 1:
            raise DataError(f"num_particles: expected at least 1, got {num_particles}")
        per_row = torch.zeros(x.shape[0], dtype=torch.float64)
        rows_per_batch = max(1, batch_size // num_particles)
        for start in range(0, x.shape[0], rows_per_batch):
            chunk = x[start : start + rows_per_batch]
            chunk_labels = None if labels is None else labels[start : start + rows_per_batch].repeat(num_particles)
            terms = self.bound_terms(chunk.repeat(num_particles, 1), chunk_labels).sum(-1)
            per_row[start : start + chunk.shape[0]] = terms.reshape(num_particles, -1).mean(0).double().cpu()
        per_row -= float(self.scaler.log_abs_det_jacobian())
        n = x.shape[0]
        se = float(per_row.std() / n**0.5) if n > 1 else float("nan")
        return NLLEstimate(float(per_row.mean()), se, n)

    # ----------------------------------------------------------------------------------------- persistence
    # save(path, overwrite=False, extra=None) -> Path and load(path) come from Checkpointable (kind "DDPM").
    @property
    def config(self) -> dict[str, Any]:
        """Constructor arguments as plain values; ``DDPM.from_config(ddpm.config)`` rebuilds the architecture."""
        schedule = self.schedule.config
        name, steps = schedule.pop("name"), schedule.pop("steps")
        return {
            "data_dim": self.data_dim,
            "steps": steps,
            "schedule": name,
            "schedule_kwargs": schedule,
            "network": self.network_name,
            "network_kwargs": dict(self.network_kwargs),
            "reverse_variance": self.reverse_variance,
            "clip_x0": self.clip_x0,
            "parameterization": self.parameterization,
            "num_classes": self.num_classes,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any], **kwargs: Any) -> DDPM:
        """Rebuild from :attr:`config`, reading files written by earlier versions.

        Files written before ``parameterization`` existed get ``"eps"`` (and before ``num_classes`` existed, no
        classes).

        Example:
            >>> DDPM.from_config(DDPM(2, steps=4).config).steps
            4
        """
        return cls(**{"parameterization": "eps", **config}, **kwargs)

    def extra_repr(self) -> str:
        """The settings shown in the module's ``repr``."""
        return (f"data_dim={self.data_dim}, steps={self.steps}, schedule={self.schedule!r}, "
                f"reverse_variance={self.reverse_variance!r}, clip_x0={self.clip_x0}, "
                f"parameterization={self.parameterization!r}"
                + (f", num_classes={self.num_classes}" if self.num_classes else ""))  # fmt: skip
