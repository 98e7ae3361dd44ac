"""Maximum-likelihood fitting: it learns, restores the best held-out parameters, and rejects bad data clearly."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pyro
import pytest
import torch

from pyroflows.datasets.bounded import piecewise_uniform
from pyroflows.errors import DataError
from pyroflows.flows import CompactFlow, ConvergenceWarning, check_data, fit


@pytest.mark.filterwarnings("ignore::pyroflows.flows.fit.ConvergenceWarning")  # a short budget on purpose
def test_fit_on_the_posts_target_improves_and_gets_close():
    """Fast version of the benchmark: 1,500 points, 300 steps, KL measured on 20,000 fresh points."""
    target = piecewise_uniform()
    train, test = target.sample(1500, seed=1), torch.as_tensor(target.sample(20000, seed=2))
    flow = CompactFlow(1.0, 2.5)
    with torch.no_grad():
        kl_before = -flow().log_prob(test).mean().item() - target.entropy
    result = fit(flow, train, steps=300, batch_size=256, lr=0.1, seed=0, progress=False)
    with torch.no_grad():
        kl_after = -flow().log_prob(test).mean().item() - target.entropy
    assert kl_after < kl_before / 3
    assert kl_after < 0.025
    assert result.train_nll[-1] < result.train_nll[0]
    assert len(result.heldout_nll) == len(result.train_nll)


def test_overfitted_parameters_are_replaced_by_the_best_heldout_epoch():
    """A 64-bin spline on 100 training points overfits: the kept parameters must be the best evaluation's."""
    target = piecewise_uniform()
    flow = CompactFlow(1.0, 2.5, transform="spline", count_bins=64)
    with torch.no_grad():
        for p in flow.parameters():
            p.mul_(0.05)  # start near a smooth density so the run reaches the overfitting phase quickly
    data = target.sample(200, seed=3)
    result = fit(
        flow,
        data,
        steps=60,
        eval_every=1,
        patience=60,
        batch_size=200,
        lr=0.1,
        heldout_fraction=0.5,
        seed=0,
        progress=False,
    )
    assert result.best_eval < len(result.heldout_nll) - 1  # went back ...
    assert result.best_heldout_nll == pytest.approx(result.heldout_nll[result.best_eval], abs=1e-9)  # ... exactly
    assert result.best_heldout_nll < result.heldout_nll[-1]


def test_restore_gate_needs_a_significant_difference():
    from pyroflows.flows.fit import _significantly_better

    gen = torch.Generator().manual_seed(0)
    noise = torch.randn(500, generator=gen, dtype=torch.float64)
    base = torch.randn(500, generator=gen, dtype=torch.float64)
    assert _significantly_better(base + 0.05 + 0.01 * noise, base)
    assert not _significantly_better(base + 0.001 + 0.1 * noise, base)
    assert not _significantly_better(base - 0.05, base)


def test_fit_accepts_float32_and_points_on_the_bounds():
    data = np.concatenate([np.full(5, 1.0), np.full(5, 2.5), np.random.default_rng(0).uniform(1, 2.5, 200)])
    flow = CompactFlow(1.0, 2.5, num_layers=2)
    result = fit(flow, data.astype(np.float32), steps=3, progress=False)
    assert np.isfinite(result.train_nll).all()
    assert all(torch.isfinite(p).all() for p in flow.parameters())


@pytest.mark.parametrize(
    "data, message",
    [
        (np.array([1.2, 3.0, 0.5, 2.0]), r"2 of 4 row\(s\) lie outside \[1.0, 2.5\], e.g. rows \[1, 2\] = \[3.0, 0.5"),
        (np.array([1.2, np.nan, 2.0]), r"1 row\(s\) hold NaN or inf, e.g. rows \[1\]"),
        (np.array([1.2, np.inf]), r"NaN or inf"),
        (np.ones((3, 2)), r"expected shape \(N, 1\) or \(N,\), got \(3, 2\)"),
        (np.ones((2, 2, 2)), r"expected shape"),
        (np.array(["a", "b"]), r"expected numbers"),
    ],
)
def test_bad_data_is_named(data, message):
    flow = CompactFlow(1.0, 2.5, num_layers=1)
    with pytest.raises(DataError, match=message):
        check_data(flow, data)
    with pytest.raises(DataError, match=message):
        fit(flow, data, steps=1, progress=False)


def test_box_outside_rows_are_named():
    flow = CompactFlow([0.0, 0.0], [1.0, 2.0], num_layers=1)
    with pytest.raises(DataError, match=r"1 of 2 row\(s\) lie outside the box .* rows \[1\] = \[\[0.5, 2.5\]\]"):
        check_data(flow, np.array([[0.5, 1.0], [0.5, 2.5]]))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(steps=0), "steps: expected an integer >= 1, got 0"),
        (dict(eval_every=0), "eval_every: expected an integer >= 1, got 0"),
        (dict(lr=-1.0), r"lr: expected a finite number > 0, got -1"),
        (dict(lr=float("nan")), r"lr: expected a finite number > 0, got nan"),
        (dict(final_lr_fraction=0.0), r"final_lr_fraction: expected a finite number > 0 and <= 1, got 0"),
        (dict(heldout_fraction=1.0), r"heldout_fraction: expected a finite number >= 0 and < 1, got 1"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        fit(CompactFlow(0.0, 1.0, num_layers=1), np.full(10, 0.5), progress=False, **kwargs)


def test_too_few_points():
    with pytest.raises(DataError, match="at least 2 points"):
        fit(CompactFlow(0.0, 1.0, num_layers=1), np.array([0.5]), progress=False)


@pytest.mark.filterwarnings("ignore::pyroflows.flows.fit.ConvergenceWarning")  # short budgets on purpose
def test_the_budget_is_in_steps_whatever_the_data_size():
    for n in (100, 3000):
        result = fit(CompactFlow(0.0, 1.0, num_layers=1), np.random.default_rng(0).uniform(size=n), steps=40,
                     eval_every=10, patience=40, progress=False, seed=0)  # fmt: skip
        assert result.steps == 40 and len(result.heldout_nll) == 4 and len(result.train_nll) == 4
        assert result.best_step == (result.best_eval + 1) * 10


def test_a_run_that_ends_while_still_improving_warns():
    from pyroflows.flows.fit import ConvergenceWarning

    data = np.random.default_rng(0).beta(2, 5, 1000)
    with pytest.warns(ConvergenceWarning, match="still improving when the budget of 40 steps ran out"):
        result = fit(CompactFlow(0.0, 1.0), data, steps=40, eval_every=5, seed=0, progress=False)
    assert not result.converged and not result.stopped_early


def _beta_2_5_fit(steps: int):
    """Beta(2, 5), 5,000 points, ``steps`` steps with an evaluation every 5; the flow's KL on 20,000 fresh points."""
    from scipy import stats

    rng = np.random.default_rng(5)
    train, test = rng.beta(2, 5, 5000), rng.beta(2, 5, 20000)
    pyro.set_rng_seed(0)
    flow = CompactFlow(0.0, 1.0)
    result = fit(flow, train, steps=steps, eval_every=5, seed=0, progress=False)
    with torch.no_grad():
        kl = -flow().log_prob(torch.as_tensor(test)[:, None]).mean().item() + stats.beta(2, 5).logpdf(test).mean()
    return result, kl


def test_an_annealed_under_fitted_run_warns():
    """170 steps: the learning rate has decayed to 1% and the last quarter of the steps looks flat, but the flow is
    under-fitted (its KL is several times the 600-step fit's, next test); over the last quarter of the schedule's total
    step length (from step 50: the window below) the held-out NLL still fell significantly."""
    from pyroflows.flows.fit import ConvergenceWarning, _convergence_window

    assert _convergence_window(170, 0.01, 5) == 120
    with pytest.warns(ConvergenceWarning, match=r"over the last 120 steps, the last quarter of the schedule's total"):
        result, kl = _beta_2_5_fit(170)
    assert not result.converged and kl > 0.01
    # the step-quarter view: the held-out NLL moved by less than a hundredth of a nat over the last 40 steps
    assert abs(result.heldout_nll[-1] - result.heldout_nll[-9]) < 0.01


def test_a_fitted_run_does_not_warn():
    """The same data with 600 steps: converged (no warning; the suite turns warnings into errors), KL below 0.005."""
    result, kl = _beta_2_5_fit(600)
    assert result.converged and kl < 0.005


def test_the_convergence_window_holds_the_last_quarter_of_the_step_length():
    """The window's first step is where the summed learning rates left to come fall to a quarter of their total."""
    from pyroflows.flows.fit import _convergence_window

    for steps, fraction, eval_every in ((2000, 0.01, 20), (170, 0.01, 5), (500, 0.1, 10), (400, 1.0, 20)):
        lrs = fraction ** (np.arange(1, steps + 1) / steps)  # ClippedAdam multiplies lr by lrd before each step
        start = steps - _convergence_window(steps, fraction, eval_every)
        assert lrs[start:].sum() / lrs.sum() == pytest.approx(0.25, abs=0.005)
    assert _convergence_window(400, 1.0, 20) == 100  # a constant learning rate: the last quarter of the steps
    assert _convergence_window(4, 1.0, 5) == 5  # one evaluation interval at least


def test_the_default_budget_is_the_flow_classs(monkeypatch):
    """``fit`` without ``steps`` runs the flow class's ``default_fit_steps``, with the whole budget as patience."""
    from pyroflows.flows import ConditionalCompactFlow
    from pyroflows.flows.fit import DEFAULT_STEPS, default_steps

    assert default_steps(CompactFlow(0.0, 1.0)) == DEFAULT_STEPS == 2000
    assert default_steps(ConditionalCompactFlow(0.0, 1.0, context_dim=1)) == 2000
    assert default_steps(ConditionalCompactFlow([0.0, 0.0], [1.0, 1.0], context_dim=1)) == 2000
    assert default_steps(ConditionalCompactFlow(0.0, float("inf"), context_dim=1)) == 4000
    assert default_steps(ConditionalCompactFlow(float("-inf"), 0.0, context_dim=1)) == 4000
    monkeypatch.setattr(CompactFlow, "default_fit_steps", 30)
    monkeypatch.setattr(ConditionalCompactFlow, "default_fit_steps", 20)
    rng = np.random.default_rng(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # budgets this small are too small on purpose
        plain = fit(CompactFlow(0.0, 1.0, num_layers=1), rng.uniform(size=200), eval_every=10, progress=False)
        x = rng.uniform(size=(200, 1))
        flow = ConditionalCompactFlow(0.0, 1.0, context_dim=1, num_layers=1, hidden_dims=[4])
        conditional = fit(flow, rng.uniform(size=200), context=x, eval_every=10, progress=False)
    assert (plain.steps, conditional.steps) == (30, 20)
    assert not plain.stopped_early and not conditional.stopped_early


def test_beta_2_5_from_1000_points_with_the_defaults():
    """Issue 15, item 13: held-out NLL near the optimum with the default budget.

    The lowest expected NLL is the entropy H(Beta(2, 5)) = -0.4845 (the mean log-likelihood's optimum is -H).

    The excess over the optimum is the KL from the truth plus Monte Carlo noise: on 20,000 test points the
    standard error of the mean log-density ratio is below 0.003, and a flow fitted to 900 points is expected to miss
    by its effective number of parameters over 2N (~0.01); 0.03 leaves room for one seed (the benchmark runs three).
    """
    from scipy import stats

    optimum = float(stats.beta(2, 5).entropy())
    assert optimum == pytest.approx(-0.4845, abs=1e-4)
    rng = np.random.default_rng(5)
    train, test = rng.beta(2, 5, 1000), torch.as_tensor(rng.beta(2, 5, 20000))[:, None]
    flow = CompactFlow(0.0, 1.0)
    result = fit(flow, train, seed=0, progress=False)
    with torch.no_grad():
        nll = -flow().log_prob(test).mean().item()
    truth = -stats.beta(2, 5).logpdf(test.numpy()).mean()
    assert nll - truth < 0.03
    assert result.converged


def _auto_fit(data, *, seed=0, **kwargs):
    """A fresh ``ends="auto"`` flow (its initial parameters drawn after ``pyro.set_rng_seed(seed)``), fitted."""
    import pyro

    pyro.set_rng_seed(seed)
    flow = CompactFlow(0.0, 1.0, ends="auto")
    return flow, fit(flow, data, steps=kwargs.pop("steps", 60), eval_every=20, seed=seed, progress=False, **kwargs)


@pytest.mark.filterwarnings("ignore::pyroflows.flows.fit.ConvergenceWarning")  # short budgets on purpose
def test_auto_ends_fits_each_candidate_as_a_direct_fit_would_and_keeps_the_lower_heldout_nll():
    """Each candidate is the fit that flow would get on its own (same start, split, minibatches: the same numbers on
    the same machine), and the flow keeps the one with the lower held-out NLL, with its ends and tail prior."""
    import pyro

    from pyroflows.flows.compact import TAIL_PRIOR_BY_ENDS

    data = np.random.default_rng(0).beta(2, 5, 400)
    flow, result = _auto_fit(data)
    direct = {}
    for ends in ("free", "secant"):
        pyro.set_rng_seed(0)
        alone = CompactFlow(0.0, 1.0, ends=ends)
        direct[ends] = fit(alone, data, steps=60, eval_every=20, seed=0, progress=False).best_heldout_nll
    assert result.ends_heldout_nll == direct
    assert result.ends == min(direct, key=direct.get)
    assert result.best_heldout_nll == direct[result.ends]
    assert flow.config["ends"] == flow.layer_ends == result.ends
    assert flow.config["tail_prior"] == TAIL_PRIOR_BY_ENDS[result.ends]
    assert hasattr(flow.layers[1], "unnormalized_end_derivatives") == (result.ends == "free")


@pytest.mark.filterwarnings("ignore::pyroflows.flows.fit.ConvergenceWarning")
def test_auto_ends_is_deterministic_under_a_seed_and_the_fitted_flow_reloads_exactly(tmp_path):
    data = np.random.default_rng(1).uniform(size=300)
    (first, a), (second, b) = _auto_fit(data, seed=3), _auto_fit(data, seed=3)
    x = torch.linspace(0, 1, 101, dtype=torch.float64)[:, None]
    assert a.ends == b.ends and a.ends_heldout_nll == b.ends_heldout_nll
    assert torch.equal(first().log_prob(x), second().log_prob(x))
    first.save(tmp_path / "auto.pt")
    again = CompactFlow.load(tmp_path / "auto.pt")
    assert again.config == first.config and again.config["ends"] == a.ends
    assert torch.equal(again().log_prob(x), first().log_prob(x))


def test_an_unfitted_auto_flow_has_free_ends_and_reloads_as_auto(tmp_path):
    flow = CompactFlow(0.0, 1.0, ends="auto")
    assert (flow.config["ends"], flow.layer_ends, flow.config["tail_prior"]) == ("auto", "free", "auto")
    # Its prior until fit chooses is the free ends' (the kink at slope 1 is there: 0 at the start).
    assert flow.log_prior().item() == 0.0
    with torch.no_grad():
        flow.layers[0].log_slope_lower.fill_(0.5)
    assert flow.log_prior().item() == pytest.approx(-0.5 / 0.1, rel=1e-12)
    flow.save(tmp_path / "auto.pt")
    again = CompactFlow.load(tmp_path / "auto.pt")
    x = torch.linspace(0, 1, 11, dtype=torch.float64)[:, None]
    assert again.config["ends"] == "auto" and torch.equal(again().log_prob(x), flow().log_prob(x))


def test_auto_ends_issue_the_kept_fits_warning_once():
    from pyroflows.flows.fit import ConvergenceWarning

    data = np.random.default_rng(0).beta(2, 5, 1000)
    with pytest.warns(ConvergenceWarning) as caught:
        _auto_fit(data, steps=40)
    assert len([w for w in caught if w.category is ConvergenceWarning]) == 1  # not one per candidate
    assert caught[0].filename == __file__  # pointing at the caller's line


@pytest.mark.filterwarnings("ignore::pyroflows.flows.fit.ConvergenceWarning")
def test_a_flow_that_took_other_ends_still_trains_under_svi():
    """The parameter store forgets the layers a flow replaced: SVI then trains the new ones, not stale copies."""
    import pyro

    data = np.random.default_rng(2).uniform(size=300)
    flow, result = _auto_fit(data)
    flow._adopt_ends(CompactFlow.from_config({**flow.config, "ends": "secant" if result.ends == "free" else "free"}))
    before = {k: v.detach().clone() for k, v in flow.named_parameters()}
    fit(flow, data, steps=20, eval_every=20, seed=0, progress=False)
    assert all(not torch.equal(before[k], v) for k, v in flow.named_parameters())
    store = pyro.get_param_store()
    flow()
    mine = {k: v for k, v in store.items() if k.startswith(f"{flow._pyro_name}.")}
    params = dict(flow.named_parameters())
    assert len(mine) == len(params)
    assert all(any(v is p for p in params.values()) for v in map(store.get_param, mine))


@pytest.mark.parametrize(
    ("kwargs", "fit_kwargs", "message"),
    [
        ({"ends": "auto"}, {"heldout_fraction": 0.0}, "chooses the spline ends on the held-out split"),
        ({"ends": "nope"}, {}, "ends: unknown 'nope'; expected one of free, secant, auto, data, fixed"),
        ({"ends": "auto", "transform": "radial"}, {}, "ends: 'auto' needs transform='spline'"),
    ],
)
def test_bad_ends_are_named(kwargs, fit_kwargs, message):
    with pytest.raises(DataError, match=message):
        fit(CompactFlow(0.0, 1.0, **kwargs), np.full(20, 0.5), steps=1, progress=False, **fit_kwargs)


def _data_fit(data, *, seed=0, low=0.0, high=1.0, **kwargs):
    """A fresh ``ends="data"`` flow (its start drawn after ``pyro.set_rng_seed(seed)``), fitted."""
    import pyro

    pyro.set_rng_seed(seed)
    flow = CompactFlow(low, high, ends="data")
    return flow, fit(flow, data, steps=kwargs.pop("steps", 40), eval_every=20, seed=seed, progress=False, **kwargs)


def _training_split(data, seed, heldout_fraction=0.1):
    """The training rows ``fit`` draws with ``seed`` (its ``_Split.draw``: a permutation right after the seed)."""
    import pyro

    x = torch.as_tensor(data, dtype=torch.float64).reshape(len(data), -1)
    pyro.set_rng_seed(seed)
    perm = torch.randperm(x.shape[0])
    return x[perm[int(round(heldout_fraction * x.shape[0])) :]]


@pytest.mark.filterwarnings("ignore::pyroflows.flows.fit.ConvergenceWarning")  # short budgets on purpose
def test_data_ends_are_chosen_per_bound_from_the_training_split_and_each_end_is_what_was_chosen():
    """Beta(1, 3): a flat density at 0 (a = 1), a vanishing one at 1 (a = 3): secant ends and the strong tail prior
    at the lower bound, free ends and the weak prior at the upper one, decided on the training rows alone."""
    import torch.nn.functional as F

    from pyroflows.flows.bound_exponent import bound_exponents

    data = np.random.default_rng(4).beta(1, 3, 1000)
    flow, result = _data_fit(data, seed=2)
    expected = bound_exponents(_training_split(data, 2), flow.low, flow.high)
    assert result.bound_exponents == expected
    assert flow.config["bound_ends"] == [["secant", "free"]] == flow.layer_ends
    spline = flow.layers[1]
    assert spline.bound_ends == [["secant", "free"]]
    inner = spline.spline
    bins = inner.count_bins
    widths = 2 * (1e-3 + (1 - 1e-3 * bins) * F.softmax(inner.unnormalized_widths, -1))
    heights = 2 * (1e-3 + (1 - 1e-3 * bins) * F.softmax(inner.unnormalized_heights, -1))
    with torch.no_grad():
        _, log_first = spline._spline_op(torch.full((1, 1), -1.0, dtype=torch.float64))
        _, log_last = spline._spline_op(torch.full((1, 1), 1.0, dtype=torch.float64))
        free_last = 1e-3 + F.softplus(spline.unnormalized_end_derivatives[0, 1])
    # At theta = 0 (1) the spline's log-derivative is log d_0 (log d_K) up to the rounding of O(1) terms.
    assert log_first.item() == pytest.approx((heights[0, 0] / widths[0, 0]).log().item(), abs=1e-12)
    assert log_last.item() == pytest.approx(free_last.log().item(), abs=1e-12)
    # Each bound's tail slope under its own ends' Laplace scale: 0.01 (secant), 0.1 (free).
    tails = flow.layers[0]
    lower, upper = tails.log_slope_lower.item(), tails.log_slope_upper.item()
    assert flow.log_prior().item() == pytest.approx(-(abs(lower) / 0.01 + abs(upper) / 0.1), rel=1e-12)


@pytest.mark.filterwarnings("ignore::pyroflows.flows.fit.ConvergenceWarning")
def test_data_ends_are_deterministic_under_a_seed_and_the_fitted_flow_reloads_bit_identical(tmp_path):
    data = np.random.default_rng(5).uniform(size=600) ** 0.5  # density 2x: vanishing at 0, flat at 1
    (first, a), (second, b) = _data_fit(data, seed=1), _data_fit(data, seed=1)
    x = torch.linspace(0, 1, 101, dtype=torch.float64)[:, None]
    assert a.bound_exponents == b.bound_exponents and first.config == second.config
    assert first.config["bound_ends"] == [["free", "secant"]]
    assert torch.equal(first().log_prob(x), second().log_prob(x))
    first.save(tmp_path / "data.pt")
    again = CompactFlow.load(tmp_path / "data.pt")
    assert again.config == first.config and again.layers[1].bound_ends == [["free", "secant"]]
    assert again.state_dict().keys() == first.state_dict().keys()
    assert all(torch.equal(v, first.state_dict()[k]) for k, v in again.state_dict().items())
    assert torch.equal(again().log_prob(x), first().log_prob(x))
    assert torch.equal(again.log_prior(), first.log_prior())


def test_an_unfitted_data_flow_is_the_free_ends_flow_and_reloads_undecided(tmp_path):
    import pyro

    pyro.set_rng_seed(0)
    flow = CompactFlow(0.0, 1.0, ends="data")
    pyro.set_rng_seed(0)
    free = CompactFlow(0.0, 1.0, ends="free")
    assert (flow.config["ends"], flow.config["bound_ends"], flow.config["tail_prior"]) == ("data", None, "auto")
    assert flow.layer_ends == [["free", "free"]]
    assert flow.state_dict().keys() == free.state_dict().keys()  # the same parameters whatever fit decides
    x = torch.linspace(0, 1, 11, dtype=torch.float64)[:, None]
    assert torch.equal(flow().log_prob(x), free().log_prob(x))
    with torch.no_grad():
        flow.layers[0].log_slope_upper.fill_(-0.5)
    assert flow.log_prior().item() == pytest.approx(-0.5 / 0.1, rel=1e-12)
    flow.save(tmp_path / "undecided.pt")
    again = CompactFlow.load(tmp_path / "undecided.pt")
    assert again.config["bound_ends"] is None and torch.equal(again().log_prob(x), flow().log_prob(x))


@pytest.mark.filterwarnings("ignore::pyroflows.flows.fit.ConvergenceWarning")
def test_data_ends_on_a_half_line_keep_free_ends_at_the_infinite_bound():
    data = np.random.default_rng(6).exponential(size=400)  # density 1 at 0: flat there
    flow, result = _data_fit(data, high=math.inf, steps=20)
    assert flow.config["bound_ends"] == [["secant", "free"]]
    assert result.bound_exponents[0][1].k == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ends": "free", "bound_ends": [["secant", "free"]]}, "bound_ends: given for ends='free'"),
        ({"ends": "data", "bound_ends": [["secant"]]}, r"bound_ends: expected 1 \(lower, upper\) pair\(s\)"),
        ({"ends": "data", "bound_ends": [["fixed", "free"]]}, "of 'secant' or 'free', got"),
        ({"ends": "data", "bound_ends": "secant"}, "bound_ends: expected 1"),
    ],
)
def test_bad_bound_ends_are_named(kwargs, message):
    with pytest.raises(DataError, match=message):
        CompactFlow(0.0, 1.0, **kwargs)


def test_choosing_bound_ends_needs_a_per_bound_rule():
    with pytest.raises(DataError, match="choose_bound_ends: ends='free' is not chosen per bound"):
        CompactFlow(0.0, 1.0, ends="free").choose_bound_ends(torch.rand(10, 1, dtype=torch.float64))
