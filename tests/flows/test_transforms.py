"""One property suite for every transform: round trip, log-det against autograd, domain/codomain, dtypes."""

from __future__ import annotations

import math

import pyro.distributions.transforms as T
import pytest
import torch
from torch.autograd.functional import jacobian

from pyroflows.flows import IntervalSquashTransform, Radial, SigmoidSpline, TwoSlopeAffine


def _randomised(transform: torch.nn.Module) -> torch.nn.Module:
    with torch.no_grad():
        for p in transform.parameters():
            p.normal_(0, 0.7)
    return transform.double()


def _radial(dim: int) -> Radial:
    t = _randomised(Radial(dim))
    return t


def _radial_at_bound(dim: int) -> Radial:
    t = _randomised(Radial(dim))
    with torch.no_grad():
        t.beta_prime.fill_(-30.0)  # beta -> -alpha, the edge of invertibility
    return t


TRANSFORMS = {
    "radial-1d": lambda: _radial(1),
    "radial-3d": lambda: _radial(3),
    "radial-beta-near-minus-alpha": lambda: _radial_at_bound(2),
    "two-slope-affine": lambda: _randomised(TwoSlopeAffine(3)),
    "two-slope-affine-steep": lambda: _steep_two_slope(),
    "sigmoid-spline": lambda: _randomised(SigmoidSpline(2, count_bins=8)),
    "sigmoid-spline-quadratic": lambda: _randomised(SigmoidSpline(2, count_bins=8, order="quadratic")),
    "sigmoid-spline-free-ends": lambda: _randomised(SigmoidSpline(2, count_bins=8, order="quadratic", ends="free")),
    "sigmoid-spline-secant-ends": lambda: _randomised(SigmoidSpline(2, count_bins=8, order="quadratic", ends="secant")),
    "sigmoid-spline-per-bound-ends": lambda: _randomised(
        SigmoidSpline(2, count_bins=8, order="quadratic", ends=[("secant", "free"), ("free", "secant")])
    ),
    "pyro-spline-autoregressive": lambda: _randomised(T.spline_autoregressive(3, hidden_dims=[6], count_bins=4)),
    "interval-squash": lambda: IntervalSquashTransform(torch.tensor([1.0, -2.0], dtype=torch.float64), [2.5, 3.0]),
}


def _steep_two_slope() -> TwoSlopeAffine:
    t = TwoSlopeAffine(2).double()
    with torch.no_grad():
        t.log_slope_lower.copy_(torch.tensor([-2.0, 1.5]))
        t.log_slope_upper.copy_(torch.tensor([2.0, -1.0]))
        t.shift.copy_(torch.tensor([0.3, -0.4]))
    return t


def _dim(transform) -> int:
    if isinstance(transform, IntervalSquashTransform):
        return transform.low.numel()
    return transform.input_dim if hasattr(transform, "input_dim") else transform.arn.input_dim


def _inputs(transform, n: int = 64) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    x = 4 * torch.randn(n, _dim(transform), generator=gen, dtype=torch.float64)
    x[0] = 0.0
    x[1] = 12.0
    x[2] = -12.0
    return x


@pytest.fixture(params=sorted(TRANSFORMS))
def transform(request):
    return TRANSFORMS[request.param]()


def test_inverse_round_trip(transform):
    x = _inputs(transform)
    y = transform(x)
    x_back = transform._inverse(y)  # uncached on purpose: the inverse must work on fresh values
    assert torch.allclose(x_back, x, atol=1e-7, rtol=1e-7)
    y_again = transform(transform._inverse(y))
    assert torch.allclose(y_again, y, atol=1e-9, rtol=1e-9)


def test_log_det_matches_autograd_jacobian(transform):
    x = _inputs(transform, n=12)
    y = transform(x)
    ladj = transform.log_abs_det_jacobian(x, y)
    for i in range(x.shape[0]):
        jac = jacobian(lambda v: transform._call(v[None])[0], x[i])
        assert torch.allclose(ladj[i], torch.linalg.slogdet(jac).logabsdet, atol=1e-8), i


def test_log_det_on_the_inverse_path(transform):
    """A log-det from values that never went through the forward pass (Pyro's Radial reads the forward cache)."""
    x = _inputs(transform)
    y = transform(x)
    forward = transform.log_abs_det_jacobian(x, y).detach()
    y_fresh = y.detach().clone()
    x_fresh = transform.inv(y_fresh)
    assert torch.allclose(transform.inv.log_abs_det_jacobian(y_fresh, x_fresh), -forward, atol=1e-7)


def test_domain_and_codomain(transform):
    x = _inputs(transform)
    y = transform(x)
    assert transform.domain.check(x).all()
    assert transform.codomain.check(y).all()
    assert transform.bijective
    if isinstance(transform, IntervalSquashTransform):
        assert not transform.codomain.check(torch.tensor([[0.0, 0.0]], dtype=torch.float64)).any()
        assert not transform.codomain.check(torch.tensor([[2.0, 3.5]], dtype=torch.float64)).any()


def test_float32_inputs_stay_finite(transform):
    if isinstance(transform, T.SplineAutoregressive):
        pytest.skip("Pyro's network needs inputs in its own dtype; CompactFlow casts them (test_compact covers it)")
    x = _inputs(transform).float()
    y = transform(x)
    assert torch.isfinite(y).all()
    assert torch.isfinite(transform.log_abs_det_jacobian(x, y)).all()


def test_gradients_reach_every_parameter(transform):
    params = [p for p in getattr(transform, "parameters", lambda: [])()]
    if not params:
        pytest.skip("parameter-free")
    x = _inputs(transform, n=16)
    y = transform(x)
    (transform.log_abs_det_jacobian(x, y).sum() + y.square().sum()).backward()
    for p in params:
        assert p.grad is not None and torch.isfinite(p.grad).all()


def test_squash_rejects_bad_bounds():
    with pytest.raises(ValueError, match=r"dimension\(s\) \[1\] have low=\[3.0\] >= high=\[2.0\]"):
        IntervalSquashTransform([0.0, 3.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="finite"):
        IntervalSquashTransform([0.0], [float("inf")])


def test_squash_is_exact_near_the_bounds_in_float32():
    t = IntervalSquashTransform(torch.tensor([1.0]), torch.tensor([2.5]))
    y = torch.tensor([[1.0], [2.5], [1.0 + 1e-7], [2.5 - 1e-7]])
    x = t._inverse(y)
    assert torch.isfinite(x).all()
    assert x[0] < -14 and x[1] > 14  # boundary points go to the nearest resolvable interior point
    assert torch.isfinite(t.log_abs_det_jacobian(x, y)).all()


def test_radial_inverse_matches_pyro_forward():
    """Same parameterisation as Pyro's Radial: our inverse undoes Pyro's forward map."""
    from pyro.distributions.transforms import Radial as PyroRadial

    ours = _radial(3)
    theirs = PyroRadial(3).double()
    theirs.load_state_dict(ours.state_dict())
    x = _inputs(ours)
    assert torch.allclose(ours._inverse(theirs(x)), x, atol=1e-9)
    assert torch.allclose(ours.log_abs_det_jacobian(x, None), theirs.log_abs_det_jacobian(x, theirs(x)), atol=1e-10)


def test_rational_quadratic_spline_matches_pyros_when_the_end_derivatives_are_pyros():
    """With both end derivatives set to Pyro's fixed 0.999, the spline is Pyro's quadratic spline on [-1, 1]."""
    from pyro.distributions.transforms import Spline

    from pyroflows.flows.sigmoid_spline import rational_quadratic_spline

    torch.manual_seed(0)
    spline = Spline(2, count_bins=6, bound=1.0, order="quadratic").double()
    widths = 2 * (1e-3 + (1 - 6e-3) * torch.softmax(spline.unnormalized_widths, -1))
    heights = 2 * (1e-3 + (1 - 6e-3) * torch.softmax(spline.unnormalized_heights, -1))
    inner = 1e-3 + torch.nn.functional.softplus(spline.unnormalized_derivatives)
    ends = torch.full((2, 1), 0.999, dtype=torch.float64)
    derivatives = torch.cat([ends, inner, ends], -1)
    z = torch.rand(500, 2, dtype=torch.float64) * 2 - 1
    with torch.no_grad():
        ours, our_log = rational_quadratic_spline(z, widths, heights, derivatives)
        theirs, their_log = spline.spline_op(z)
    # Two implementations of the same formula in float64: agreement to a few hundred ulps of O(1) numbers.
    assert torch.allclose(ours, theirs, rtol=0, atol=1e-12)
    assert torch.allclose(our_log, their_log, rtol=0, atol=1e-10)


@pytest.mark.parametrize("ends", ["free", "secant"])
def test_spline_end_derivatives_set_the_density_at_each_bound(ends):
    """Logistic base -> spline -> squash onto [0, 1]: the density at 0 is 1 / S'(-1) and at 1 is 1 / S'(1)."""
    from pyroflows.flows import CompactFlow

    flow = CompactFlow(0.0, 1.0, order="quadratic", ends=ends, tail_slopes=False)
    spline = flow.layers[0]
    with torch.no_grad():
        for p in spline.parameters():
            p.add_(torch.randn_like(p))
        lo, hi = torch.tensor([[-1.0]], dtype=torch.float64), torch.tensor([[1.0]], dtype=torch.float64)
        _, log_d0 = spline._spline_op(lo)
        _, log_dk = spline._spline_op(hi)
        y = torch.tensor([[1e-9], [1 - 1e-9]], dtype=torch.float64)
        density = flow().log_prob(y).exp()
    # u = (1 + S(z)) / 2 with z uniform on [-1, 1], so p(0) = 1 / S'(-1); at 1e-9 from the bound the density differs
    # from its limit by O(1e-9) relative.
    assert density[0].item() == pytest.approx(math.exp(-log_d0.item()), rel=1e-6)
    assert density[1].item() == pytest.approx(math.exp(-log_dk.item()), rel=1e-6)


# Every registered layer family and base, checked the same way: a family added to pyroflows.flows.families is picked
# up here without touching this file.


def _family_dim(name: str) -> int:
    from pyroflows.flows.families import FAMILIES

    return max(2, FAMILIES.get(name).factory.min_dim)


def _family_stack(name: str) -> list:
    from pyroflows.flows.families import FAMILIES, LayerOptions

    torch.manual_seed(0)
    stack = FAMILIES.build(name, _family_dim(name), 2, LayerOptions(count_bins=4, hidden_dims=(6,)))
    for t in stack:
        if isinstance(t, torch.nn.Module):
            _randomised(t)
    return stack


def _family_names() -> list[str]:
    from pyroflows.flows.families import FAMILIES

    return list(FAMILIES)


@pytest.mark.parametrize("name", _family_names())
def test_every_family_stack_round_trips_and_its_log_det_matches_autograd(name):
    stack = _family_stack(name)
    gen = torch.Generator().manual_seed(1)
    x = 2 * torch.randn(10, _family_dim(name), generator=gen, dtype=torch.float64)
    ys, y = [], x
    for t in stack:
        ys.append((y, t(y)))
        y = ys[-1][1]
    back = y.detach().clone()  # a fresh tensor: the inverses cannot read the forward caches
    for t in reversed(stack):
        back = t.inv(back)
    torch.testing.assert_close(back, x, atol=1e-7, rtol=1e-7)
    ladj = sum(t.log_abs_det_jacobian(a, b) for t, (a, b) in zip(stack, ys, strict=True))

    def forward(v: torch.Tensor) -> torch.Tensor:
        for t in stack:
            v = t._call(v)
        return v

    for i in range(x.shape[0]):
        jac = jacobian(lambda v: forward(v[None])[0], x[i])
        assert torch.allclose(ladj[i], torch.linalg.slogdet(jac).logabsdet, atol=1e-8), i


def _integrate_box(log_prob, low: torch.Tensor, high: torch.Tensor, n: int = 701) -> float:
    """Integral over a 2-D box by a trapezoid grid in logit coordinates."""
    u = torch.linspace(-25, 25, n, dtype=torch.float64)
    grid = torch.cartesian_prod(u, u)
    y = high * torch.sigmoid(grid) + low * torch.sigmoid(-grid)
    jac = ((high - low) * torch.sigmoid(grid) * torch.sigmoid(-grid)).prod(-1)
    keep = (y > low).all(-1) & (y < high).all(-1)
    dens = torch.zeros(grid.shape[0], dtype=torch.float64)
    with torch.no_grad():
        dens[keep] = log_prob(y[keep]).exp() * jac[keep]
    return torch.trapezoid(torch.trapezoid(dens.reshape(n, n), u, dim=1), u).item()


def _integrate_interval(log_prob, low: float, high: float, n: int = 200_001) -> float:
    u = torch.linspace(-40, 40, n, dtype=torch.float64)
    y = high * torch.sigmoid(u) + low * torch.sigmoid(-u)
    keep = (y > low) & (y < high)
    with torch.no_grad():
        density = log_prob(y[keep, None]).exp() * ((high - low) * torch.sigmoid(u) * torch.sigmoid(-u))[keep]
    return torch.trapezoid(density, u[keep]).item()


def _shrunk(module: torch.nn.Module) -> torch.nn.Module:
    """Random but smooth parameters (Pyro's random spline knots make kinks too sharp for a grid)."""
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in module.parameters():
            p.mul_(0.3).add_(0.1 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return module


@pytest.mark.parametrize("name", _family_names())
def test_every_family_gives_a_density_that_integrates_to_one(name):
    from pyroflows.flows import CompactFlow
    from pyroflows.flows.families import FAMILIES

    torch.manual_seed(0)  # Pyro's spline initialisation draws from the global generator
    if FAMILIES.get(name).factory.min_dim == 1:
        flow = _shrunk(CompactFlow(1.0, 2.5, transform=name, num_layers=2, count_bins=4))
        assert _integrate_interval(flow().log_prob, 1.0, 2.5) == pytest.approx(1.0, abs=1e-4)
    # On a box, one layer on a grid: spline densities have kinks at the knots, which a grid resolves only to about
    # 1e-3; the whole-interval spline's knots span the whole grid, so it needs the finer one (the secant-end spline:
    # -1.8e-3 on a 1001 x 1001 grid, -3e-4 on 2001 x 2001). Elementwise families are cheap enough to afford it.
    flow = _shrunk(CompactFlow([0.0, -1.0], [1.0, 2.0], transform=name, num_layers=1, count_bins=4, hidden_dims=[4]))
    n = 2001 if FAMILIES.get(name).factory.min_dim == 1 else 1001
    assert _integrate_box(flow().log_prob, flow.low, flow.high, n=n) == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize("name", _family_names())
def test_every_conditional_family_integrates_to_one_for_each_context(name):
    from pyroflows.errors import DataError
    from pyroflows.flows import ConditionalCompactFlow
    from pyroflows.flows.families import FAMILIES

    family = FAMILIES.get(name).factory
    if family.conditional is None:
        with pytest.raises(DataError, match="has no conditional version"):
            ConditionalCompactFlow(0.0, 1.0, context_dim=1, transform=name)
        return
    context = torch.tensor([[-1.5], [0.7]], dtype=torch.float64)
    if family.min_dim == 1:
        flow = _shrunk(ConditionalCompactFlow(1.0, 2.5, context_dim=1, transform=name, count_bins=4, hidden_dims=[4]))
        for c in context:
            total = _integrate_interval(lambda y, c=c: flow.condition(c.expand(y.shape[0], 1)).log_prob(y), 1.0, 2.5)
            assert total == pytest.approx(1.0, abs=1e-4)
    else:
        flow = _shrunk(
            ConditionalCompactFlow(
                [0.0, -1.0], [1.0, 2.0], context_dim=1, transform=name, count_bins=4, hidden_dims=[4]
            )
        )
        for c in context:
            total = _integrate_box(
                lambda y, c=c: flow.condition(c.expand(y.shape[0], 1)).log_prob(y), flow.low, flow.high
            )
            assert total == pytest.approx(1.0, abs=2e-3)


def test_a_family_below_its_dimension_and_an_unknown_family_are_refused_by_the_registry():
    from pyroflows.errors import DataError
    from pyroflows.flows.families import FAMILIES, family_for

    for name in FAMILIES:
        if FAMILIES.get(name).factory.min_dim > 1:
            with pytest.raises(DataError, match=rf"'{name}' needs dim > 1"):
                family_for(name, 1)
    with pytest.raises(DataError, match="transform: unknown 'planar'; expected one of " + ", ".join(FAMILIES)):
        family_for("planar", 1)


def _base_names() -> list[str]:
    from pyroflows.flows.families import BASES

    return list(BASES)


@pytest.mark.parametrize("base", _base_names())
def test_every_base_gives_a_density_that_integrates_to_one(base):
    from pyroflows.flows import CompactFlow

    flow = _shrunk(CompactFlow(1.0, 2.5, base=base, num_layers=1))
    assert _integrate_interval(flow().log_prob, 1.0, 2.5) == pytest.approx(1.0, abs=1e-4)


def test_secant_end_derivatives_equal_the_end_bins_secant_slopes_exactly():
    """ends="secant": S'(-1) = h_0 / w_0 and S'(1) = h_{K-1} / w_{K-1}, the same floating-point numbers."""
    import torch.nn.functional as F

    spline = _randomised(SigmoidSpline(3, count_bins=5, order="quadratic", ends="secant"))
    inner = spline.spline
    widths = 2 * (1e-3 + (1 - 5e-3) * F.softmax(inner.unnormalized_widths, -1))
    heights = 2 * (1e-3 + (1 - 5e-3) * F.softmax(inner.unnormalized_heights, -1))
    with torch.no_grad():
        _, log_first = spline._spline_op(torch.full((1, 3), -1.0, dtype=torch.float64))
        _, log_last = spline._spline_op(torch.full((1, 3), 1.0, dtype=torch.float64))
    # At theta = 0 (1) the log-derivative formula reduces to log d_0 (log d_K) up to rounding of O(1) terms.
    assert torch.allclose(log_first[0], (heights[:, 0] / widths[:, 0]).log(), rtol=0, atol=1e-12)
    assert torch.allclose(log_last[0], (heights[:, -1] / widths[:, -1]).log(), rtol=0, atol=1e-12)
    # The tie leaves no end-derivative parameter to learn.
    assert not hasattr(spline, "unnormalized_end_derivatives")
