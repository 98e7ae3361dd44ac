"""The shared property suite of the diffusion families: every member of SCHEDULES, NETWORKS, SAMPLERS,
IMPUTATION_METHODS and TWISTS goes through the same checks, so a newly registered member is tested without touching
this file.
"""

import pyro
import pytest
import torch
from pyro import poutine

from pyroflows.diffusion import (
    DDPM,
    IMPUTATION_METHODS,
    NETWORKS,
    SAMPLERS,
    SCHEDULES,
    TWISTS,
    Sampler,
    forward_posterior,
    impute,
    make_network,
    make_schedule,
    posterior_mean,
    posterior_variance,
    sample,
)
from pyroflows.errors import DataError


@pytest.fixture
def float64():
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


def _fitted(steps=6, data_dim=2, **kwargs):
    ddpm = DDPM(data_dim, steps=steps, **kwargs)
    ddpm.scaler.fit(torch.randn(50, data_dim) * 2 + 1)
    return ddpm


@pytest.mark.parametrize(
    "registry", [SCHEDULES, NETWORKS, SAMPLERS, IMPUTATION_METHODS, TWISTS], ids=lambda r: r.family
)
def test_every_registry_has_a_registered_default_help_and_a_clean_error(registry):
    assert registry.default in registry.names() and len(registry) >= 2
    assert all(registry.get(name).help for name in registry)
    with pytest.raises(DataError, match=rf"{registry.family}: unknown 'nope'; expected one of {', '.join(registry)}"):
        registry.get("nope")


# --------------------------------------------------------------------------------------------------- schedules
@pytest.mark.parametrize("name", SCHEDULES.names())
@pytest.mark.parametrize("steps", [1, 3, 50])
def test_every_schedule_follows_the_conventions_and_rebuilds_from_its_config(name, steps):
    s = make_schedule(name, steps)
    assert s.betas.shape == s.alpha_bar.shape == (steps + 1,)
    assert s.betas[0] == 0 and s.alpha_bar[0] == 1
    assert ((s.betas[1:] > 0) & (s.betas[1:] < 1)).all()
    assert torch.allclose(s.alpha_bar, torch.cumprod(1 - s.betas, 0))
    assert make_schedule(**s.config).betas.equal(s.betas)
    assert s.config["name"] == name and s.steps == steps


@pytest.mark.parametrize("name", SCHEDULES.names())
def test_every_schedule_has_the_posterior_variance_of_bayes_rule(name):
    # q(x_{t-1} | x_t, x_0): precision alpha_t / beta_t + 1 / (1 - alpha_bar_{t-1}).
    s = make_schedule(name, 8)
    for t in range(2, 9):
        precision = s.alphas[t] / s.betas[t] + 1 / (1 - s.alpha_bar[t - 1])
        assert float(s.posterior_variance[t]) == pytest.approx(float(1 / precision), rel=1e-10)
        assert float(posterior_variance(s, t)) == pytest.approx(float(1 / precision), rel=1e-10)
    assert float(s.posterior_variance[1]) == 0.0


@pytest.mark.parametrize("name", SCHEDULES.names())
def test_every_schedule_builds_a_ddpm_that_reloads_exactly(name, tmp_path):
    ddpm = _fitted(steps=5, schedule=name)
    path = ddpm.save(tmp_path / "m.pt")
    again = DDPM.load(path)
    assert again.config == ddpm.config and again.steps == 5 and again.schedule.config == ddpm.schedule.config
    assert torch.equal(again.alpha_bar, ddpm.alpha_bar)


# ---------------------------------------------------------------------------------------------------- networks
@pytest.mark.parametrize("name", NETWORKS.names())
@pytest.mark.parametrize("num_classes", [0, 3])
def test_every_network_maps_states_to_their_shape_and_every_parameter_learns(name, num_classes):
    net = make_network(name, 3, 7, **({"num_classes": num_classes} if num_classes else {}))
    x, t = torch.randn(5, 3), torch.randint(1, 8, (5,))
    out = net(x, t) if not num_classes else net(x, t, torch.randint(0, num_classes + 1, (5,)))
    assert out.shape == (5, 3) and torch.isfinite(out).all()
    out.pow(2).sum().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None]
    if num_classes:  # labels were given: the label embedding learns too
        assert not missing
    else:
        assert not [n for n in missing if "label" not in n]


# ---------------------------------------------------------------------------------------------------- samplers
@pytest.mark.parametrize("name", SAMPLERS.names())
def test_every_sampler_returns_finite_samples_of_the_right_shape(name):
    ddpm = _fitted(steps=6, data_dim=3)
    sampler = SAMPLERS.build(name, ddpm)
    assert isinstance(sampler, Sampler) and sampler.timesteps and sampler.timesteps == sorted(sampler.timesteps)[::-1]
    assert all(1 <= t <= ddpm.steps for t in sampler.timesteps)
    x = sample(ddpm, 7, sampler=name)
    assert x.shape == (7, 3) and torch.isfinite(x).all()
    trajectory = sampler.sample(4, return_trajectory=True)
    assert trajectory.shape == (len(sampler.timesteps) + 1, 4, 3) and torch.isfinite(trajectory).all()
    assert SAMPLERS.build(name, ddpm, ddpm.steps).timesteps == list(range(ddpm.steps, 0, -1))


@pytest.mark.parametrize("name", SAMPLERS.names())
def test_every_sampler_is_reproducible_under_a_seed_and_a_generator(name):
    ddpm = _fitted(steps=5)
    pyro.set_rng_seed(3)
    a = sample(ddpm, 6, sampler=name)
    pyro.set_rng_seed(3)
    assert torch.equal(a, sample(ddpm, 6, sampler=name))
    b = sample(ddpm, 6, sampler=name, generator=torch.Generator().manual_seed(9))
    assert torch.equal(b, sample(ddpm, 6, sampler=name, generator=torch.Generator().manual_seed(9)))
    sampler = SAMPLERS.build(name, ddpm)
    start = torch.randn(6, 2)
    one = sampler.sample(6, x_T=start, generator=torch.Generator().manual_seed(1))
    two = sampler.sample(6, x_T=start, generator=torch.Generator().manual_seed(2))
    # A deterministic sampler maps x_T to one sample; a stochastic one draws noise on the way.
    assert torch.equal(one, two) != sampler.stochastic


def test_ancestral_at_t_steps_is_the_pyro_models_own_chain(float64):
    # Condition DDPM.model on the sampler's trajectory: each state is the model site's loc plus sigma_t times the
    # generator's next normal draw, and the denoised last state is the x_0 site's mean.
    ddpm = _fitted(steps=5)
    states = SAMPLERS.build("ancestral", ddpm, 5).sample(4, return_trajectory=True,
                                                         generator=torch.Generator().manual_seed(0))  # fmt: skip
    scaled = ddpm.scaler(states)
    data = {f"x_{5 - k}": scaled[k] for k in range(6)}
    trace = poutine.trace(poutine.condition(ddpm.model, data=data)).get_trace(num_samples=4)
    draws = torch.Generator().manual_seed(0)
    assert torch.allclose(scaled[0], torch.randn(4, 2, generator=draws), atol=1e-12)
    for k, t in enumerate(range(5, 0, -1)):
        site = trace.nodes[f"x_{t - 1}"]["fn"].base_dist
        noise = torch.randn(4, 2, generator=draws) if t > 1 else torch.zeros(4, 2)
        assert torch.allclose(scaled[k + 1], site.loc + site.scale * noise, atol=1e-10)


def test_ddim_with_eta_one_on_every_step_is_ancestral_with_the_posterior_variance(float64):
    ddpm = _fitted(steps=6, clip_x0=False, reverse_variance="posterior")
    ancestral = SAMPLERS.build("ancestral", ddpm, 6).sample(5, generator=torch.Generator().manual_seed(4))
    ddim = SAMPLERS.build("ddim", ddpm, 6, eta=1.0).sample(5, generator=torch.Generator().manual_seed(4))
    assert torch.allclose(ancestral, ddim, atol=1e-9)


def test_the_reverse_mean_is_the_forward_posterior_mean_at_the_predicted_clean_point(float64):
    ddpm = _fitted(steps=6)
    x = torch.randn(5, 2)
    for t in (2, 4, 6):
        x0 = ddpm.predict_x0(x, t)
        assert torch.equal(ddpm.reverse_mean(x, t), posterior_mean(ddpm, x0, x, t))
        assert torch.allclose(forward_posterior(ddpm, x0, x, t).mean, ddpm.reverse_mean(x, t))
    assert torch.equal(posterior_mean(ddpm, x0, x, 1), x0)


# ------------------------------------------------------------------------------------------ imputation methods
@pytest.mark.parametrize("twist", TWISTS.names())
@pytest.mark.parametrize("method", IMPUTATION_METHODS.names())
def test_every_imputation_method_keeps_observed_entries_and_is_reproducible(method, twist):
    ddpm = _fitted(steps=4, data_dim=3)
    x = torch.tensor([[0.5, float("nan"), 1.0], [float("nan")] * 3, [0.1, 0.2, 0.3]], dtype=torch.float64)
    a = impute(ddpm, x, method=method, twist=twist, num_particles=8, seed=2)
    assert a.dtype == torch.float64 and torch.isfinite(a).all()
    observed = ~torch.isnan(x)
    assert torch.equal(a[observed], x[observed])
    assert torch.equal(a, impute(ddpm, x, method=method, twist=twist, num_particles=8, seed=2))
