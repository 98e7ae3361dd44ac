"""ConditionalCompactFlow: normalisation per context, agreement with CompactFlow, batching, support, save/load, fit."""

from __future__ import annotations

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO

from pyroflows.errors import CheckpointError, DataError
from pyroflows.flows import CompactFlow, ConditionalCompactFlow, check_context, fit
from pyroflows.flows.conditional import ConditionedSigmoidSpline, ConditionedTwoSlopeAffine

CONFIGS = {
    "spline": dict(transform="spline", num_layers=2, count_bins=6),
    "spline-quadratic": dict(transform="spline", num_layers=1, count_bins=6, order="quadratic"),
    "radial": dict(transform="radial", num_layers=3),
}


def _randomised(module: torch.nn.Module, scale: float = 0.3, seed: int = 1) -> torch.nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return module


def _contexts(n: int = 4, k: int = 2) -> torch.Tensor:
    return torch.randn(n, k, generator=torch.Generator().manual_seed(3), dtype=torch.float64)


def _moderate(flow: ConditionalCompactFlow) -> ConditionalCompactFlow:
    """Random parameters with a moderate context effect (heads read 64 features; large random weights put the mass
    at logits beyond what a float64 grid resolves)."""
    flow = _randomised(flow)
    with torch.no_grad():
        for layer in flow.layers:
            layer.head.weight.mul_(0.05)
    return flow


@pytest.fixture(params=sorted(CONFIGS))
def flow(request) -> ConditionalCompactFlow:
    return _moderate(ConditionalCompactFlow(1.0, 2.5, context_dim=2, **CONFIGS[request.param]))


def _integrate(d, low: float, high: float, n: int = 200_001) -> torch.Tensor:
    """Integral of each batch member's density by quadrature in logit (interval) or log (half-line) coordinates."""
    u = torch.linspace(-40, 40, n, dtype=torch.float64)
    if math.isinf(high):
        y, dy_du = low + torch.exp(u), torch.exp(u)
        keep = (y > low) & torch.isfinite(y)
    else:
        y = high * torch.sigmoid(u) + low * torch.sigmoid(-u)
        dy_du = (high - low) * torch.sigmoid(u) * torch.sigmoid(-u)
        keep = (y > low) & (y < high)
    u, y, dy_du = u[keep], y[keep], dy_du[keep]
    batch = d.batch_shape[0]
    with torch.no_grad():
        density = d.log_prob(y[:, None, None].expand(-1, batch, 1)).exp() * dy_du[:, None]
    return torch.trapezoid(density, u, dim=0)


def test_conditional_density_integrates_to_one_for_several_contexts(flow):
    totals = _integrate(flow.condition(_contexts(5)), 1.0, 2.5)
    torch.testing.assert_close(totals, torch.ones(5, dtype=torch.float64), atol=1e-4, rtol=0)


def test_one_sided_conditional_density_integrates_to_one():
    flow = _moderate(ConditionalCompactFlow(0.5, math.inf, context_dim=2, num_layers=1, count_bins=6))
    totals = _integrate(flow.condition(_contexts(4)), 0.5, math.inf)
    torch.testing.assert_close(totals, torch.ones(4, dtype=torch.float64), atol=1e-4, rtol=0)


def test_the_density_depends_on_the_context(flow):
    y = torch.full((2, 1), 1.7, dtype=torch.float64)
    lp = flow.condition(torch.tensor([[-2.0, 0.0], [2.0, 1.0]], dtype=torch.float64)).log_prob(y)
    assert (lp[0] - lp[1]).abs() > 1e-3


def _copy_unconditional(cond: ConditionalCompactFlow, flow: CompactFlow) -> None:
    """Give every head zero weights and the unconditional layer's parameters as its bias."""
    with torch.no_grad():
        for c, u in zip(cond.layers, flow.layers, strict=True):
            c.head.weight.zero_()
            c.head.bias.copy_(torch.cat([p.flatten() for _, p in u.named_parameters()]))


@pytest.mark.parametrize("name", ["spline", "radial"])
def test_a_flow_that_ignores_its_context_is_the_unconditional_flow(name):
    kwargs = dict(transform=name, num_layers=CONFIGS[name]["num_layers"])
    if name == "spline":
        kwargs["count_bins"] = 6
    # The conditional spline has Pyro's fixed end derivatives: compare with the unconditional flow's "fixed" ends.
    ends = {"ends": "fixed"} if name == "spline" else {}
    flow = _randomised(CompactFlow(1.0, 2.5, **kwargs, **ends))
    cond = _randomised(ConditionalCompactFlow(1.0, 2.5, context_dim=3, **kwargs), seed=2)
    _copy_unconditional(cond, flow)
    y = torch.linspace(1.0, 2.5, 101, dtype=torch.float64)[1:-1, None]
    context = torch.randn(y.shape[0], 3, dtype=torch.float64)
    with torch.no_grad():
        expected = flow().log_prob(y)
        got = cond.condition(context).log_prob(y)
    # The same arithmetic on the same numbers; only the head's matrix product (zero weights) is added.
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_batched_equals_row_by_row(flow):
    context = _contexts(6)
    y = torch.linspace(1.05, 2.45, 6, dtype=torch.float64)[:, None]
    with torch.no_grad():
        batched = flow.condition(context).log_prob(y)
        rows = torch.stack([flow.condition(context[i]).log_prob(y[i]) for i in range(6)])
    torch.testing.assert_close(batched, rows, rtol=1e-10, atol=1e-12)


def test_shapes_of_samples_and_log_probs():
    flow = ConditionalCompactFlow([0.0, 0.0], [1.0, 2.0], context_dim=3, hidden_dims=[8])
    d = flow.condition(torch.randn(5, 3))
    assert d.batch_shape == (5,) and d.event_shape == (2,)
    samples = d.sample((7,))
    assert samples.shape == (7, 5, 2) and d.log_prob(samples).shape == (7, 5)
    assert bool(d.support.check(samples).all())
    assert flow.sample(torch.randn(3)).shape == (2,)


def test_box_density_integrates_to_one_on_a_grid():
    flow = ConditionalCompactFlow([0.0, -1.0], [1.0, 2.0], context_dim=1, count_bins=4, hidden_dims=[4])
    flow = _randomised(flow, 0.1)
    x = torch.linspace(-25, 25, 701, dtype=torch.float64)
    grid = torch.cartesian_prod(x, x)
    low, high = flow.low, flow.high
    y = high * torch.sigmoid(grid) + low * torch.sigmoid(-grid)
    jac = ((high - low) * torch.sigmoid(grid) * torch.sigmoid(-grid)).prod(-1)
    keep = (y > low).all(-1) & (y < high).all(-1)
    for c in (-1.5, 0.7):
        with torch.no_grad():
            dens = torch.zeros(grid.shape[0], dtype=torch.float64)
            context = torch.full((int(keep.sum()), 1), c, dtype=torch.float64)
            dens[keep] = flow.condition(context).log_prob(y[keep]).exp() * jac[keep]
        total = torch.trapezoid(torch.trapezoid(dens.reshape(701, 701), x, dim=1), x).item()
        assert total == pytest.approx(1.0, abs=2e-3)


@pytest.mark.parametrize("low, high, outside", [(1.0, 2.5, 3.0), (0.0, math.inf, -0.5), (-math.inf, 2.0, 2.5)])
def test_support_checks_in_both_validation_modes(low, high, outside):
    flow = ConditionalCompactFlow(low, high, context_dim=1, num_layers=1, count_bins=4)
    inside = 1.5 if math.isfinite(low) and math.isfinite(high) else (1.0 if math.isinf(high) else 1.0)
    y = torch.tensor([[inside], [outside]], dtype=torch.float64)
    context = torch.zeros(2, 1, dtype=torch.float64)
    with pyro.validation_enabled(True):
        with pytest.raises(ValueError, match=r"1 value\(s\) outside the support"):
            flow.condition(context).log_prob(y)
    with pyro.validation_enabled(False):
        lp = flow.condition(context).log_prob(y)
    assert torch.isfinite(lp[0]) and lp[1] == -math.inf


def test_supports_of_one_sided_flows():
    d = ConditionalCompactFlow(0.0, math.inf, context_dim=1).condition(torch.zeros(1, 1))
    assert isinstance(d.support.base_constraint, torch.distributions.constraints.greater_than)
    d = ConditionalCompactFlow(-math.inf, 1.0, context_dim=1).condition(torch.zeros(1, 1))
    assert isinstance(d.support.base_constraint, torch.distributions.constraints.less_than)
    assert bool((d.sample((100,)) < 1.0).all())


def test_save_and_load_are_exact(tmp_path, flow):
    flow.set_context_scaling(_contexts(10) * 3 + 1)
    path = flow.save(tmp_path / "cond.pt")
    again = ConditionalCompactFlow.load(path)
    context, y = _contexts(8), torch.linspace(1.01, 2.49, 8, dtype=torch.float64)[:, None]
    with torch.no_grad():
        assert torch.equal(flow.condition(context).log_prob(y), again.condition(context).log_prob(y))
    assert again.config == flow.config
    with pytest.raises(CheckpointError, match="holds a ConditionalCompactFlow model, expected a CompactFlow"):
        CompactFlow.load(path)


def test_conditioned_layers_log_det_matches_autograd():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(5, 1, generator=gen, dtype=torch.float64)
    shape = (5, 1, 6)
    spline = ConditionedSigmoidSpline(
        torch.randn(shape, generator=gen, dtype=torch.float64),
        torch.randn(shape, generator=gen, dtype=torch.float64),
        torch.randn((5, 1, 5), generator=gen, dtype=torch.float64),
        torch.rand(shape, generator=gen, dtype=torch.float64),
    )
    tail = ConditionedTwoSlopeAffine(*(0.5 * torch.randn(3, 5, 1, generator=gen, dtype=torch.float64)))
    for t in (spline, tail):
        grad = torch.autograd.functional.jacobian(lambda v, t=t: t(v).sum(0), x).diagonal(dim1=0, dim2=2)
        torch.testing.assert_close(t.log_abs_det_jacobian(x, t(x)), grad.squeeze(0).log().squeeze(-1))
        torch.testing.assert_close(t._inverse(t(x)), x, rtol=1e-8, atol=1e-8)


def test_fit_with_a_context_learns_the_dependence():
    gen = np.random.default_rng(0)
    x = gen.uniform(-1, 1, size=(600, 1))
    y = gen.beta(np.exp(1.5 * x[:, 0]) + 0.5, 2.0)
    flow = ConditionalCompactFlow(0.0, 1.0, context_dim=1, num_layers=1, hidden_dims=[16])
    result = fit(flow, y, context=x, steps=200, eval_every=5, batch_size=128, progress=False, seed=0)
    assert bool(flow.context_scaling_set)
    truth = dist.Beta(torch.as_tensor(np.exp(1.5 * x[:, 0]) + 0.5), 2.0).log_prob(torch.as_tensor(y)).mean()
    with torch.no_grad():
        nll = -flow.condition(torch.as_tensor(x)).log_prob(torch.as_tensor(y)[:, None]).mean()
    # An unconditional fit cannot go below the marginal's entropy, about 0.1 nats above the truth here.
    assert nll - (-truth) < 0.06
    assert math.isfinite(result.best_heldout_nll)


@pytest.mark.parametrize(
    "context, message",
    [
        (None, r"needs the features of each data row"),
        (np.zeros((9, 1)), r"has 9 row\(s\) but the data have 10"),
        (np.zeros((10, 3)), r"expected shape \(N, 1\) or \(N,\)"),
        (np.r_[np.zeros(9), np.nan], r"1 row\(s\) hold NaN or inf, e.g. rows \[9\]"),
        (np.array(["a"] * 10), r"expected real numbers"),
    ],
)
def test_fit_rejects_a_bad_context(context, message):
    flow = ConditionalCompactFlow(0.0, 1.0, context_dim=1, num_layers=1)
    with pytest.raises(DataError, match=message):
        fit(flow, np.linspace(0.1, 0.9, 10), context=context, steps=1, progress=False)


def test_fit_rejects_a_context_for_an_unconditional_flow():
    with pytest.raises(DataError, match="is not conditional"):
        fit(CompactFlow(0.0, 1.0), np.linspace(0.1, 0.9, 10), context=np.zeros(10), steps=1, progress=False)


def test_check_context_accepts_a_column_for_one_feature():
    flow = ConditionalCompactFlow(0.0, 1.0, context_dim=1)
    assert check_context(flow, [1.0, 2.0]).shape == (2, 1)


def test_works_as_the_likelihood_in_a_users_plate_and_svi_loop():
    gen = np.random.default_rng(1)
    x = torch.as_tensor(gen.uniform(-1, 1, size=(200, 2)))
    y = torch.as_tensor(gen.beta(2.0, 3.0, size=(200, 1)))
    flow = ConditionalCompactFlow(0.0, 1.0, context_dim=2, num_layers=1, hidden_dims=[8])

    def model(x, y):
        with pyro.plate("data", x.shape[0], subsample_size=50) as idx:
            pyro.sample("y", flow.condition(x[idx]), obs=y[idx])

    svi = SVI(model, lambda x, y: None, pyro.optim.Adam({"lr": 0.02}), Trace_ELBO())
    before = Trace_ELBO().loss(lambda: pyro.sample("y", flow.condition(x).to_event(1), obs=y), lambda: None)
    for _ in range(60):
        svi.step(x, y)
    after = Trace_ELBO().loss(lambda: pyro.sample("y", flow.condition(x).to_event(1), obs=y), lambda: None)
    assert after < before - 10  # nats over 200 points: the parameters were registered and trained


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(low=0.0, high=1.0, context_dim=0), "context_dim: expected an integer >= 1, got 0"),
        (dict(low=0.0, high=1.0, context_dim=1, transform="planar"), "transform: unknown 'planar'; expected one of"),
        (dict(low=0.0, high=1.0, context_dim=1, transform="autoregressive"), "needs dim > 1"),
        (dict(low=-math.inf, high=math.inf, context_dim=1), "no finite bound"),
        (dict(low=[0.0, -math.inf], high=[math.inf, 1.0], context_dim=1), "same kind of bounds"),
        (dict(low=0.0, high=1.0, context_dim=1, weight_prior=0.0), "weight_prior must be a positive number"),
        (dict(low=0.0, high=1.0, context_dim=1, weight_prior="big"), "weight_prior must be a positive number"),
        (dict(low=0.0, high=1.0, context_dim=1, dropout=1.0), r"dropout must be a number in \[0, 1\)"),
    ],
)
def test_bad_arguments_raise_with_a_message(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ConditionalCompactFlow(**kwargs)


def _fit_recording_optimiser_args(monkeypatch, flow, **kwargs) -> dict[str, dict]:
    """Fit ``flow`` for 2 steps; the optimiser arguments ``fit`` gave each parameter, by its name in the flow."""
    real, seen = pyro.optim.ClippedAdam, {}

    def recording(args):
        def per_parameter(name):
            given = args(name) if callable(args) else args
            seen[name.removeprefix(f"{flow._pyro_name}.")] = given
            return given

        return real(per_parameter)

    monkeypatch.setattr(pyro.optim, "ClippedAdam", recording)
    gen = np.random.default_rng(0)
    y, x = gen.uniform(0, 1, size=(40, flow.dim)), gen.normal(size=(40, 2))
    fit(flow, y, context=x, steps=2, progress=False, seed=0, **kwargs)
    return seen


@pytest.mark.parametrize("transform, dim", [("spline", 1), ("autoregressive", 2)])
def test_the_weight_prior_reaches_the_optimiser_as_weight_decay(monkeypatch, transform, dim):
    flow = ConditionalCompactFlow([0.0] * dim, [1.0] * dim, context_dim=2, transform=transform, weight_prior=0.5)
    seen = _fit_recording_optimiser_args(monkeypatch, flow)
    weights = {n for n, m in flow.named_modules() if isinstance(m, torch.nn.Linear)}
    assert set(seen) == {n for n, _ in flow.named_parameters()}
    for name, args in seen.items():
        module, kind = name.rsplit(".", 1)
        assert args["weight_decay"] == (4.0 if kind == "weight" and module in weights else 0.0), name
        assert args["lr"] == 3e-2 and args["clip_norm"] == 10.0
    # 1 / sigma^2 on every Linear's weight: the trunk's, the heads' (and the autoregressive networks')
    assert set(flow.weight_decays()) == {f"{n}.weight" for n in weights}


def test_without_a_weight_prior_fit_gives_the_optimiser_one_set_of_arguments(monkeypatch):
    flow = ConditionalCompactFlow(0.0, 1.0, context_dim=2, weight_prior=None)
    assert flow.weight_decays() == {}
    seen = _fit_recording_optimiser_args(monkeypatch, flow)
    assert all("weight_decay" not in args for args in seen.values())
    assert flow.log_prior().item() == 0.0


def test_the_weight_decay_is_the_gradient_of_the_log_prior():
    flow = _randomised(ConditionalCompactFlow([0.0, 0.0], [1.0, 2.0], context_dim=2, weight_prior=0.3))
    params = dict(flow.named_parameters())
    grads = torch.autograd.grad(flow.log_prior(), list(params.values()), allow_unused=True)
    decays = flow.weight_decays()
    for (name, p), g in zip(params.items(), grads, strict=True):
        if name in decays:
            torch.testing.assert_close(g, -decays[name] * p)
        else:  # biases (the unconditional flow at zero weights) are free
            assert g is None or torch.equal(g, torch.zeros_like(p)), name


def test_a_tight_weight_prior_shrinks_the_fit_towards_the_unconditional_flow():
    gen = np.random.default_rng(0)
    x = gen.uniform(-1, 1, size=(400, 1))
    y = gen.beta(np.exp(1.5 * x[:, 0]) + 0.5, 2.0)
    heads = {}
    for sigma in (None, 1e-3):
        flow = ConditionalCompactFlow(0.0, 1.0, context_dim=1, num_layers=1, hidden_dims=[8], weight_prior=sigma)
        fit(flow, y, context=x, steps=150, progress=False, seed=0)
        heads[sigma] = max(layer.head.weight.abs().max().item() for layer in flow.layers)
    # Adam's steps near the prior's optimum 0 are about the final learning rate (3e-4) in size.
    assert heads[1e-3] < 0.01 < heads[None]


def test_dropout_acts_only_inside_fit_dropout_in_training_mode():
    # one hidden layer, so the features are the one dropped layer's (with two, the first's drops feed the second)
    flow = _moderate(ConditionalCompactFlow(0.0, 1.0, context_dim=2, hidden_dims=[64], dropout=0.5))
    x = _contexts(200)
    with torch.no_grad():
        plain = flow.features(x)
        with flow.fit_dropout():
            dropped = flow.features(x)
            flow.eval()
            evaluated = flow.features(x)
            flow.train()
        assert torch.equal(flow.features(x), plain) and torch.equal(evaluated, plain)
    zero = dropped == 0
    assert abs(zero.double().mean().item() - 0.5) < 0.05  # rate 0.5 on the hidden layer's features
    torch.testing.assert_close(dropped[~zero], 2 * plain[~zero])  # kept features are scaled by 1 / (1 - rate)


def test_fit_trains_with_dropout_and_leaves_a_deterministic_flow():
    gen = np.random.default_rng(0)
    x, y = gen.uniform(-1, 1, size=(100, 2)), gen.uniform(0, 1, 100)
    flows = [ConditionalCompactFlow(0.0, 1.0, context_dim=2, dropout=rate, name=f"drop{rate}") for rate in (0.0, 0.5)]
    for flow in flows:
        fit(flow, y, context=x, steps=20, progress=False, seed=0)
    # the same start and minibatches: only the dropout differs
    assert not torch.equal(flows[0].trunk[0].weight, flows[1].trunk[0].weight)
    c = torch.as_tensor(x)
    with torch.no_grad():
        assert torch.equal(flows[1].condition(c).log_prob(torch.as_tensor(y)[:, None]),
                           flows[1].condition(c).log_prob(torch.as_tensor(y)[:, None]))  # fmt: skip


def test_the_defaults_and_old_checkpoints(tmp_path):
    flow = ConditionalCompactFlow(0.0, 1.0, context_dim=2)
    assert flow.config["weight_prior"] == ConditionalCompactFlow.default_weight_prior
    assert flow.config["dropout"] == ConditionalCompactFlow.default_dropout
    config = {k: v for k, v in flow.config.items() if k not in ("weight_prior", "dropout")}
    old = ConditionalCompactFlow.from_config(config)  # a file written before the options existed
    assert (old.config["weight_prior"], old.config["dropout"]) == (None, 0.0)
