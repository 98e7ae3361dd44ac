"""CompactFlow as a distribution: support, normalisation, out-of-support behaviour, precision, save/load."""

from __future__ import annotations

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

from pyroflows.errors import CheckpointError, DataError
from pyroflows.flows import CompactFlow

CONFIGS = {
    "radial": dict(transform="radial", num_layers=4),
    "radial-normal-base": dict(transform="radial", num_layers=4, base="normal"),
    "spline": dict(transform="spline", num_layers=1, count_bins=8),
    "spline-2-layers": dict(transform="spline", num_layers=2, count_bins=8, order="quadratic"),
    "spline-free-ends": dict(transform="spline", num_layers=1, ends="free"),
    "spline-fixed-ends": dict(transform="spline", num_layers=1, ends="fixed"),
    "no-tail-layer": dict(transform="radial", num_layers=3, tail_slopes=False),
}


def _randomised(flow: CompactFlow, scale: float = 0.5) -> CompactFlow:
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return flow


@pytest.fixture(params=sorted(CONFIGS))
def flow_1d(request) -> CompactFlow:
    return _randomised(CompactFlow(1.0, 2.5, **CONFIGS[request.param]))


def _integrate_1d(flow: CompactFlow, low: float, high: float, n: int = 400_001) -> float:
    # Quadrature in logit coordinates, where the integrand is smooth even when the density is unbounded at the ends.
    x = torch.linspace(-40, 40, n, dtype=torch.float64)
    y = high * torch.sigmoid(x) + low * torch.sigmoid(-x)
    dy_dx = (high - low) * torch.sigmoid(x) * torch.sigmoid(-x)
    keep = (y > low) & (y < high)
    with torch.no_grad():
        density = flow().log_prob(y[keep, None]).exp() * dy_dx[keep]
    return torch.trapezoid(density, x[keep]).item()


def test_density_integrates_to_one(flow_1d):
    assert _integrate_1d(flow_1d, 1.0, 2.5) == pytest.approx(1.0, abs=1e-4)


def test_density_unbounded_at_the_ends_still_integrates_to_one():
    torch.manual_seed(0)  # Pyro's spline initialisation draws from the global generator
    flow = _randomised(CompactFlow(-1.0, 1.0, num_layers=3))
    with torch.no_grad():
        flow.layers[0].log_slope_lower.fill_(math.log(2.5))  # logit-space tail decays like exp(-|x| / 2.5)
        flow.layers[0].log_slope_upper.fill_(math.log(3.0))
    # Three randomised splines compose into narrow peaks: a finer grid than the other flows need (the trapezoid
    # error was 3e-4 at 400,001 points and 4e-6 at 1,600,001 for one draw of the parameters).
    assert _integrate_1d(flow, -1.0, 1.0, n=1_600_001) == pytest.approx(1.0, abs=1e-4)
    near_edge = torch.tensor([[-1 + 1e-6], [-1 + 1e-3]], dtype=torch.float64)
    density = flow().log_prob(near_edge).exp()
    assert density[0] > 10 * density[1]  # grows without bound towards the edge


@pytest.mark.parametrize("transform", ["radial", "spline", "autoregressive"])
def test_box_density_integrates_to_one_on_a_grid(transform):
    flow = CompactFlow([0.0, -1.0], [1.0, 2.0], transform=transform, num_layers=1, count_bins=4, hidden_dims=[4])
    with torch.no_grad():
        for p in flow.parameters():
            p.mul_(0.3)  # Pyro's random spline knots make kinks too sharp for a grid; shrink towards smooth
    flow = _randomised(flow, 0.1)
    x = torch.linspace(-25, 25, 1001, dtype=torch.float64)
    low, high = flow.low, flow.high
    grid = torch.cartesian_prod(x, x)
    y = high * torch.sigmoid(grid) + low * torch.sigmoid(-grid)
    jac = ((high - low) * torch.sigmoid(grid) * torch.sigmoid(-grid)).prod(-1)
    keep = flow().support.check(y) & (y > low).all(-1) & (y < high).all(-1)
    with torch.no_grad():
        dens = torch.zeros(grid.shape[0], dtype=torch.float64)
        dens[keep] = flow().log_prob(y[keep]).exp() * jac[keep]
    total = torch.trapezoid(torch.trapezoid(dens.reshape(1001, 1001), x, dim=1), x).item()
    assert total == pytest.approx(1.0, abs=1e-3)  # a 1001 x 1001 trapezoid grid; spline densities have kinks at knots


def test_support_is_the_interval_and_samples_lie_in_it(flow_1d):
    d = flow_1d()
    assert isinstance(d.support, torch.distributions.constraints.independent)
    assert d.support.check(torch.tensor([[1.0], [2.5], [1.7]])).all()
    assert not d.support.check(torch.tensor([[0.999], [2.501]])).any()
    samples = d.sample((2000,))
    assert ((samples >= 1.0) & (samples <= 2.5)).all()
    assert torch.isfinite(d.log_prob(samples)).all()


def test_out_of_support_raises_with_validation_naming_the_values(flow_1d):
    d = flow_1d()
    with pytest.raises(ValueError, match=r"2 value\(s\) outside the support \[1.0, 2.5\]: \[1000.0, 0.5\]"):
        d.log_prob(torch.tensor([[1000.0], [2.0], [0.5]]))


def test_out_of_support_is_minus_inf_without_validation(flow_1d):
    with pyro.validation_enabled(False):
        d = flow_1d()
        lp = d.log_prob(torch.tensor([[1000.0], [2.0], [0.5], [2.5000001]], dtype=torch.float64))
    assert lp[0] == -math.inf and lp[2] == -math.inf and lp[3] == -math.inf
    assert torch.isfinite(lp[1])
    lp.sum().backward() if lp.requires_grad else None  # no NaN from the masked points
    for p in flow_1d.parameters():
        assert p.grad is None or torch.isfinite(p.grad).all()


def test_plain_sigmoid_affine_construction_clamps_but_ours_does_not():
    """The issue's motivating bug, measured: Pyro's construction scores y = 1000 like a point on the interval."""
    naive = dist.TransformedDistribution(
        dist.Logistic(torch.zeros(1), torch.ones(1)).to_event(1),
        [torch.distributions.SigmoidTransform(), torch.distributions.AffineTransform(1.0, 1.5)],
    )
    with pyro.validation_enabled(False):
        assert torch.isfinite(naive.log_prob(torch.tensor([[1000.0]])))
        assert CompactFlow(1.0, 2.5)().log_prob(torch.tensor([[1000.0]])) == -math.inf


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_values_at_and_near_the_bounds_are_finite(flow_1d, dtype):
    y = torch.tensor([[1.0], [2.5], [1.0 + 1e-7], [2.5 - 1e-7], [1.0 + 1e-12], [1.75]], dtype=dtype)
    lp = flow_1d().log_prob(y)
    assert torch.isfinite(lp).all()
    lp.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in flow_1d.parameters() if p.grad is not None)


def test_float32_flow_is_finite_at_the_bounds_and_in_far_tail_samples():
    flow = _randomised(CompactFlow(1.0, 2.5, num_layers=3, dtype=torch.float32))
    with torch.no_grad():
        flow.layers[0].log_slope_lower.fill_(math.log(4.0))  # push mass far into the tails
        flow.layers[0].log_slope_upper.fill_(math.log(4.0))
    d = flow()
    samples = d.sample((20000,))
    assert samples.dtype == torch.float32
    assert ((samples >= 1.0) & (samples <= 2.5)).all()
    assert torch.isfinite(d.log_prob(samples)).all()
    assert torch.isfinite(d.log_prob(samples.clone())).all()  # uncached re-scoring of points rounded onto a bound
    at_bounds = torch.tensor([[1.0], [2.5]])
    lp = flow().log_prob(at_bounds)
    assert torch.isfinite(lp).all()
    lp.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in flow.parameters())


def test_rsample_gradients_are_finite(flow_1d):
    d = flow_1d()
    y = d.rsample((256,))
    (y.sum() + d.log_prob(y).sum()).backward()
    for p in flow_1d.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()


def test_save_load_round_trip_is_exact(flow_1d, tmp_path):
    path = flow_1d.save(tmp_path / "flow.pt")
    loaded = CompactFlow.load(path)
    y = torch.linspace(1.0, 2.5, 101, dtype=torch.float64)[:, None]
    with torch.no_grad():
        assert torch.equal(flow_1d().log_prob(y), loaded().log_prob(y))
    assert loaded.config == flow_1d.config
    with pytest.raises(Exception, match="already exists"):
        flow_1d.save(tmp_path / "flow.pt")


def test_load_refuses_missing_corrupt_and_foreign_files(tmp_path):
    with pytest.raises(CheckpointError, match="no such model file"):
        CompactFlow.load(tmp_path / "none.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a model")
    with pytest.raises(CheckpointError, match="not a readable pyroflows model"):
        CompactFlow.load(tmp_path / "bad.pt")


def test_two_flows_do_not_share_parameters():
    a, b = CompactFlow(0.0, 1.0, num_layers=2), CompactFlow(0.0, 1.0, num_layers=2)
    y = torch.tensor([[0.3]], dtype=torch.float64)

    def model():
        pyro.sample("a", a(), obs=y)
        pyro.sample("b", b(), obs=y)

    pyro.poutine.trace(model).get_trace()
    names = list(pyro.get_param_store().keys())
    assert len(names) == len(set(names)) == len(list(a.parameters())) + len(list(b.parameters()))


def test_works_in_a_users_own_svi_loop():
    torch.manual_seed(0)
    data = (0.2 + 0.6 * torch.rand(300, 1)).double()  # uniform on [0.2, 0.8] inside [0, 1]
    flow = CompactFlow(0.0, 1.0, transform="radial", num_layers=2)

    def model(y):
        with pyro.plate("data", y.shape[0]):
            pyro.sample("y", flow(), obs=y)

    svi = pyro.infer.SVI(model, lambda y: None, pyro.optim.Adam({"lr": 0.1}), pyro.infer.Trace_ELBO())
    before = svi.evaluate_loss(data)
    for _ in range(30):
        svi.step(data)
    assert svi.evaluate_loss(data) < before - 0.2 * data.shape[0]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(low=1.0, high=1.0), r"low must be below high"),
        (dict(low=[0.0, 0.0], high=[1.0]), r"equal-length"),
        (dict(low=0.0, high=math.nan), r"finite"),
        (dict(low=0.0, high=1.0, transform="planar"), r"transform: unknown 'planar'; expected one of radial, spline"),
        (dict(low=0.0, high=1.0, base="cauchy"), r"base: unknown 'cauchy'; expected one of logistic, normal"),
        (dict(low=0.0, high=1.0, transform="autoregressive"), r"needs dim > 1"),
    ],
)
def test_bad_arguments_raise_with_a_message(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CompactFlow(**kwargs)


def test_numpy_and_float32_inputs():
    flow = CompactFlow([0.0, 0.0], [1.0, 2.0], transform="autoregressive", num_layers=1)
    y = np.array([[0.5, 1.0], [0.0, 2.0]], dtype=np.float32)
    assert torch.isfinite(flow().log_prob(torch.from_numpy(y))).all()


# Scalar bounds are kept in float64 (issue 15, item 1).


def test_scalar_bounds_are_exact_python_floats():
    flow = CompactFlow(0.1, 0.3)
    assert flow.low.item() == 0.1 and flow.high.item() == 0.3  # the same float64 numbers, not float32 roundings
    assert flow.config["low"] == [0.1] and flow.config["high"] == [0.3]
    from pyroflows.flows import IntervalSquashTransform

    assert IntervalSquashTransform(0.1, 0.3).low.dtype == torch.float64


def test_float32_points_on_the_bounds_are_inside_and_points_beyond_are_not():
    from pyroflows.flows import check_data

    flow = CompactFlow(0.1, 0.3, num_layers=1)
    points = torch.linspace(0.1, 0.3, 50)  # float32: its ends are 0.1 and 0.3 rounded to float32
    x = check_data(flow, points)
    # float32(0.1) lies just above 0.1 (inside, kept as it is); float32(0.3) just above 0.3, so it is put on 0.3.
    assert x.dtype == torch.float64 and x.max().item() == 0.3
    assert torch.equal(x[:-1, 0], points[:-1].double())
    assert abs(x[-1, 0].item() - points[-1].item()) <= 0.5 * 0.3 * torch.finfo(torch.float32).eps
    with torch.no_grad():
        assert torch.isfinite(flow().log_prob(points[:, None])).all()
    above = torch.tensor([0.3 + 1e-12], dtype=torch.float64)  # beyond the bound at its own (float64) precision
    with pytest.raises(DataError, match=r"1 of 1 row\(s\) lie outside \[0.1, 0.3\]"):
        check_data(flow, above)
    beyond32 = torch.nextafter(torch.tensor([0.3]), torch.tensor([1.0]))  # the next float32 above 0.3
    with pytest.raises(DataError, match="lie outside"):
        check_data(flow, beyond32)


def test_fit_on_a_float32_linspace_over_the_whole_interval():
    from pyroflows.flows import fit

    result = fit(CompactFlow(0.1, 0.3, num_layers=1), torch.linspace(0.1, 0.3, 50), steps=5, progress=False)
    assert math.isfinite(result.best_heldout_nll)


def test_a_unit_interval_far_from_zero():
    flow = CompactFlow(1e8, 1e8 + 1, num_layers=2)
    assert flow.high.item() - flow.low.item() == 1.0
    with torch.no_grad():
        samples = flow.sample((1000,))
        assert ((samples >= 1e8) & (samples <= 1e8 + 1)).all()
        # The density integrates to one: midpoint rule on 20,000 cells of the unit interval (error O(h^2) ~ 1e-8
        # for a smooth density, dominated here by the float64 resolution of y near 1e8, about 1.5e-8).
        grid = 1e8 + (torch.arange(20000, dtype=torch.float64) + 0.5) / 20000
        assert flow().log_prob(grid[:, None]).exp().mean().item() == pytest.approx(1.0, abs=1e-3)


# freeze(): a fitted flow as a fixed prior (issue 15, item 14).


@pytest.mark.filterwarnings("ignore::pyroflows.flows.fit.ConvergenceWarning")  # short budgets on purpose
def test_a_frozen_flow_is_a_fixed_prior_under_svi():
    import pyro.distributions as dist
    from pyro.infer import SVI, Trace_ELBO
    from pyro.infer.autoguide import AutoNormal

    from pyroflows.flows import fit

    pyro.clear_param_store()
    prior = CompactFlow(0.0, 1.0, num_layers=2)
    fit(prior, np.random.default_rng(0).beta(2, 5, 500), steps=100, seed=0, progress=False)
    prior.freeze()
    assert prior.frozen and not list(prior.parameters())
    before = {k: v.clone() for k, v in prior.state_dict().items()}
    with torch.no_grad():
        mean_before = prior.sample((20000,)).mean().item()

    data = torch.full((50,), 0.9, dtype=torch.float64)  # data that pull theta up, away from the prior's mean ~0.29

    def model():
        theta = pyro.sample("theta", prior())
        with pyro.plate("obs", 50):
            pyro.sample("y", dist.Normal(theta[..., 0], 0.1), obs=data)

    guide = AutoNormal(model)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.05}), Trace_ELBO())
    for _ in range(200):
        svi.step()
    after = prior.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the same tensors, never written to
    with torch.no_grad():
        # Same parameters and the same code: the sample mean differs only by Monte Carlo error (sd < 0.2 / sqrt(2e4)).
        assert prior.sample((20000,)).mean().item() == pytest.approx(mean_before, abs=0.01)
    with pytest.raises(ValueError, match="frozen"):
        fit(prior, np.full(10, 0.5), steps=1, progress=False)


def test_an_unfrozen_flow_is_trained_by_svi_on_another_model():
    """The control for the test above: without freeze() the same SVI run moves the prior's parameters."""
    import pyro.distributions as dist
    from pyro.infer import SVI, Trace_ELBO
    from pyro.infer.autoguide import AutoNormal

    pyro.clear_param_store()
    prior = CompactFlow(0.0, 1.0, num_layers=2)
    before = {k: v.clone() for k, v in prior.state_dict().items()}
    data = torch.full((50,), 0.9, dtype=torch.float64)

    def model():
        theta = pyro.sample("theta", prior())
        with pyro.plate("obs", 50):
            pyro.sample("y", dist.Normal(theta[..., 0], 0.1), obs=data)

    svi = SVI(model, AutoNormal(model), pyro.optim.Adam({"lr": 0.05}), Trace_ELBO())
    for _ in range(20):
        svi.step()
    assert any(not torch.equal(before[k], v) for k, v in prior.state_dict().items())


def test_a_frozen_flow_saves_and_reloads_the_same_density(tmp_path):
    flow = CompactFlow(1.0, 2.5, num_layers=2)
    x = torch.linspace(1.01, 2.49, 7, dtype=torch.float64)[:, None]
    with torch.no_grad():
        expected = flow().log_prob(x)
    flow.freeze()
    loaded = CompactFlow.load(flow.save(tmp_path / "frozen.pt"))
    with torch.no_grad():
        assert torch.equal(flow().log_prob(x), expected)
        assert torch.equal(loaded().log_prob(x), expected)


def test_a_model_file_written_by_an_earlier_version_reloads_with_its_own_behaviour():
    """``data/compact_flow_main_ac1f2dd.pt`` was written by main at ac1f2dd (free spline ends, tail prior 0.1, a
    40-step fit); its config names those settings, so it reloads as it was whatever today's defaults are."""
    from pathlib import Path

    flow = CompactFlow.load(Path(__file__).with_name("data") / "compact_flow_main_ac1f2dd.pt")
    assert flow.config["ends"] == "free" and flow.config["tail_prior"] == 0.1 and flow.config["order"] == "quadratic"
    assert hasattr(flow.layers[1], "unnormalized_end_derivatives")
    x = torch.tensor([[1.0], [1.0001], [1.3], [1.75], [2.2], [2.4999], [2.5]], dtype=torch.float64)
    # log p(x) printed by that version on this machine; float64 through a handful of layers: 1e-10 covers another
    # CPU's rounding.
    expected = [-10.054410056838108, -2.9165014174528068, -2.40504101091909, -2.725245853384526, 1.101714789018668,
                -1.4770563557416843, -6.103910751506952]  # fmt: skip
    with torch.no_grad():
        got = flow().log_prob(x)
    assert torch.allclose(got, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-10)


def test_a_config_without_ends_tail_prior_or_order_gets_the_settings_of_its_time():
    """Files written before ``ends``, ``tail_prior`` and ``order`` existed: Pyro's fixed-end linear spline, no prior."""
    config = CompactFlow(1.0, 2.5).config
    for key in ("ends", "tail_prior", "order"):
        del config[key]
    old = CompactFlow.from_config(config)
    assert (old.config["ends"], old.config["tail_prior"], old.config["order"]) == ("fixed", None, "linear")
    assert CompactFlow(1.0, 2.5).config["ends"] == "data"
    assert CompactFlow(1.0, 2.5, ends="secant").config["tail_prior"] == 0.01
    # Files written before per-bound ends existed have no bound_ends: their ends are what they were.
    free = CompactFlow(1.0, 2.5, ends="free").config
    del free["bound_ends"]
    assert CompactFlow.from_config(free).config == {**free, "bound_ends": None}
