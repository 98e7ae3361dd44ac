r"""Filling in missing entries with a trained DDPM: sequential Monte Carlo over the Pyro model's reverse chain.

Given a row whose entries :math:`o` are observed (value :math:`y`, scaled units) and the others :math:`u` missing,
:func:`impute` draws :math:`x_0^u` from the model's conditional :math:`p_\theta(x_0^u \mid x_0^o = y)`. The default
method (``"smc"``) is the twisted particle filter of Wu et al. (2023): :math:`P` particles run the model's own
chain (:meth:`DDPM.model` under the :class:`TwistedSMC` handler); at each level :math:`t` a twisting function
:math:`\tilde p_t(y \mid x_t)`, an estimate of how likely the particle's noisy state makes the observation, steers
the proposal and enters the weights. Two twists are registered in :data:`TWISTS` (``twist=``).

**Denoiser twist** (``"denoiser"``; Wu et al.'s inpainting twist). The network's denoised prediction
:math:`\hat x_0(x_t)` (:meth:`DDPM.predict_x0`) stands in for :math:`x_0`:

.. math::
    \tilde p_t(y \mid x_t) = \prod_{d \in o} \mathcal N\big(y_d;\ \hat x_0(x_t)_d,\ r_t\big), \qquad
    r_t = 1 - \bar\alpha_t,

:math:`r_t` being the variance of :math:`x_0` given :math:`x_t` under a unit-variance prior. At :math:`t = 1` it is
the model's own likelihood of the observation: :math:`\mu_\theta(x_1, 1) = \hat x_0(x_1)` and
:math:`\sigma_1^2 = \beta_1 = 1 - \bar\alpha_1`, so :math:`\tilde p_1(y \mid x_1) = p_\theta(x_0^o = y \mid x_1)`.
Each step proposes from the model's step with :math:`\hat x_0` moved by Tweedie's correction
:math:`\frac{1 - \bar\alpha_t}{\sqrt{\bar\alpha_t}} \nabla_{x_t} \log \tilde p_t`, that is

.. math::
    q(x_{t-1} \mid x_t) = \mathcal N\Big(x_{t-1};\ \mu_\theta(x_t, t)
    + \frac{\beta_t}{\sqrt{\alpha_t}} \nabla_{x_t} \log \tilde p_t(y \mid x_t),\ \sigma_t^2 I\Big)

(:math:`x_T` from the prior), with the gradient by autograd through the network, and weights the particle by

.. math::
    w_{t-1} = \frac{p_\theta(x_{t-1} \mid x_t)\, \tilde p_{t-1}(y \mid x_{t-1})}
    {q(x_{t-1} \mid x_t)\, \tilde p_t(y \mid x_t)}, \qquad w_T = \tilde p_T(y \mid x_T),

resampling before each move when the effective sample size is below ``ess_threshold`` times :math:`P`. At the
last step the observed coordinates are set to :math:`y`, the missing ones come from the decoder, and the weight is
:math:`p_\theta(x_0^o = y \mid x_1) / \tilde p_1(y \mid x_1) = 1`. The product of the weights telescopes to
:math:`p_\theta(x_{T:1}, x_0^o = y) / q(x_{T:1})`: the weighted particles target the model's exact conditional,
one particle drawn by weight is an exact draw as :math:`P \to \infty`, and :meth:`TwistedSMC.evidence` is an
unbiased estimate of :math:`p_\theta(x_0^o = y)`. Costs one more network pass (with its gradient) per step.

**Forward twist** (``"forward"``, the default). The forward marginal :math:`q(x_t^o \mid x_0^o = y)` at the noisy
state, which ignores the network:

.. math::
    \tilde p_t(y \mid x_t) = \prod_{d \in o} \mathcal N\big(x_{t,d};\ \sqrt{\bar\alpha_t}\, y_d,\ 1 - \bar\alpha_t\big)

(at :math:`t = 0` a point mass at :math:`y`). Because the reverse step :math:`p_\theta(x_{t-1} \mid x_t) =
\mathcal N(\mu, \sigma_t^2 I)` and this twist are both Gaussian in :math:`x_{t-1}^o`, the locally optimal proposal
is exact and closed form: the observed coordinates are drawn from

.. math::
    q(x_{t-1}^o \mid x_t) \propto \mathcal N(x_{t-1}^o; \mu^o, \sigma_t^2)\, \tilde p_{t-1}(y \mid x_{t-1})
    = \mathcal N\Big(\frac{v\, \mu^o + \sigma_t^2 a\, y}{\sigma_t^2 + v},\ \frac{\sigma_t^2 v}{\sigma_t^2 + v}\Big),
    \qquad a = \sqrt{\bar\alpha_{t-1}},\ v = 1 - \bar\alpha_{t-1},

the missing ones from the model's step itself, and the particle's incremental weight depends only on :math:`x_t`,

.. math::
    w_t(x_t) = \frac{\prod_{d \in o} \mathcal N(a\, y_d;\ \mu_d,\ \sigma_t^2 + v)}{\tilde p_t(y \mid x_t)},

so the particles are reweighted (and resampled) before they move. The weights telescope the same way (at
:math:`t = 1`, :math:`v = 0`: the observed coordinates are set to :math:`y` and the weight is the decoder's
likelihood :math:`\mathcal N(y; \mu^o(x_1), \sigma_1^2)`), so it is exact as :math:`P \to \infty` too, needs no
gradient and is three times cheaper per particle, but it does not see where the model puts its mass: with few,
large steps its weights degenerate (see ``benchmarks/RESULTS.md`` for the two side by side).

``"replace"`` is the fast heuristic (one particle, no weights): the observed coordinates are overwritten at every
level by a fresh draw of :math:`q(x_t^o \mid y)`. It ignores how the observed value should steer the missing
ones through the chain and is **biased** (on two moons at T = 10 it fills the y-coordinate's modes at 0.69 / -0.21
where the data have 0.87 / -0.32); it is kept for speed and comparison.

Both keep the observed entries of the input exactly (bit for bit, in the input's dtype). Like
:func:`~pyroflows.diffusion.ancestral_sample`, the last step returns the decoder's mean for the missing entries
(``denoise_last=True``); a row with every entry missing is therefore an unconditional sample, and a row with no
entry missing is returned as it is.

| Practical and Asymptotically Exact Conditional Sampling in Diffusion Models (Wu et al., 2023)
| Diffusion probabilistic modeling of protein backbones in 3D for the motif-scaffolding problem (Trippe et al., 2023)

Example:
    >>> import torch
    >>> from pyroflows.diffusion import DDPM, train
    >>> ddpm = DDPM(data_dim=2, steps=5)
    >>> _ = train(ddpm, torch.randn(200, 2), epochs=2, progress=False)
    >>> x = torch.tensor([[0.5, float("nan")], [float("nan"), float("nan")], [1.0, 2.0]])
    >>> filled = impute(ddpm, x, num_particles=16, seed=0)
    >>> filled.shape, bool(filled[0, 0] == 0.5), bool(torch.equal(filled[2], x[2]))
    (torch.Size([3, 2]), True, True)
    >>> impute(ddpm, x, num_imputations=4, seed=0).shape
    torch.Size([4, 3, 2])
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from functools import partial
from typing import Any

import pyro
import torch
from pyro.poutine.messenger import Messenger

from pyroflows.diffusion.ddpm import DDPM
from pyroflows.diffusion.forward import posterior_mean
from pyroflows.errors import DataError
from pyroflows.registry import Registry

__all__ = ["impute", "TwistedSMC", "IMPUTATION_METHODS", "TWISTS", "systematic_resample"]

#: The imputation methods: name -> ``factory(ddpm, observed, mask, num_particles, **options)`` returning the
#: :class:`TwistedSMC` handler that runs the method, with one-line help and the default (``smc``).
IMPUTATION_METHODS: Registry[Callable[..., TwistedSMC]] = Registry("method")
#: The twisting functions of the ``"smc"`` method: name -> the :class:`TwistedSMC` step that proposes and weights one
#: site under that twist, with one-line help and the default (see the module docstring for the math of each).
TWISTS: Registry[Callable[..., torch.Tensor]] = Registry("twist")
_SITE = re.compile(r"x_(\d+)$")


def _normal_log_prob(x: torch.Tensor, loc: torch.Tensor, variance: torch.Tensor) -> torch.Tensor:
    return -0.5 * ((x - loc) ** 2 / variance + torch.log(2 * math.pi * variance))


def _take_particles(ancestors: torch.Tensor, *values: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Each ``(B, P, D)`` tensor of ``values`` with its particles replaced by their ``ancestors`` (shape ``(B, P)``)."""
    index = ancestors.unsqueeze(-1).expand_as(values[0])
    return tuple(value.gather(1, index) for value in values)


def systematic_resample(log_weights: torch.Tensor) -> torch.Tensor:
    """Ancestor indices by systematic resampling, independently for each row of ``log_weights`` (shape ``(B, P)``).

    One uniform offset per row: particle ``i`` takes the ancestor whose cumulative weight first exceeds
    ``(u + i) / P``. Each ancestor ``j`` is chosen ``P w_j`` times rounded down or up.

    Example:
        >>> systematic_resample(torch.log(torch.tensor([[0.5, 0.5, 0.0, 0.0]]))).tolist()
        [[0, 0, 1, 1]]
    """
    batch, particles = log_weights.shape
    weights = torch.softmax(log_weights, dim=-1)
    cumulative = weights.cumsum(-1)
    cumulative[:, -1] = 1.0  # rounding must never leave the last interval short of 1
    offsets = (torch.rand(batch, 1, dtype=weights.dtype, device=weights.device)
               + torch.arange(particles, dtype=weights.dtype, device=weights.device)) / particles  # fmt: skip
    return torch.searchsorted(cumulative, offsets, right=True).clamp(max=particles - 1)


class TwistedSMC(Messenger):
    r"""A Pyro handler that turns :meth:`DDPM.model` into a particle filter conditioned on observed coordinates.

    Run the model with ``num_samples = B * P`` under it: rows ``b * P .. b * P + P - 1`` of every site are the
    ``P`` particles of system ``b`` (one row to impute). At each site ``x_t`` it reads the model's reverse-step
    distribution (``msg["fn"]``, a ``Normal(mu, sigma_t).to_event(1)``), resamples the system's particles when
    their effective sample size is below ``ess_threshold * P``, proposes the site's value and adds the incremental
    weight, as the twist (:data:`TWISTS`, the module docstring) says. After the run, :meth:`select` draws one
    particle per system by weight.

    The trace of such a run records each site's value before the particles were resampled at the next site: only
    the final state, selected by weight, is a draw from the conditional.

    Args:
        ddpm: The model whose sites are proposed.
        observed: Observed values in scaled units, shape ``(B, D)`` (any value where ``mask`` is false).
        mask: ``True`` where observed, shape ``(B, D)``.
        num_particles: P.
        method: ``"smc"`` (weights, resampling, twisted proposal) or ``"replace"`` (overwrite the observed
            coordinates with a draw of the forward marginal; no weights).
        twist: ``"smc"``'s twisting function, a name in :data:`TWISTS` (``None``: its default, ``"forward"``).
        ess_threshold: Resample a system when its effective sample size is below this fraction of P (1.0:
            at every step; 0: never).
        denoise_last: Set the missing coordinates of ``x_0`` to the decoder's mean instead of sampling them.
        record: Keep, for each site, its step ``t``, the model's mean and variance (after resampling), the
            incremental log-weights, the ancestors and the proposed value in :attr:`records` (for checks and plots;
            ``"smc"`` only; the denoiser twist adds the proposal's mean and the twist's log-value).
        labels: Labels of the particles, shape ``(B * P,)``, for a class-conditional model (the denoiser twist runs
            the network with them; pass the same as to the model).
        guidance: The classifier-free guidance weight the model runs with (likewise).
    """

    def __init__(
        self,
        ddpm: DDPM,
        observed: torch.Tensor,
        mask: torch.Tensor,
        num_particles: int,
        method: str = "smc",
        twist: str | None = None,
        ess_threshold: float = 0.5,
        denoise_last: bool = True,
        record: bool = False,
        labels: torch.Tensor | None = None,
        guidance: float = 0.0,
    ) -> None:
        super().__init__()
        IMPUTATION_METHODS.get(method)  # a DataError listing the methods for an unknown one
        self.twist = TWISTS.default if twist is None else str(twist)
        self._step = TWISTS.get(self.twist).factory  # a DataError listing the twists for an unknown one
        self.ddpm, self.method, self.particles = ddpm, method, int(num_particles)
        self.labels, self.guidance = labels, float(guidance)
        self.ess_threshold, self.denoise_last, self.record = float(ess_threshold), bool(denoise_last), bool(record)
        self.y = observed.unsqueeze(1)  # (B, 1, D)
        self.mask = mask.unsqueeze(1).to(observed.dtype)  # (B, 1, D), 1.0 where observed
        self.batch = observed.shape[0]
        self.log_weights = observed.new_zeros(self.batch, self.particles)
        self.log_evidence = observed.new_zeros(self.batch)  # log of the running estimate of p(x_0^o = y)
        self.resampled = 0
        self.records: list[dict[str, torch.Tensor | int]] = []
        self._log_twist = observed.new_zeros(self.batch, self.particles)  # log p~_{t}(y | x_t) at the last site
        # the denoiser twist's gradient in x_t, x0-hat(x_t) and x_t at the last site
        shape = (self.batch, self.particles, self.y.shape[-1])
        self._twist_grad = self._x0_hat = self._x_prev = observed.new_zeros(shape)

    def _levels(self, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        alpha_bar = self.ddpm.alpha_bar[t].to(self.y.dtype)
        return alpha_bar.sqrt(), 1 - alpha_bar

    def _twist(self, x: torch.Tensor, t: int) -> torch.Tensor:
        a, v = self._levels(t)
        return (_normal_log_prob(x, a * self.y, v) * self.mask).sum(-1)

    def _pyro_sample(self, msg: dict[str, Any]) -> None:
        match = _SITE.match(str(msg["name"]))
        if match is None or msg["is_observed"] or msg["value"] is not None:
            return
        t = int(match.group(1))
        fn = msg["fn"]
        base = getattr(fn, "base_dist", fn)
        loc = base.loc.reshape(self.batch, self.particles, -1)
        variance = (base.scale**2).expand_as(base.loc).reshape(self.batch, self.particles, -1)
        if self.method == "replace":
            value = self._replace_step(loc, variance, t)
        else:
            value = self._step(self, loc, variance, t)
        msg["value"] = value.reshape(base.loc.shape)
        msg["done"] = True

    def _replace_step(self, loc: torch.Tensor, variance: torch.Tensor, t: int) -> torch.Tensor:
        # One normal draw per coordinate and step, and none at a denoised last step: a row with every entry missing
        # then uses the random numbers of ancestral_sample, and is the same draw.
        a, v = self._levels(t)
        noise = None if t == 0 and self.denoise_last else torch.randn_like(loc)
        value = loc if noise is None else loc + variance.sqrt() * noise
        noisy_y = a * self.y if noise is None else a * self.y + v.sqrt() * noise
        return torch.where(self.mask.bool(), noisy_y, value)

    def _forward_step(self, loc: torch.Tensor, variance: torch.Tensor, t: int) -> torch.Tensor:
        """One site of the forward twist: weight by the predictive of x_{t+1}, resample, then the exact proposal."""
        a, v = self._levels(t)
        # The incremental weight depends on x_{t+1} only: reweight and resample before moving.
        predictive = (_normal_log_prob(a * self.y, loc, variance + v) * self.mask).sum(-1)
        increment = predictive - self._log_twist
        self.log_weights = self.log_weights + increment
        ancestors = None if t == 0 else self._resample_low_ess()  # the final weights are used by select()
        if ancestors is not None:
            loc, variance = _take_particles(ancestors, loc, variance)
        if self.record:
            self.records.append({"t": t, "loc": loc.clone(), "variance": variance.clone(),
                                 "log_increment": increment.clone(),
                                 "ancestors": self._recorded_ancestors(ancestors)})  # fmt: skip
        # The locally optimal proposal: observed coordinates from the twisted Gaussian, missing ones from the step.
        obs_variance = variance * v / (variance + v)
        obs_mean = (v * loc + variance * a * self.y) / (variance + v)
        noise = None if t == 0 and self.denoise_last else torch.randn_like(loc)
        value = loc if noise is None else loc + variance.sqrt() * noise
        observed = obs_mean if noise is None else obs_mean + obs_variance.sqrt() * noise
        value = torch.where(self.mask.bool(), observed, value)
        if t > 0:
            self._log_twist = self._twist(value, t)
        if self.record:
            self.records[-1]["value"] = value.clone()
        return value

    def _denoiser_twist(self, x: torch.Tensor, t: int) -> None:
        r"""Keep the denoiser twist, its gradient and :math:`\hat x_0` at the particles ``x`` (shape ``(B, P, D)``).

        The twist is :math:`\log \tilde p_t(y \mid x_t) = \sum_{d \in o} \log \mathcal N(y_d;\ \hat x_0(x_t)_d,\
        1 - \bar\alpha_t)`; its gradient in :math:`x_t` comes by autograd through the network (whose parameters get
        no gradient), and ``x`` itself is kept too.
        """
        flat = x.reshape(-1, x.shape[-1]).detach().requires_grad_(True)
        variance = 1 - self.ddpm.alpha_bar[t].to(x.dtype)
        with torch.enable_grad():
            x0 = self.ddpm.predict_x0(flat, t, labels=self.labels, guidance=self.guidance).reshape(x.shape)
            log_twist = (_normal_log_prob(self.y, x0, variance) * self.mask).sum(-1)
            (grad,) = torch.autograd.grad(log_twist.sum(), flat)
        self._log_twist, self._twist_grad = log_twist.detach(), grad.reshape(x.shape)
        self._x0_hat, self._x_prev = x0.detach(), x

    def _denoiser_step(self, loc: torch.Tensor, variance: torch.Tensor, t: int) -> torch.Tensor:
        """One site of the denoiser twist: resample, move by the gradient-shifted step, weight by the generic ratio."""
        ancestors = None if t == self.ddpm.steps else self._resample_low_ess()
        if ancestors is not None:
            loc, variance, self._twist_grad, self._x0_hat, self._x_prev = _take_particles(
                ancestors, loc, variance, self._twist_grad, self._x0_hat, self._x_prev
            )
            self._log_twist = self._log_twist.gather(1, ancestors)
        if t == 0:
            # The last step: the observed coordinates are y, weighted by the decoder's exact likelihood of them; the
            # missing ones come from the decoder itself (or are its mean), so they add nothing to the weight.
            noise = None if self.denoise_last else torch.randn_like(loc)
            value = loc if noise is None else loc + variance.sqrt() * noise
            value = torch.where(self.mask.bool(), self.y.expand_as(value), value)
            proposal_mean = loc
            increment = (_normal_log_prob(self.y, loc, variance) * self.mask).sum(-1) - self._log_twist
            self._log_twist = torch.zeros_like(self._log_twist)
        else:
            proposal_mean = loc if t == self.ddpm.steps else self._twisted_mean(loc, t + 1)
            value = proposal_mean + variance.sqrt() * torch.randn_like(loc)
            log_model = _normal_log_prob(value, loc, variance)
            log_ratio = (log_model - _normal_log_prob(value, proposal_mean, variance)).sum(-1)
            previous = self._log_twist
            self._denoiser_twist(value, t)
            increment = log_ratio + self._log_twist - previous
        self.log_weights = self.log_weights + increment
        if self.record:
            self.records.append({"t": t, "loc": loc.clone(), "variance": variance.clone(),
                                 "proposal_mean": proposal_mean.clone(), "value": value.clone(),
                                 "log_increment": increment.clone(), "log_twist": self._log_twist.clone(),
                                 "ancestors": self._recorded_ancestors(ancestors)})  # fmt: skip
        return value

    def _twisted_mean(self, loc: torch.Tensor, t: int) -> torch.Tensor:
        r"""The proposal's mean for the step :math:`t \to t - 1`.

        It is the forward-posterior mean at :math:`\hat x_0` moved by Tweedie's correction,
        :math:`\tilde\mu_t\big(x_t,\ \hat x_0 + \frac{1 - \bar\alpha_t}{\sqrt{\bar\alpha_t}}
        \nabla_{x_t} \log \tilde p_t\big)`, that is :math:`\mu_\theta + \frac{\beta_t}{\sqrt{\alpha_t}} \nabla_{x_t}
        \log \tilde p_t`; with ``clip_x0`` the moved :math:`\hat x_0` is clipped to [-1, 1] like the model's, which
        bounds the move where the gradient is large (the high-noise steps of a short chain; as Wu et al.'s code).
        """
        alpha_bar = self.ddpm.alpha_bar[t].to(loc.dtype)
        moved = self._x0_hat + (1 - alpha_bar) / alpha_bar.sqrt() * self._twist_grad
        if self.ddpm.clip_x0:
            moved = moved.clamp(-1.0, 1.0)
        return loc + posterior_mean(self.ddpm, moved - self._x0_hat, torch.zeros_like(loc), t)

    def _recorded_ancestors(self, ancestors: torch.Tensor | None) -> torch.Tensor:
        """The ancestors of a step for :attr:`records`: each particle its own where nothing was resampled."""
        return ancestors if ancestors is not None else torch.arange(self.particles).expand(self.batch, -1).clone()

    def _resample_low_ess(self) -> torch.Tensor | None:
        """Resample the systems whose effective sample size is below the threshold; their ancestors, or ``None``."""
        normaliser = torch.logsumexp(self.log_weights, -1)
        ess = torch.exp(2 * normaliser - torch.logsumexp(2 * self.log_weights, -1))
        low = ess < self.ess_threshold * self.particles
        if not bool(low.any()):
            return None
        ancestors = torch.arange(self.particles, device=self.log_weights.device).expand(self.batch, -1).clone()
        ancestors[low] = systematic_resample(self.log_weights[low])
        # Resampled systems restart with equal weights; their normaliser moves into the evidence.
        self.log_evidence = torch.where(low, self.log_evidence + normaliser - math.log(self.particles),
                                        self.log_evidence)  # fmt: skip
        self.log_weights = torch.where(low.unsqueeze(-1), self.log_weights.new_zeros(()), self.log_weights)
        self.resampled += int(low.sum())
        return ancestors

    def select(self, final: torch.Tensor) -> torch.Tensor:
        """One particle per system drawn by its final weight: ``final`` of shape ``(B * P, D)`` -> ``(B, D)``."""
        final = final.reshape(self.batch, self.particles, -1)
        if self.method == "replace":
            return final[:, 0]
        index = torch.distributions.Categorical(logits=self.log_weights).sample()
        return final[torch.arange(self.batch, device=final.device), index]

    def evidence(self) -> torch.Tensor:
        r"""The log of the particle estimate of :math:`p_\theta(x_0^o = y)` per system (scaled units).

        Computed as the increments' running mean over particles (unbiased for either twist); with the forward twist it
        includes the first site's constant :math:`\prod_o \mathcal N(\sqrt{\bar\alpha_T} y_o; 0, 2 - \bar\alpha_T)`.
        """
        return self.log_evidence + torch.logsumexp(self.log_weights, -1) - math.log(self.particles)


def _as_partial_data(ddpm: DDPM, x: Any) -> torch.Tensor:
    """``x`` with NaN for missing entries, through :meth:`DDPM.as_data` (``allow_nan``).

    On the CPU in ``x``'s floating dtype (float64 for arrays and integer tensors), so the observed entries come back bit
    for bit.
    """
    keep = isinstance(x, torch.Tensor) and x.is_floating_point()
    try:
        return ddpm.as_data(x, "x", allow_nan=True, dtype=x.dtype if keep else torch.float64, device="cpu")
    except DataError as exc:
        if "hold inf" not in str(exc):
            raise
        raise DataError(f"{exc}; mark missing entries with NaN") from None


@torch.no_grad()
def impute(
    ddpm: DDPM,
    x: Any,
    *,
    method: str = "smc",
    num_particles: int = 64,
    num_imputations: int | None = None,
    twist: str | None = None,
    labels: Any = None,
    guidance: float = 0.0,
    ess_threshold: float = 0.5,
    denoise_last: bool = True,
    seed: int | None = None,
    batch_size: int = 65536,
) -> torch.Tensor:
    r"""Fill the NaN entries of ``x`` (data units) with draws from the model's conditional.

    The conditional is given each row's observed entries; the observed entries come back exactly.

    Args:
        ddpm: A trained model.
        x: Data ``(N, D)`` in data units with NaN where an entry is missing (any pattern per row).
        method: ``"smc"`` (default: the twisted particle filter, exact as the particles grow) or ``"replace"``
            (the replacement heuristic: fast, biased).
        num_particles: P, particles per imputed row for ``"smc"`` (ignored by ``"replace"``).
        num_imputations: M independent fills of every row (multiple imputation); ``None`` (default) gives one.
        twist: The twisting function of ``"smc"``, a name in :data:`TWISTS`: ``"forward"`` or ``"denoiser"``
            (``None``: the registry's default, ``"forward"``, chosen by the benchmark; ignored by ``"replace"``).
        labels: Class labels ``(N,)`` or one integer (class-conditional models): impute from
            :math:`p(x^u \mid x^o, c)`; ``None``: the unconditional (null-label) model.
        guidance: Classifier-free guidance weight w for labelled imputation.
        ess_threshold: Resample when the effective sample size is below this fraction of P.
        denoise_last: Return the decoder's mean at the last step (as :func:`ancestral_sample` does).
        seed: Seed for ``pyro.set_rng_seed`` first.
        batch_size: Particles per run of the model (rows are processed in chunks of ``batch_size // P``).

    Returns:
        ``(N, D)``, or ``(M, N, D)`` when ``num_imputations=M`` is given, in ``x``'s floating dtype (float64 for
        arrays). Rows without a missing entry are returned as they are; rows with every entry missing are
        unconditional samples.

    Raises:
        DataError: ``x`` of the wrong shape or with inf, bad labels, an unfitted model, an unknown method (the
            message lists :data:`IMPUTATION_METHODS`) or twist (:data:`TWISTS`), ``num_particles`` or
            ``num_imputations`` below 1.

    Example:
        >>> import torch
        >>> from pyroflows.diffusion import DDPM
        >>> ddpm = DDPM(data_dim=3, steps=4)
        >>> _ = ddpm.scaler.fit(torch.randn(50, 3))
        >>> x = torch.tensor([[0.1, float("nan"), -0.2]])
        >>> impute(ddpm, x, method="replace", seed=1)[0, [0, 2]].tolist() == x[0, [0, 2]].tolist()
        True
    """
    _check_impute_arguments(method, num_particles, num_imputations, ess_threshold)
    twist = TWISTS.default if twist is None else TWISTS.get(twist).name
    ddpm._check_fitted()
    data = _as_partial_data(ddpm, x)
    row_labels = ddpm.as_labels(labels, data.shape[0])
    if guidance and not ddpm.num_classes:
        raise DataError("guidance: classifier-free guidance needs a class-conditional DDPM (num_classes=K)")
    if seed is not None:
        pyro.set_rng_seed(seed)
    imputations = 1 if num_imputations is None else int(num_imputations)
    missing = torch.isnan(data)
    todo = torch.nonzero(missing.any(dim=1)).flatten()
    out = data.unsqueeze(0).repeat(imputations, 1, 1)
    if todo.numel():
        rows_labels = None if row_labels is None else row_labels[todo]
        values = _fill(ddpm, data[todo], ~missing[todo], rows_labels, imputations, method, num_particles, guidance,
                       batch_size, twist=twist, ess_threshold=ess_threshold, denoise_last=denoise_last)  # fmt: skip
        values = values.to(out.dtype).cpu().reshape(imputations, todo.numel(), ddpm.data_dim)
        holes = missing[todo].unsqueeze(0).expand_as(values)
        out[:, todo] = torch.where(holes, values, out[:, todo])
    return out[0] if num_imputations is None else out


def _check_impute_arguments(method: str, num_particles: Any, num_imputations: Any, ess_threshold: Any) -> None:
    IMPUTATION_METHODS.get(method)  # a DataError listing the methods for an unknown one
    for name, value in (("num_particles", num_particles), ("num_imputations", num_imputations)):
        if value is not None and (isinstance(value, bool) or int(value) != value or value < 1):
            raise DataError(f"{name}: expected a positive integer, got {value!r}")
    if not 0.0 <= float(ess_threshold) <= 1.0:
        raise DataError(f"ess_threshold: expected a fraction in [0, 1], got {ess_threshold!r}")


def _fill(
    ddpm: DDPM,
    rows: torch.Tensor,
    mask: torch.Tensor,
    labels: torch.Tensor | None,
    imputations: int,
    method: str,
    num_particles: int,
    guidance: float,
    batch_size: int,
    **options: Any,
) -> torch.Tensor:
    """One draw per (imputation, row) pair of the rows with missing entries.

    The result is ``(imputations * len(rows), D)`` in data units. Every pair gets its own particle filter; the model
    runs on chunks of ``batch_size`` particles.
    """
    rows = rows.to(ddpm.betas.dtype)
    scaled = ddpm.scaler(torch.where(mask, rows, torch.zeros_like(rows)).to(ddpm.betas.device))
    scaled = torch.where(mask.to(scaled.device), scaled, torch.zeros_like(scaled))
    system_obs = scaled.repeat(imputations, 1)
    system_mask = mask.to(scaled.device).repeat(imputations, 1)
    system_labels = None if labels is None else labels.repeat(imputations)
    particles = 1 if method == "replace" else int(num_particles)
    chunk = max(1, int(batch_size) // particles)
    filled = []
    for start in range(0, system_obs.shape[0], chunk):
        obs, msk = system_obs[start : start + chunk], system_mask[start : start + chunk]
        chunk_labels = None
        if system_labels is not None:
            chunk_labels = system_labels[start : start + chunk].repeat_interleave(particles)
        handler = IMPUTATION_METHODS.build(method, ddpm, obs, msk, particles, labels=chunk_labels, guidance=guidance,
                                           **options)  # fmt: skip
        with handler:
            final = ddpm.model(num_samples=obs.shape[0] * particles, labels=chunk_labels, guidance=guidance)
        filled.append(handler.select(final))
    return ddpm.scaler.inverse(torch.cat(filled))


TWISTS.register(
    "forward", TwistedSMC._forward_step,
    "the forward marginal q(x_t^o | x_0^o = y): model-free, closed-form exact proposal, no network gradient",
    default=True,
)  # fmt: skip
TWISTS.register(
    "denoiser", TwistedSMC._denoiser_step,
    "N(y; x0-hat(x_t)^o, 1 - alpha_bar_t) from the network's denoised prediction, gradient-shifted proposal",
)  # fmt: skip
IMPUTATION_METHODS.register(
    "smc", partial(TwistedSMC, method="smc"), "twisted particle filter over the reverse chain (exact as P grows)",
    default=True,
)  # fmt: skip
IMPUTATION_METHODS.register(
    "replace", partial(TwistedSMC, method="replace"), "replace the observed entries at every step (fast, biased)"
)
