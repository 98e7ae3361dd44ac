"""CompactFlow as a distribution: support, normalisation, out-of-support behaviour, precision, save/load."""

from __future__ import annotations

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

from pyroflows.errors import CheckpointError
from pyroflows.flows import CompactFlow

CONFIGS = {
    "radial": dict(transform="radial", num_layers=4),
    "radial-normal-base": dict(transform="radial", num_layers=4, base="normal"),
    "spline": dict(transform="spline", num_layers=1, count_bins=8),
    "spline-2-layers": dict(transform="spline", num_layers=2, count_bins=8, order="quadratic"),
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
    flow = _randomised(CompactFlow(-1.0, 1.0, num_layers=3))
    with torch.no_grad():
        flow.layers[0].log_slope_lower.fill_(math.log(2.5))  # logit-space tail decays like exp(-|x| / 2.5)
        flow.layers[0].log_slope_upper.fill_(math.log(3.0))
    assert _integrate_1d(flow, -1.0, 1.0) == pytest.approx(1.0, abs=1e-4)
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
        (dict(low=0.0, high=1.0, transform="planar"), r"transform must be one of"),
        (dict(low=0.0, high=1.0, base="cauchy"), r"base must be one of"),
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
