"""Imputation by SMC over the reverse chain: hand-computed weights, exactness on a linear-Gaussian model, every
missingness pattern, bit-exact observed entries, bad input."""

import math

import numpy as np
import pyro
import pytest
import torch
from torch import nn

from pyroflows.diffusion import DDPM, TWISTS, TwistedSMC, ancestral_sample, impute, systematic_resample
from pyroflows.errors import DataError


class GaussianEps(nn.Module):
    r"""The exact noise predictor for Gaussian data :math:`x_0 \sim \mathcal N(m, S)` (scaled units):
    :math:`\epsilon = (x_t - \sqrt{\bar\alpha_t}\, E[x_0 | x_t]) / \sqrt{1 - \bar\alpha_t}` with the Gaussian
    posterior mean :math:`E[x_0|x_t] = m + K_t (x_t - \sqrt{\bar\alpha_t} m)`."""

    def __init__(self, alpha_bar, m, S):
        super().__init__()
        self.register_buffer("m", m)
        self.register_buffer("S", S)
        self.register_buffer("ab", alpha_bar.clone())

    def gain(self, t):
        a, v = self.ab[t].sqrt(), 1 - self.ab[t]
        eye = torch.eye(self.S.shape[0], dtype=self.S.dtype)
        return a * self.S @ torch.linalg.inv(a**2 * self.S + v * eye), a, v

    def forward(self, x_t, t):
        out = torch.empty_like(x_t)
        for s in t.unique():
            gain, a, v = self.gain(int(s))
            rows = t == s
            x0 = self.m + (x_t[rows] - a * self.m) @ gain.T
            out[rows] = (x_t[rows] - a * x0) / v.sqrt()
        return out


def _gaussian_ddpm(steps, m, S):
    """A DDPM whose network is exact for N(m, S), with the identity scaler (data units = scaled units)."""
    ddpm = DDPM(len(m), steps=steps, parameterization="eps", clip_x0=False)
    ddpm.scaler.fit(torch.stack([-torch.ones(len(m)), torch.ones(len(m))]))
    ddpm.network = GaussianEps(ddpm.alpha_bar, m, S)
    return ddpm


def _model_conditional(ddpm, observed, y, denoise_last):
    """The model's exact conditional of the missing coordinates given x_0[observed] = y: the chain is linear and
    Gaussian, so propagate the mean and covariance of x_t down to x_1 and condition in closed form."""
    m = ddpm.network.m
    dim = m.shape[0]
    eye = torch.eye(dim, dtype=m.dtype)
    mean, cov = torch.zeros(dim, dtype=m.dtype), eye.clone()
    for t in range(ddpm.steps, 0, -1):
        gain, a, _ = ddpm.network.gain(t)
        ab, abp, beta, alpha = ddpm.alpha_bar[t], ddpm.alpha_bar[t - 1], ddpm.betas[t], ddpm.alphas[t]
        c1, c2 = abp.sqrt() * beta / (1 - ab), alpha.sqrt() * (1 - abp) / (1 - ab)
        A, b = c1 * gain + c2 * eye, c1 * (eye - a * gain) @ m
        s2 = ddpm.reverse_scale(t) ** 2
        if t > 1:
            mean, cov = A @ mean + b, A @ cov @ A.T + s2 * eye
    o = torch.tensor(observed)
    u = torch.tensor([d for d in range(dim) if d not in observed])
    if denoise_last:  # x_1 | x_0^o = y, then x_0^u = (A x_1 + b)^u
        A_o = A[o]
        gain = cov @ A_o.T @ torch.linalg.inv(A_o @ cov @ A_o.T + s2 * torch.eye(len(o), dtype=m.dtype))
        mean1 = mean + gain @ (y - A_o @ mean - b[o])
        cov1 = cov - gain @ A_o @ cov
        return A[u] @ mean1 + b[u], A[u] @ cov1 @ A[u].T
    mean0, cov0 = A @ mean + b, A @ cov @ A.T + s2 * eye
    gain = cov0[u][:, o] @ torch.linalg.inv(cov0[o][:, o])
    return mean0[u] + gain @ (y - mean0[o]), cov0[u][:, u] - gain @ cov0[o][:, u]


M = torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64)
S = torch.tensor([[0.10, 0.08, 0.02], [0.08, 0.10, 0.03], [0.02, 0.03, 0.05]], dtype=torch.float64)


@pytest.fixture
def float64():
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


def test_systematic_resampling_counts():
    pyro.set_rng_seed(0)
    weights = torch.tensor([[0.1, 0.2, 0.3, 0.4], [1.0, 0.0, 0.0, 0.0]]).repeat(500, 1)
    ancestors = systematic_resample(weights.log())
    for row, w in zip(ancestors[:2], weights[:2], strict=True):
        counts = torch.bincount(row, minlength=4)
        assert torch.all((counts - 4 * w).abs() < 1)  # each ancestor floor(P w) or ceil(P w) times
    # over many draws each ancestor is chosen P w_j times on average
    mean_counts = torch.stack([torch.bincount(r, minlength=4) for r in ancestors[::2]]).double().mean(0)
    assert torch.allclose(mean_counts, torch.tensor([0.4, 0.8, 1.2, 1.6], dtype=torch.float64), atol=0.08)


def test_smc_weights_by_hand_for_a_one_step_chain(float64):
    """T = 1: x_1 ~ N(0, I) proposed with the twist; the weight at x_0 is N(y; mu^o(x_1), sigma_1^2) over the
    twist N(x_1^o; sqrt(ab_1) y, 1 - ab_1), written out here with the scalar Gaussian density."""
    ddpm = _gaussian_ddpm(1, M[:2], S[:2, :2])
    y = torch.tensor([[0.4, 0.0]])
    mask = torch.tensor([[True, False]])
    handler = TwistedSMC(ddpm, y, mask, num_particles=5, twist="forward", record=True)
    pyro.set_rng_seed(1)
    with handler:
        final = ddpm.model(num_samples=5)
    first, last = handler.records
    ab1, sigma2 = float(ddpm.alpha_bar[1]), float(ddpm.betas[1])
    normal = lambda x, mean, var: -0.5 * (x - mean) ** 2 / var - 0.5 * math.log(2 * math.pi * var)  # noqa: E731
    # site x_1: prior N(0, 1) predicting N(sqrt(ab_1) y; 0, 1 + 1 - ab_1), the same for every particle
    assert torch.allclose(first["log_increment"], torch.full((1, 5), normal(math.sqrt(ab1) * 0.4, 0, 2 - ab1)))
    x1 = first["value"][0]
    for p in range(5):
        mu = ddpm.reverse_mean(x1[p : p + 1], 1)[0]
        expected = normal(0.4, float(mu[0]), sigma2) - normal(float(x1[p, 0]), math.sqrt(ab1) * 0.4, 1 - ab1)
        assert last["log_increment"][0, p].item() == pytest.approx(expected, abs=1e-10)
        assert last["loc"][0, p].tolist() == pytest.approx(mu.tolist(), abs=1e-12)
    # the final weights are the sum of the increments; the observed coordinate is exactly y, the other the mean
    assert torch.allclose(handler.log_weights, first["log_increment"] + last["log_increment"])
    assert torch.all(final[:, 0] == 0.4)
    assert torch.allclose(final[:, 1], last["loc"][0, :, 1])


def test_fully_adapted_weight_equals_the_generic_importance_weight(float64):
    """T = 2, middle step: the closed-form weight w(x_2) equals p(x_1|x_2) p~_1(x_1) / (q(x_1|x_2) p~_2(x_2)) at
    the proposed x_1, the generic SMC weight, whatever x_1 was drawn."""
    ddpm = _gaussian_ddpm(2, M[:2], S[:2, :2])
    y = torch.tensor([[-0.3, 0.0]])
    handler = TwistedSMC(ddpm, y, torch.tensor([[True, False]]), num_particles=6, twist="forward", ess_threshold=0.0,
                         record=True)  # fmt: skip
    pyro.set_rng_seed(2)
    with handler:
        ddpm.model(num_samples=6)
    x2, x1 = handler.records[0]["value"][0], handler.records[1]["value"][0]
    mu = ddpm.reverse_mean(x2, 2)
    s2 = ddpm.reverse_scale(2) ** 2
    a1, v1 = ddpm.alpha_bar[1].sqrt(), 1 - ddpm.alpha_bar[1]
    a2, v2 = ddpm.alpha_bar[2].sqrt(), 1 - ddpm.alpha_bar[2]
    normal = torch.distributions.Normal
    q_var = s2 * v1 / (s2 + v1)
    q_mean = (v1 * mu[:, 0] + s2 * a1 * y[0, 0]) / (s2 + v1)
    model_step = normal(mu[:, 0], s2.sqrt()).log_prob(x1[:, 0])
    twist_1 = normal(a1 * y[0, 0], v1.sqrt()).log_prob(x1[:, 0])
    proposal = normal(q_mean, q_var.sqrt()).log_prob(x1[:, 0])
    twist_2 = normal(a2 * y[0, 0], v2.sqrt()).log_prob(x2[:, 0])
    generic = model_step + twist_1 - proposal - twist_2
    assert torch.allclose(handler.records[1]["log_increment"][0], generic, atol=1e-10)


def _posterior_mean_and_jacobian(ddpm, x, t):
    """E[x_0 | x_t] for x_0 ~ N(m, S) written out from Bayes' rule, and its (constant) Jacobian in x_t."""
    m, cov = ddpm.network.m, ddpm.network.S
    a, v = ddpm.alpha_bar[t].sqrt(), 1 - ddpm.alpha_bar[t]
    jacobian = a * cov @ torch.linalg.inv(a**2 * cov + v * torch.eye(len(m), dtype=m.dtype))
    return m + (x - a * m) @ jacobian.T, jacobian


def _normal(x, mean, var):
    return -0.5 * (x - mean) ** 2 / var - 0.5 * torch.log(2 * math.pi * torch.as_tensor(var, dtype=torch.float64))


def test_denoiser_twist_weights_by_hand_for_a_one_step_chain(float64):
    """T = 1, denoiser twist: x_1 ~ N(0, I) (no gradient before the first site) weighted by
    N(y; x0-hat(x_1)^o, 1 - ab_1); at x_0 the weight N(y; mu^o(x_1), sigma_1^2) / p~_1 is exactly 1, because
    mu(x_1) = x0-hat(x_1) and sigma_1^2 = beta_1 = 1 - ab_1: the twist at t = 1 is the decoder's own likelihood."""
    ddpm = _gaussian_ddpm(1, M[:2], S[:2, :2])
    y = torch.tensor([[0.4, 0.0]])
    handler = TwistedSMC(ddpm, y, torch.tensor([[True, False]]), num_particles=5, twist="denoiser", record=True)
    pyro.set_rng_seed(1)
    with handler:
        final = ddpm.model(num_samples=5)
    first, last = handler.records
    x1 = first["value"][0]
    assert torch.equal(first["proposal_mean"], torch.zeros(1, 5, 2))  # the prior itself
    x0_hat, _ = _posterior_mean_and_jacobian(ddpm, x1, 1)
    expected = _normal(0.4, x0_hat[:, 0], 1 - ddpm.alpha_bar[1])
    assert torch.allclose(first["log_increment"][0], expected, atol=1e-10)
    assert torch.allclose(last["loc"][0], x0_hat, atol=1e-12)
    assert torch.allclose(last["log_increment"], torch.zeros(1, 5), atol=1e-10)
    assert torch.allclose(handler.log_weights, first["log_increment"] + last["log_increment"])
    assert torch.all(final[:, 0] == 0.4)
    assert torch.allclose(final[:, 1], x0_hat[:, 1], atol=1e-12)


def test_denoiser_twist_proposal_and_weights_by_hand_for_a_two_step_chain(float64):
    """T = 2, denoiser twist, middle site: the proposal mean is mu(x_2) + beta_2 / sqrt(alpha_2) grad log p~_2 with
    the gradient (y - x0-hat^o) / (1 - ab_2) J^o written out, and the weight is the generic SMC ratio
    p(x_1|x_2) p~_1(x_1) / (q(x_1|x_2) p~_2(x_2)) at the proposed x_1."""
    ddpm = _gaussian_ddpm(2, M[:2], S[:2, :2])
    y = torch.tensor([[-0.3, 0.0]])
    handler = TwistedSMC(ddpm, y, torch.tensor([[True, False]]), num_particles=6, twist="denoiser",
                         ess_threshold=0.0, record=True)  # fmt: skip
    pyro.set_rng_seed(2)
    with handler:
        ddpm.model(num_samples=6)
    top, middle, last = handler.records
    x2, x1 = top["value"][0], middle["value"][0]
    v2, v1 = 1 - ddpm.alpha_bar[2], 1 - ddpm.alpha_bar[1]
    x0_hat2, jacobian2 = _posterior_mean_and_jacobian(ddpm, x2, 2)
    x0_hat1, _ = _posterior_mean_and_jacobian(ddpm, x1, 1)
    grad = ((y[0, 0] - x0_hat2[:, :1]) / v2) * jacobian2[0]
    mu = ddpm.reverse_mean(x2, 2)
    s2 = ddpm.reverse_scale(2) ** 2
    q_mean = mu + ddpm.betas[2] / ddpm.alphas[2].sqrt() * grad
    assert torch.allclose(middle["proposal_mean"][0], q_mean, atol=1e-12)
    twist2, twist1 = _normal(y[0, 0], x0_hat2[:, 0], v2), _normal(y[0, 0], x0_hat1[:, 0], v1)
    generic = (_normal(x1, mu, s2) - _normal(x1, q_mean, s2)).sum(-1) + twist1 - twist2
    assert torch.allclose(top["log_increment"][0], twist2, atol=1e-10)
    assert torch.allclose(middle["log_increment"][0], generic, atol=1e-10)
    assert torch.allclose(last["log_increment"], torch.zeros(1, 6), atol=1e-10)
    # the weights telescope: their sum is log p(x_2, x_1, x_0^o = y) - log q(x_2, x_1), the importance weight
    log_target = _normal(x2, 0.0, 1.0).sum(-1) + _normal(x1, mu, s2).sum(-1)
    log_target = log_target + _normal(y[0, 0], ddpm.reverse_mean(x1, 1)[:, 0], ddpm.reverse_scale(1) ** 2)
    log_proposal = _normal(x2, 0.0, 1.0).sum(-1) + _normal(x1, q_mean, s2).sum(-1)
    assert torch.allclose(handler.log_weights[0], log_target - log_proposal, atol=1e-9)


def test_twists_registry_and_no_gradient_left_on_the_network(float64):
    assert set(TWISTS.names()) == {"forward", "denoiser"} and TWISTS.default in TWISTS
    ddpm = DDPM(2, steps=3)
    ddpm.scaler.fit(torch.randn(40, 2))
    out = impute(ddpm, [[0.1, float("nan")]], twist="denoiser", num_particles=4, seed=0)
    assert torch.isfinite(out).all()
    assert all(p.grad is None for p in ddpm.parameters())
    with pytest.raises(DataError, match="twist: unknown 'score'; expected one of forward, denoiser"):
        impute(ddpm, [[0.1, float("nan")]], twist="score")


@pytest.mark.parametrize("twist", ["forward", "denoiser"])
@pytest.mark.parametrize("denoise_last", [False, True])
def test_smc_matches_the_models_exact_conditional_on_linear_gaussian_data(float64, denoise_last, twist):
    """With a network exact for Gaussian data the model's conditional is Gaussian and known in closed form; SMC with
    256 particles reproduces its mean and covariance, replacement does not."""
    ddpm = _gaussian_ddpm(10, M, S)
    y = torch.tensor([0.75])  # 2 standard deviations above the mean of column 0: a low-density observation
    mean, cov = _model_conditional(ddpm, [0], y, denoise_last)
    x = torch.tensor([[0.75, float("nan"), float("nan")]])
    draws = impute(ddpm, x, num_particles=256, num_imputations=3000, seed=0, twist=twist, denoise_last=denoise_last)
    draws = draws[:, 0, 1:]
    se = (cov.diagonal() / draws.shape[0]).sqrt()
    assert torch.all((draws.mean(0) - mean).abs() < 4 * se + 0.01), (draws.mean(0), mean)
    assert torch.allclose(torch.cov(draws.T), cov, atol=0.15 * float(cov.diagonal().max()))
    replaced = impute(ddpm, x, method="replace", num_imputations=3000, seed=0, denoise_last=denoise_last)[:, 0, 1:]
    assert (replaced.mean(0) - mean).abs().max() > 4 * (draws.mean(0) - mean).abs().max()


def test_model_conditional_is_close_to_the_data_conditional(float64):
    """With the exact network and T = 100 the model is close to the data (at T = 10 its conditional mean is off by
    0.03, a discretisation error of the chain itself), so SMC recovers the data's closed-form conditional."""
    ddpm = _gaussian_ddpm(100, M, S)
    x = torch.tensor([[float("nan"), 0.2, float("nan")]])
    draws = impute(ddpm, x, num_particles=64, num_imputations=2000, seed=3)[:, 0]
    o, u = [1], [0, 2]
    gain = S[u][:, o] @ torch.linalg.inv(S[o][:, o])
    mean = M[u] + gain @ (torch.tensor([0.2]) - M[o])
    cov = S[u][:, u] - gain @ S[o][:, u]
    assert torch.allclose(draws[:, u].mean(0), mean, atol=0.02)
    assert torch.allclose(draws[:, u].var(0), cov.diagonal(), rtol=0.15)


def test_every_missingness_pattern_and_exact_observed_entries(float64):
    ddpm = _gaussian_ddpm(4, M, S)
    nan = float("nan")
    rng = np.random.default_rng(0)
    values = rng.normal(size=(8, 3)) * 0.3
    patterns = [[a, b, c] for a in (0, 1) for b in (0, 1) for c in (0, 1)]  # 1 = missing; all 8 patterns
    x = np.where(np.array(patterns, dtype=bool), nan, values)
    for method in ("smc", "replace"):
        out = impute(ddpm, x, method=method, num_particles=8, num_imputations=3, seed=0)
        assert out.shape == (3, 8, 3) and out.dtype == torch.float64 and torch.isfinite(out).all()
        observed = ~np.isnan(x)
        for k in range(3):
            assert np.array_equal(out[k].numpy()[observed], x[observed])  # bit-exact
        assert np.array_equal(out[:, 0].numpy(), np.repeat(x[:1], 3, 0))  # no entry missing: as is
    # all missing: the unconditional sampler with the same random numbers
    pyro.set_rng_seed(5)
    unconditional = ancestral_sample(ddpm, 4)
    every = impute(ddpm, np.full((4, 3), nan), num_particles=1, seed=5)
    assert torch.allclose(every, unconditional.double(), atol=1e-12)


def test_float32_input_is_kept_bit_exact():
    ddpm = DDPM(2, steps=3)
    ddpm.scaler.fit(torch.randn(40, 2))
    x = torch.tensor([[0.123456789, float("nan")], [float("nan"), -1.5]], dtype=torch.float32)
    out = impute(ddpm, x, num_particles=4, seed=0)
    assert out.dtype == torch.float32 and out[0, 0] == x[0, 0] and out[1, 1] == x[1, 1]


def test_labelled_imputation_and_seed_reproducibility():
    ddpm = DDPM(2, steps=3, num_classes=2)
    ddpm.scaler.fit(torch.randn(40, 2))
    x = torch.tensor([[0.5, float("nan")]] * 3)
    a = impute(ddpm, x, labels=[0, 1, 1], guidance=1.0, num_particles=4, seed=7)
    b = impute(ddpm, x, labels=[0, 1, 1], guidance=1.0, num_particles=4, seed=7)
    assert torch.equal(a, b)
    with pytest.raises(DataError, match="labels: expected 3 label"):
        impute(ddpm, x, labels=[0, 1])


def test_bad_input():
    ddpm = DDPM(2, steps=3)
    with pytest.raises(DataError, match="not fitted"):
        impute(ddpm, [[0.0, float("nan")]])
    ddpm.scaler.fit(torch.randn(40, 2))
    with pytest.raises(DataError, match=r"x: expected shape \(N, 2\)"):
        impute(ddpm, [[0.0, float("nan"), 1.0]])
    with pytest.raises(DataError, match="inf"):
        impute(ddpm, [[float("inf"), float("nan")]])
    with pytest.raises(DataError, match="no classes"):
        impute(ddpm, [[0.0, float("nan")]], labels=[0])
    with pytest.raises(ValueError, match="method"):
        impute(ddpm, [[0.0, float("nan")]], method="gibbs")
    with pytest.raises(ValueError, match="num_particles"):
        impute(ddpm, [[0.0, float("nan")]], num_particles=0)
    with pytest.raises(ValueError, match="num_imputations"):
        impute(ddpm, [[0.0, float("nan")]], num_imputations=0)
