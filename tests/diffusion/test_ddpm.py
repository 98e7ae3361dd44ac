"""The DDPM as a Pyro model: sites and shapes, the exact bound, Predictive, persistence, bad input."""

import numpy as np
import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import Predictive, TraceMeanField_ELBO

from pyroflows.diffusion import DDPM, forward_marginal, forward_posterior
from pyroflows.errors import CheckpointError, DataError


def _fitted(steps=4, data_dim=2, **kwargs):
    ddpm = DDPM(data_dim, steps=steps, **kwargs)
    ddpm.scaler.fit(torch.randn(100, data_dim) * 3 + 2)
    return ddpm


def test_model_and_guide_sites_and_shapes():
    ddpm = _fitted(steps=4, data_dim=3)
    x0 = torch.randn(7, 3)
    model = poutine.trace(ddpm.model).get_trace(x0)
    guide = poutine.trace(ddpm.guide).get_trace(x0)
    latent = [f"x_{t}" for t in range(4, 0, -1)]
    assert [n for n in model.stochastic_nodes if n != "data"] == latent
    assert [n for n in guide.stochastic_nodes if n != "data"] == latent
    assert model.nodes["x_0"]["is_observed"]
    assert torch.allclose(model.nodes["x_0"]["value"], ddpm.scaler(x0))
    for name in latent:
        assert model.nodes[name]["fn"].batch_shape == (7,) and model.nodes[name]["fn"].event_shape == (3,)
        assert guide.nodes[name]["value"].shape == (7, 3)
        assert model.nodes[name]["cond_indep_stack"][0].name == "data"
    sampled = poutine.trace(ddpm.model).get_trace(num_samples=5)
    assert not sampled.nodes["x_0"]["is_observed"]
    assert sampled.nodes["x"]["value"].shape == (5, 3)
    assert torch.allclose(sampled.nodes["x"]["value"], ddpm.scaler.inverse(sampled.nodes["x_0"]["value"]))


def _gauss_kl(m_q, v_q, m_p, v_p):
    return 0.5 * (torch.log(v_p / v_q) + (v_q + (m_q - m_p) ** 2) / v_p - 1).sum(-1)


def _eps_by_hand(ddpm, x, t):
    """epsilon_theta from the raw network: its output ("eps") or the v skip connection ("v")."""
    with torch.no_grad():
        out = ddpm.network(x, torch.full((x.shape[0],), t))
    if ddpm.parameterization == "eps":
        return out
    ab = ddpm.alpha_bar[t]
    return (1 - ab).sqrt() * x + ab.sqrt() * out


@pytest.mark.parametrize("reverse_variance", ["beta", "posterior"])
@pytest.mark.parametrize("clip_x0", [True, False])
@pytest.mark.parametrize("parameterization", ["v", "eps"])
def test_trace_mean_field_elbo_is_the_sum_of_gaussian_kls(reverse_variance, clip_x0, parameterization):
    torch.set_default_dtype(torch.float64)
    try:
        ddpm = _fitted(steps=3, reverse_variance=reverse_variance, clip_x0=clip_x0, parameterization=parameterization)
        x0 = torch.randn(6, 2) * 3 + 2
        pyro.set_rng_seed(3)
        loss = TraceMeanField_ELBO().loss(ddpm.model, ddpm.guide, x0)

        # By hand, with the same draws of the guide (same seed, same order: x_3, then x_2, then x_1).
        pyro.set_rng_seed(3)
        y0 = ddpm.scaler(x0)
        s = ddpm
        ab, a, b = s.alpha_bar, s.alphas, s.betas
        x3 = ab[3].sqrt() * y0 + (1 - ab[3]).sqrt() * torch.randn_like(y0)
        total = _gauss_kl(ab[3].sqrt() * y0, 1 - ab[3], torch.zeros(()), torch.ones(()))
        x = x3
        for t in (3, 2):
            m_q = (ab[t - 1].sqrt() * b[t] * y0 + a[t].sqrt() * (1 - ab[t - 1]) * x) / (1 - ab[t])
            v_q = (1 - ab[t - 1]) / (1 - ab[t]) * b[t]
            eps = _eps_by_hand(ddpm, x, t)
            x0_hat = (x - (1 - ab[t]).sqrt() * eps) / ab[t].sqrt()
            if clip_x0:
                x0_hat = x0_hat.clamp(-1, 1)
            m_p = (ab[t - 1].sqrt() * b[t] * x0_hat + a[t].sqrt() * (1 - ab[t - 1]) * x) / (1 - ab[t])
            v_p = b[t] if reverse_variance == "beta" else v_q
            total = total + _gauss_kl(m_q, v_q, m_p, v_p)
            x = m_q + v_q.sqrt() * torch.randn_like(y0)
        eps = _eps_by_hand(ddpm, x, 1)
        x0_hat = (x - (1 - ab[1]).sqrt() * eps) / ab[1].sqrt()
        if clip_x0:
            x0_hat = x0_hat.clamp(-1, 1)
        decoder = torch.distributions.Normal(x0_hat, b[1].sqrt()).log_prob(y0).sum(-1)
        total = total - decoder
        assert loss == pytest.approx(float(total.sum()), rel=1e-10)

        pyro.set_rng_seed(3)
        terms = ddpm.bound_terms(x0)
        assert terms.shape == (6, 4)
        assert float(terms.sum().detach()) == pytest.approx(float(total.sum()), rel=1e-10)
    finally:
        torch.set_default_dtype(torch.float32)


def test_kl_of_x_T_and_guide_order_use_the_forward_process():
    ddpm = _fitted(steps=5)
    x0 = torch.randn(3, 2)
    guide = poutine.trace(ddpm.guide).get_trace(x0)
    y0 = ddpm.scaler(x0)
    q_T = forward_marginal(ddpm, y0, 5)
    assert torch.allclose(guide.nodes["x_5"]["fn"].mean, q_T.mean)
    q_3 = forward_posterior(ddpm, y0, guide.nodes["x_4"]["value"], 4)
    assert torch.allclose(guide.nodes["x_3"]["fn"].mean, q_3.mean)


def test_nll_adds_the_log_jacobian_of_the_scaler():
    ddpm = _fitted(steps=4)
    x = torch.randn(50, 2) * 3 + 2
    wide = DDPM(2, steps=4)
    wide.load_state_dict(ddpm.state_dict())
    wide.scaler.low.mul_(10.0)
    wide.scaler.high.mul_(10.0)
    pyro.set_rng_seed(0)
    a = ddpm.nll(x, num_particles=4)
    pyro.set_rng_seed(0)
    b = wide.nll(10.0 * x, num_particles=4)
    assert b.nll - a.nll == pytest.approx(2 * np.log(10.0), abs=1e-4)
    assert a.n == 50 and a.se > 0


def test_nll_agrees_with_trace_mean_field_elbo():
    ddpm = _fitted(steps=5)
    x = torch.randn(200, 2) * 3 + 2
    pyro.set_rng_seed(1)
    estimate = ddpm.nll(x, num_particles=8)
    elbo = TraceMeanField_ELBO(num_particles=10).loss(ddpm.model, ddpm.guide, x) / 200
    expected = elbo - float(ddpm.scaler.log_abs_det_jacobian())
    assert estimate.nll == pytest.approx(expected, abs=4 * estimate.se + 0.02)


def test_predictive_samples_the_model():
    ddpm = _fitted(steps=3)
    samples = Predictive(ddpm.model, num_samples=2, return_sites=("x", "x_0"))(num_samples=5)
    assert samples["x"].shape == (2, 5, 2) and samples["x_0"].shape == (2, 5, 2)


def test_save_load_round_trip_is_exact(tmp_path):
    ddpm = _fitted(steps=6, schedule="cosine", network="post", reverse_variance="posterior", parameterization="eps")
    path = tmp_path / "m.pt"
    ddpm.save(path)
    again = DDPM.load(path)
    assert again.config == ddpm.config
    for (k1, v1), (k2, v2) in zip(ddpm.state_dict().items(), again.state_dict().items(), strict=True):
        assert k1 == k2 and torch.equal(v1, v2)
    x = torch.randn(9, 2)
    pyro.set_rng_seed(5)
    a = poutine.trace(ddpm.model).get_trace(num_samples=4).nodes["x"]["value"]
    pyro.set_rng_seed(5)
    b = poutine.trace(again.model).get_trace(num_samples=4).nodes["x"]["value"]
    assert torch.equal(a, b)
    assert torch.equal(ddpm.predict_noise(x, 3), again.predict_noise(x, 3))
    with pytest.raises(DataError, match="already exists"):
        ddpm.save(path)


def test_corrupt_and_foreign_model_files(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a model")
    with pytest.raises(CheckpointError, match="not a readable pyroflows model file"):
        DDPM.load(bad)
    from pyroflows.serialization import save_checkpoint

    other = tmp_path / "other.pt"
    save_checkpoint(other, kind="DDPM", config={"data_dim": 2, "steps": 0}, state_dict={})
    with pytest.raises(CheckpointError, match="corrupt DDPM model file"):
        DDPM.load(other)
    with pytest.raises(CheckpointError, match="no such model file"):
        DDPM.load(tmp_path / "missing.pt")


@pytest.mark.parametrize(
    "data, message",
    [
        (np.array([[0.0, 1.0], [np.nan, 2.0], [1.0, np.inf]]), r"2 row\(s\) hold NaN or inf, e.g. rows \[1, 2\]"),
        (np.arange(5.0), "got a 1-D array of shape"),
        (np.ones((4, 3)), r"expected shape \(N, 2\)"),
        (np.array([[0.0, 1.0], [1.0, 1.0], [2.0, 1.0]]), r"column\(s\) \[1\] are constant"),
    ],
)
def test_bad_training_data(data, message):
    from pyroflows.diffusion import train

    with pytest.raises(DataError, match=message):
        train(DDPM(2, steps=3), data, epochs=1, progress=False)


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="T must be an integer >= 1"):
        DDPM(2, steps=0)
    with pytest.raises(ValueError, match="schedule: unknown 'square'"):
        DDPM(2, schedule="square")
    with pytest.raises(ValueError, match="network: unknown 'unet'"):
        DDPM(2, network="unet")
    with pytest.raises(ValueError, match="reverse_variance"):
        DDPM(2, reverse_variance="learned")
    with pytest.raises(ValueError, match="parameterization: expected one of"):
        DDPM(2, parameterization="x0")


@pytest.mark.parametrize("parameterization", ["v", "eps"])
def test_predicted_x0_and_noise_agree(parameterization):
    # x_t = sqrt(ab) x0 + sqrt(1 - ab) eps must hold between predict_x0 and predict_noise whatever the network.
    torch.set_default_dtype(torch.float64)
    try:
        ddpm = _fitted(steps=10, clip_x0=False, parameterization=parameterization)
        x = torch.randn(8, 2)
        for t in (1, 5, 10):
            ab = ddpm.alpha_bar[t]
            x0, eps = ddpm.predict_x0(x, t), ddpm.predict_noise(x, t)
            assert torch.allclose(ab.sqrt() * x0 + (1 - ab).sqrt() * eps, x, atol=1e-10)
            assert torch.allclose(ddpm.predict_x0(x, t, eps=eps), x0, atol=1e-9)
        if parameterization == "v":  # the network's output is v = sqrt(ab) eps - sqrt(1 - ab) x0
            ab = ddpm.alpha_bar[10]
            v = ddpm.network(x, torch.full((8,), 10))
            assert torch.allclose(ab.sqrt() * ddpm.predict_noise(x, 10) - (1 - ab).sqrt() * ddpm.predict_x0(x, 10), v)
    finally:
        torch.set_default_dtype(torch.float32)


def test_files_without_a_parameterization_load_as_eps(tmp_path):
    # Models saved before the option existed predicted epsilon directly.
    config = _fitted(parameterization="eps").config
    del config["parameterization"]
    assert DDPM.from_config(config).parameterization == "eps"
    assert DDPM(2).parameterization == "v"


def test_unfitted_model_refuses_to_sample():
    with pytest.raises(DataError, match="scaler is not fitted"):
        poutine.trace(DDPM(2, steps=3).model).get_trace(num_samples=2)


def test_a_file_in_the_format_written_before_checkpointable_loads_exactly(tmp_path):
    # DDPM.save used to call save_checkpoint(kind="DDPM", config=ddpm.config(), ...) itself; files from before
    # ``parameterization`` and ``num_classes`` existed hold neither key.
    from pyroflows.serialization import save_checkpoint

    ddpm = _fitted(steps=4, parameterization="eps", schedule="cosine")
    config = dict(ddpm.config)
    del config["parameterization"], config["num_classes"]
    path = save_checkpoint(tmp_path / "old.pt", kind="DDPM", config=config, state_dict=ddpm.state_dict())
    again = DDPM.load(path)
    assert again.config == ddpm.config
    x = torch.randn(6, 2)
    assert torch.equal(again.predict_noise(x, 3), ddpm.predict_noise(x, 3))
    written = again.save(tmp_path / "new.pt")
    assert written == tmp_path / "new.pt" and DDPM.load(written).config == ddpm.config
