"""Samplers: shapes, determinism under a seed, DDIM's sub-sequence, and the reverse step's formula."""

import pyro
import pytest
import torch

from pyroflows.diffusion import DDPM, ancestral_sample, ddim_sample, ddim_timesteps, sample


@pytest.fixture
def ddpm():
    model = DDPM(3, steps=8)
    model.scaler.fit(torch.randn(50, 3) * 5)
    return model


def test_shapes_and_units(ddpm):
    assert sample(ddpm, 6).shape == (6, 3)
    assert sample(ddpm, 6, sampler="ddim", sampling_steps=3).shape == (6, 3)
    assert ancestral_sample(ddpm, 4, return_trajectory=True).shape == (9, 4, 3)
    assert ddim_sample(ddpm, 4, sampling_steps=3, return_trajectory=True).shape == (4, 4, 3)
    # clip_x0 keeps the last DDIM state (the predicted x_0) inside the data range
    x = ddim_sample(ddpm, 200, sampling_steps=2)
    assert (x >= ddpm.scaler.low - 1e-5).all() and (x <= ddpm.scaler.high + 1e-5).all()


def test_reproducible_under_a_seed(ddpm):
    pyro.set_rng_seed(7)
    a = ancestral_sample(ddpm, 5)
    pyro.set_rng_seed(7)
    b = ancestral_sample(ddpm, 5)
    assert torch.equal(a, b)
    start = torch.randn(5, 3)
    assert torch.equal(
        ddim_sample(ddpm, 5, sampling_steps=4, x_T=start), ddim_sample(ddpm, 5, sampling_steps=4, x_T=start)
    )


def test_ancestral_step_is_the_model_mean_plus_noise(ddpm):
    # One reverse step by hand with Ho et al.'s epsilon form (no clipping) equals the sampler's step.
    ddpm.clip_x0 = False
    start = torch.randn(4, 3)
    pyro.set_rng_seed(2)
    trajectory = ancestral_sample(ddpm, 4, x_T=start, return_trajectory=True)
    pyro.set_rng_seed(2)
    t = 8
    eps = ddpm.predict_noise(start, t)
    mean = (start - ddpm.betas[t] / (1 - ddpm.alpha_bar[t]).sqrt() * eps) / ddpm.alphas[t].sqrt()
    expected = mean + ddpm.betas[t].sqrt() * torch.randn(4, 3)
    assert torch.allclose(ddpm.scaler(trajectory[1]), expected, atol=1e-5)


def test_ddim_with_every_step_and_eta_one_is_stochastic_but_eta_zero_is_not(ddpm):
    start = torch.randn(5, 3)
    pyro.set_rng_seed(0)
    a = ddim_sample(ddpm, 5, x_T=start, eta=1.0)
    b = ddim_sample(ddpm, 5, x_T=start, eta=1.0)
    assert not torch.equal(a, b)


def test_ddim_timesteps():
    assert ddim_timesteps(10, 10) == list(range(1, 11))
    assert ddim_timesteps(10, 1) == [10]
    assert ddim_timesteps(1000, 4) == [1, 251, 501, 751]
    assert ddim_timesteps(100, 10) == [1, 11, 21, 31, 41, 51, 61, 71, 81, 91]
    with pytest.raises(ValueError, match=r"sampling_steps: expected an integer in \[1, 10\]"):
        ddim_timesteps(10, 11)


def test_bad_sampler_arguments(ddpm):
    with pytest.raises(ValueError, match="sampler: unknown 'euler'; expected one of ancestral, ddim"):
        sample(ddpm, 3, sampler="euler")
    with pytest.raises(ValueError, match="use sampler='ddim'"):
        sample(ddpm, 3, sampling_steps=4)
    with pytest.raises(ValueError, match="positive number of samples"):
        sample(ddpm, 0)
