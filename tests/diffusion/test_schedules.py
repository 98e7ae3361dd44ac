"""Schedules: the conventions (alpha_bar_0 = 1, betas in (0, 1)), each family's formula, and bad input."""

import math

import pytest
import torch

from pyroflows.diffusion import CosineSchedule, LinearSchedule, PolynomialSchedule, make_schedule


@pytest.mark.parametrize("name", ["linear", "polynomial", "cosine"])
@pytest.mark.parametrize("steps", [1, 2, 10, 100, 1000])
def test_conventions(name, steps):
    s = make_schedule(name, steps)
    assert s.betas.shape == s.alphas.shape == s.alpha_bar.shape == (steps + 1,)
    assert s.betas[0] == 0 and s.alpha_bar[0] == 1
    assert ((s.betas[1:] > 0) & (s.betas[1:] < 1)).all()
    assert torch.allclose(s.alpha_bar, torch.cumprod(1 - s.betas, 0))
    assert (s.alpha_bar[1:] < s.alpha_bar[:-1]).all()
    assert make_schedule(**s.config).betas.equal(s.betas)


def test_polynomial_matches_its_definition():
    s = PolynomialSchedule(10, power=2, max_noise=0.999)
    t = torch.arange(11, dtype=torch.float64)
    assert torch.allclose(1 - s.alpha_bar, 0.999 * (t / 10) ** 2, atol=1e-12)
    cubic = PolynomialSchedule(7, power=3, max_noise=0.9)
    assert torch.allclose(1 - cubic.alpha_bar, 0.9 * (torch.arange(8.0, dtype=torch.float64) / 7) ** 3, atol=1e-12)


def test_linear_is_ho_at_1000_and_clipped_at_small_t():
    s = LinearSchedule(1000)
    assert torch.allclose(s.betas[1:], torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64))
    assert abs(float(s.alpha_bar[-1]) - 4.04e-5) < 1e-6
    small = LinearSchedule(10)  # rescaled beta_T would be 2.0
    assert float(small.betas.max()) == pytest.approx(0.999)
    unscaled = LinearSchedule(10, rescale=False)  # diffusers' convention: far from pure noise at T = 10
    assert float(unscaled.alpha_bar[-1]) == pytest.approx(0.90, abs=0.01)


def test_cosine_matches_nichol_dhariwal():
    s = CosineSchedule(50)
    f = [math.cos((t / 50 + 0.008) / 1.008 * math.pi / 2) ** 2 for t in range(51)]
    expected = torch.tensor([1 - min(1 - f[t] / f[t - 1], 0.999) for t in range(1, 51)], dtype=torch.float64)
    assert torch.allclose(s.alphas[1:], expected)
    assert float(s.betas[-1]) == pytest.approx(0.999)


@pytest.mark.parametrize("steps", [0, -3, 2.5])
def test_bad_step_counts(steps):
    with pytest.raises(ValueError, match="T must be an integer >= 1"):
        make_schedule("polynomial", steps)


def test_unknown_schedule():
    with pytest.raises(ValueError, match="schedule: unknown 'sigmoid'; expected one of linear, polynomial, cosine"):
        make_schedule("sigmoid", 10)


def test_polynomial_rejects_max_noise_of_one():
    with pytest.raises(ValueError, match="max_noise"):
        PolynomialSchedule(10, max_noise=1.0)
