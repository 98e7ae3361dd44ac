"""The closed forms of the forward process against simulation and against Bayes' rule."""

import pytest
import torch

from pyroflows.diffusion import PolynomialSchedule, forward_marginal, forward_posterior, make_schedule


@pytest.mark.parametrize("name", ["linear", "polynomial", "cosine"])
def test_marginal_matches_simulating_the_chain(name):
    torch.manual_seed(0)
    s = make_schedule(name, 20)
    x0 = torch.tensor([[1.5, -0.5]], dtype=torch.float64)
    n = 200_000
    x = x0.expand(n, 2).clone()
    for t in range(1, 21):
        x = s.alphas[t].sqrt() * x + s.betas[t].sqrt() * torch.randn_like(x)
        if t in (1, 5, 20):
            q = forward_marginal(s, x0, t)
            mean, std = q.mean[0], q.stddev[0]
            # Tolerances: 5 standard errors of the sample mean and of the sample variance.
            assert torch.allclose(x.mean(0), mean, atol=float(5 * std.max() / n**0.5))
            var_se = (2 / (n - 1)) ** 0.5 * std.pow(2)
            assert ((x.var(0) - std.pow(2)).abs() < 5 * var_se).all()


def test_marginal_batched_steps_and_shapes():
    s = PolynomialSchedule(10)
    x0 = torch.randn(4, 3, dtype=torch.float64)
    t = torch.tensor([1, 3, 5, 10])
    q = forward_marginal(s, x0, t)
    assert q.batch_shape == (4,) and q.event_shape == (3,)
    for i in range(4):
        assert torch.allclose(q.mean[i], s.alpha_bar[t[i]].sqrt() * x0[i])
        assert torch.allclose(q.stddev[i], (1 - s.alpha_bar[t[i]]).sqrt().expand(3))


def test_posterior_matches_bayes_rule():
    # q(x_{t-1} | x_t, x_0) propto q(x_t | x_{t-1}) q(x_{t-1} | x_0): a product of Gaussians in x_{t-1}.
    s = make_schedule("cosine", 12)
    x0 = torch.randn(5, 2, dtype=torch.float64)
    xt = torch.randn(5, 2, dtype=torch.float64)
    for t in (2, 6, 12):
        a, b, ab_prev = s.alphas[t], s.betas[t], s.alpha_bar[t - 1]
        precision = a / b + 1 / (1 - ab_prev)
        mean = (a.sqrt() * xt / b + ab_prev.sqrt() * x0 / (1 - ab_prev)) / precision
        q = forward_posterior(s, x0, xt, t)
        assert torch.allclose(q.mean, mean, atol=1e-12)
        assert torch.allclose(q.variance, (1 / precision).expand(5, 2), atol=1e-12)
        assert torch.allclose(q.variance[0, 0], s.posterior_variance[t])


def test_posterior_matches_simulated_conditional():
    # Regress simulated x_{t-1} on (x_t, x_0 fixed): the conditional mean slope and residual variance.
    torch.manual_seed(1)
    s = PolynomialSchedule(10)
    t, n = 4, 400_000
    x0 = torch.full((n, 1), 0.7, dtype=torch.float64)
    prev = forward_marginal(s, x0, t - 1).sample()
    xt = s.alphas[t].sqrt() * prev + s.betas[t].sqrt() * torch.randn_like(prev)
    design = torch.cat([torch.ones_like(xt), xt], dim=1)
    coef = torch.linalg.lstsq(design, prev).solution.flatten()
    residual = (prev - design @ coef.unsqueeze(-1)).var()
    q = forward_posterior(s, x0[:2], torch.tensor([[0.0], [1.0]], dtype=torch.float64), t)
    slope = q.mean[1, 0] - q.mean[0, 0]
    assert float(coef[1]) == pytest.approx(float(slope), abs=0.01)
    assert float(coef[0]) == pytest.approx(float(q.mean[0, 0]), abs=0.01)
    assert float(residual) == pytest.approx(float(q.variance[0, 0]), rel=0.01)


@pytest.mark.parametrize("t", [0, 11])
def test_marginal_rejects_steps_out_of_range(t):
    with pytest.raises(ValueError, match=r"t: expected diffusion steps in \[1, 10\]"):
        forward_marginal(PolynomialSchedule(10), torch.zeros(1, 2), t)


def test_posterior_rejects_step_one():
    with pytest.raises(ValueError, match=r"expected diffusion steps in \[2, 10\]"):
        forward_posterior(PolynomialSchedule(10), torch.zeros(1, 2), torch.zeros(1, 2), 1)
