"""One-sided supports: the half-line squash and CompactFlow with an infinite bound."""

from __future__ import annotations

import math

import pyro
import pytest
import torch

from pyroflows.flows import CompactFlow, HalfLineSquashTransform
from pyroflows.flows.half_line import bound_tensors


@pytest.mark.parametrize("side", ["lower", "upper"])
def test_squash_round_trip_log_det_and_codomain(side):
    t = HalfLineSquashTransform([0.5, -2.0], side=side, scale=[2.0, 0.1])
    x = torch.randn(6, 2, dtype=torch.float64) * 3
    y = t(x)
    assert bool(t.codomain.check(y).all())
    torch.testing.assert_close(t.inv(y), x, rtol=1e-10, atol=1e-10)
    jac = torch.stack([torch.autograd.functional.jacobian(t, x[i]).diagonal() for i in range(6)])
    torch.testing.assert_close(t.log_abs_det_jacobian(x, y), jac.log().sum(-1))


def _integrate_half_line(flow: CompactFlow, bound: float, side: str, n: int = 2_000_001) -> float:
    # Trapezoid rule in u = log(distance to the bound). The default spline's free end derivatives make peaks sharp
    # enough (log-space density ~25) that 200,001 nodes were off by 1e-3; 2,000,001 converge to 4e-5.
    u = torch.linspace(-40, 12, n, dtype=torch.float64)
    gap = torch.exp(u)
    y = bound + gap if side == "lower" else bound - gap
    keep = y != bound
    with torch.no_grad():
        density = flow().log_prob(y[keep, None]).exp() * gap[keep]
    return torch.trapezoid(density, u[keep]).item()


@pytest.mark.parametrize("low, high, side", [(0.0, math.inf, "lower"), (-math.inf, 3.0, "upper")])
def test_one_sided_flow_integrates_to_one(low, high, side):
    flow = CompactFlow(low, high, num_layers=2, count_bins=6)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
        # A density unbounded at the finite bound (Gamma(0.5)-like) and a light tail at the open end.
        bound_end, open_end = ("lower", "upper") if side == "lower" else ("upper", "lower")
        getattr(flow.layers[0], f"log_slope_{bound_end}").fill_(math.log(2.0))
        getattr(flow.layers[0], f"log_slope_{open_end}").fill_(math.log(0.5))
    assert _integrate_half_line(flow, low if side == "lower" else high, side) == pytest.approx(1.0, abs=1e-4)


def test_supports_and_out_of_support_points_in_both_validation_modes():
    flow = CompactFlow(0.0, math.inf)
    d = flow()
    assert isinstance(d.support.base_constraint, torch.distributions.constraints.greater_than)
    assert bool((flow.sample((200,)) > 0).all())
    y = torch.tensor([[1.0], [-1.0]], dtype=torch.float64)
    with pyro.validation_enabled(True), pytest.raises(ValueError, match=r"outside the support \[0.0, inf\]"):
        flow().log_prob(y)
    with pyro.validation_enabled(False):
        lp = flow().log_prob(y)
    assert torch.isfinite(lp[0]) and lp[1] == -math.inf
    assert isinstance(CompactFlow(-math.inf, 1.0)().support.base_constraint, torch.distributions.constraints.less_than)


def test_save_load_exact_with_a_scale(tmp_path):
    flow = CompactFlow(1.0, math.inf, scale=0.25, num_layers=1)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.1)
    again = CompactFlow.load(flow.save(tmp_path / "f.pt"))
    y = torch.tensor([[1.01], [2.0], [30.0]], dtype=torch.float64)
    with torch.no_grad():
        assert torch.equal(flow().log_prob(y), again().log_prob(y))
    assert again.config["scale"] == 0.25


def test_python_float_bounds_are_kept_exactly():
    low, high = bound_tensors(0.1, math.inf)
    assert low.item() == 0.1 and high.item() == math.inf
    assert CompactFlow(0.1, math.inf).low.item() == 0.1


@pytest.mark.parametrize(
    "low, high, message",
    [
        (math.inf, math.inf, "low cannot be \\+inf"),
        (-math.inf, math.inf, "no finite bound"),
        ([0.0, -math.inf], [math.inf, 1.0], "same kind of bounds"),
    ],
)
def test_bad_one_sided_bounds(low, high, message):
    with pytest.raises(ValueError, match=message):
        CompactFlow(low, high)
