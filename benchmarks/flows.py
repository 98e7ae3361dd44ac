"""Benchmark: compact-support flows vs KDE vs an unbounded Pyro spline flow on bounded targets.

For each target (pyroflows.datasets.bounded) the models are fitted to 5,000 points and scored on 50,000 fresh
points; the table reports held-out NLL minus the true density's NLL on the same points (a Monte Carlo KL
estimate, 0 is perfect; its expectation is NLL minus the exact entropy), the probability mass each model puts
outside the support, and the fit time. A second table compares AutoCompactFlow with AutoNormal as guides for the
Beta-Binomial posterior.

A third part repeats the default fit (what ``pyroflows flow fit`` does) over independent data draws and seeds: the
post's piecewise-uniform target on 5 draws of 5,000 points x 3 seeds, with the learned density's mean over the first
and last 1% and 0.1% of the interval against the truth (0.4 and 0.6), and 1,000 points of Beta(2, 5) x 3 seeds
against the optimum, its entropy :math:`H = -0.4845` (the expected NLL of the truth itself); it draws the learned
density near both bounds for every run in ``benchmarks/flows_bounds.png``.

Usage:
    python benchmarks/flows.py                  # full run, rewrites the "Compact-support flows" sections
    python benchmarks/flows.py --only draws     # only the draws x seeds part (its own section)
    python benchmarks/flows.py --only draws --ends secant  # the same with secant spline ends (its own section)
    python benchmarks/flows.py --only draws --ends auto    # ends chosen per fit by held-out NLL (its own section)
    python benchmarks/flows.py --only draws --ends data    # ends chosen per bound from the data (its own section)
    python benchmarks/flows.py --only decisions  # how often that rule calls each bound flat (no fitting; seconds)
    python benchmarks/flows.py --quick          # smaller sizes, prints the tables only
"""

from __future__ import annotations

import argparse
import datetime
import math
import time
import warnings
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist
import pyro.distributions.transforms as T
import torch
from _results import write_section as _write_section  # benchmarks/ is sys.path[0] when run
from scipy import stats
from sklearn.model_selection import GridSearchCV
from sklearn.neighbors import KernelDensity

from pyroflows.datasets.bounded import BOUNDED_TARGETS, BoundedTarget
from pyroflows.flows import CompactFlow, fit
from pyroflows.flows.beta_binomial import compare_guides
from pyroflows.flows.fit import DEFAULT_STEPS, ConvergenceWarning
from pyroflows.io import save_figure

RESULTS = Path(__file__).with_name("RESULTS.md")
SECTION = "## Compact-support flows"
DRAWS_SECTION = "## Compact-support flows: the defaults over data draws and seeds, and at the bounds"
SECANT_SECTION = "## Compact-support flows: secant spline ends over data draws and seeds, and at the bounds"
AUTO_SECTION = "## Compact-support flows: spline ends chosen per fit by held-out NLL, over data draws and seeds"
DATA_SECTION = "## Compact-support flows: spline ends chosen per bound from the data, over data draws and seeds"
DECISIONS_SECTION = "## Compact-support flows: how often the per-bound ends rule calls a bound flat"
#: The opt-in configuration ``--ends secant`` measures: the flow's and the fit's arguments.
SECANT, SECANT_FIT = {"ends": "secant"}, {"batch_size": 8192}
#: The draws part's configurations (``--ends``): flow arguments, fit arguments, section, figure, description.
DRAW_CONFIGS: dict[str, tuple[dict, dict, str, str, str]] = {
    "default": ({}, {}, DRAWS_SECTION, "flows_bounds.png", "`CompactFlow(1, 2.5)` fitted with `fit`'s defaults"),
    "secant": (
        SECANT,
        SECANT_FIT,
        SECANT_SECTION,
        "flows_bounds_secant.png",
        '`CompactFlow(1, 2.5, ends="secant")` (tail prior 0.01 by default) fitted with `batch_size=8192` (full '
        "batches) and otherwise `fit`'s defaults",
    ),
    "auto": (
        {"ends": "auto"},
        {},
        AUTO_SECTION,
        "flows_bounds_auto.png",
        '`CompactFlow(1, 2.5, ends="auto")` fitted with `fit`\'s defaults: free and secant ends (tail priors 0.1 and '
        "0.01) each fitted on the same split and minibatches, the lower held-out NLL kept",
    ),
    "data": (
        {"ends": "data"},
        {},
        DATA_SECTION,
        "flows_bounds_data.png",
        '`CompactFlow(1, 2.5, ends="data")` fitted with `fit`\'s defaults: at each bound secant ends (tail prior 0.01) '
        "where Hill's estimate of the density's power-law exponent there, from the training split's ceil(n^(2/3)) "
        "nearest points, is within 3 standard errors of 1, free ends (tail prior 0.1) elsewhere",
    ),
}


def true_nll(target: BoundedTarget, test: np.ndarray) -> float:
    """The true density's mean NLL on the test points (its expectation is the entropy)."""
    return float(-target.log_prob(test).mean())


def flow_row(
    target: BoundedTarget, train: np.ndarray, test: np.ndarray, steps: int, fit_kwargs: dict | None = None, **kwargs
) -> dict:
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    start = time.perf_counter()
    flow = CompactFlow(list(target.low), list(target.high), **kwargs)
    fit(flow, train, steps=steps, seed=0, progress=False, **(fit_kwargs or {}))
    seconds = time.perf_counter() - start
    with torch.no_grad():
        nll = -flow().log_prob(torch.as_tensor(test)).mean().item()
    return {"kl": nll - true_nll(target, test), "leak": 0.0, "seconds": seconds}


def kde_row(target: BoundedTarget, train: np.ndarray, test: np.ndarray) -> dict:
    """Gaussian KDE with a 5-fold cross-validated bandwidth, renormalised to the box (its leak reported)."""
    start = time.perf_counter()
    scale = train.std(0).mean()
    grid = GridSearchCV(KernelDensity(), {"bandwidth": scale * np.logspace(-2.3, -0.3, 16)}, cv=5)
    grid.fit(train)
    kde = grid.best_estimator_
    seconds = time.perf_counter() - start
    h = kde.bandwidth_ if hasattr(kde, "bandwidth_") else kde.bandwidth
    low, high = np.array(target.low), np.array(target.high)
    inside = (stats.norm.cdf((high - train) / h) - stats.norm.cdf((low - train) / h)).prod(axis=1).mean()
    nll = -kde.score_samples(test).mean() + math.log(inside)  # truncated to the box and renormalised
    return {"kl": nll - true_nll(target, test), "leak": 1 - inside, "seconds": seconds}


def plain_spline_row(target: BoundedTarget, train: np.ndarray, test: np.ndarray, steps: int) -> dict:
    """Pyro's spline flow without a squash: Normal base -> Spline -> standardising affine, support all of R^d."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    x = torch.as_tensor(train)
    dim = x.shape[1]
    spline = T.Spline(dim, count_bins=16, bound=3.0).double()
    affine = T.AffineTransform(x.mean(0), x.std(0))
    base = dist.Normal(torch.zeros(dim, dtype=torch.float64), 1.0).to_event(1)
    optim = torch.optim.Adam(spline.parameters(), lr=2e-2)
    start = time.perf_counter()
    for _ in range(steps):
        optim.zero_grad()
        loss = -dist.TransformedDistribution(base, [spline, affine]).log_prob(x).mean()
        loss.backward()
        optim.step()
    seconds = time.perf_counter() - start
    with torch.no_grad():
        d = dist.TransformedDistribution(base, [spline, affine])
        nll = -d.log_prob(torch.as_tensor(test)).mean().item()
        s = d.sample((100_000,))
        low, high = torch.tensor(target.low, dtype=s.dtype), torch.tensor(target.high, dtype=s.dtype)
        leak = 1 - ((s >= low) & (s <= high)).all(-1).double().mean().item()
    return {"kl": nll - true_nll(target, test), "leak": leak, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2,000 training / 10,000 test points, fewer steps")
    parser.add_argument("--no-write", action="store_true", help="print only; do not update RESULTS.md")
    parser.add_argument("--only", choices=("table", "draws", "decisions"), default=None, help="run one part only")
    parser.add_argument(
        "--ends",
        choices=tuple(DRAW_CONFIGS),
        default="default",
        help="draws part: the defaults, secant spline ends with full batches, ends chosen per fit by held-out NLL, "
        "or ends chosen per bound from the data (each its own section and figure)",
    )
    args = parser.parse_args()
    if args.only == "decisions":
        section = decisions(args.quick)
        print(section)
        if not args.no_write and not args.quick:
            write_section(section, DECISIONS_SECTION)
        return
    if args.only != "table":
        draws_table = draws_and_seeds(args.quick, figure=not (args.quick or args.no_write), ends=args.ends)
        print(draws_table)
        if not args.no_write and not args.quick:
            write_section(draws_table, DRAW_CONFIGS[args.ends][2])
    if args.only == "draws":
        return
    n_train, n_test, epochs = (2000, 10000, 300) if args.quick else (5000, 50000, DEFAULT_STEPS)

    rows = []
    for name, make in BOUNDED_TARGETS.items():
        target = make()
        train, test = target.sample(n_train, seed=1), target.sample(n_test, seed=2)
        methods = {"default": flow_row(target, train, test, epochs)}
        if target.dim == 1:  # the opt-in secant spline ends, side by side with the default
            methods["spline, secant ends"] = flow_row(target, train, test, epochs, fit_kwargs=SECANT_FIT, **SECANT)
        methods["radial (16 layers)"] = flow_row(target, train, test, epochs, transform="radial")
        if target.dim > 1:
            methods["spline (elementwise)"] = flow_row(target, train, test, epochs, transform="spline")
        methods["KDE (CV)"] = kde_row(target, train, test)
        methods["Pyro spline, no squash"] = plain_spline_row(target, train, test, steps=2 * epochs)
        for method, row in methods.items():
            rows.append({"target": name, "method": method, **row})
            summary = f"KL {row['kl']:.4f}  leak {row['leak']:.4f}  {row['seconds']:.1f} s"
            print(f"{name:12s} {method:24s} {summary}", flush=True)

    guides = compare_guides(steps=300 if args.quick else 1500, num_samples=5000 if args.quick else 20000)
    for label, row in guides.items():
        print(f"Beta-Binomial {label:16s} KL {row['kl']:.4f}  k-hat {row['khat']:.2f}  {row['seconds']:.1f} s")

    table = render(rows, guides, n_train, n_test, epochs, args.quick, only=args.only)
    print()
    print(table)
    if not args.no_write and not args.quick:
        write_section(table)


def _window_mean(flow: CompactFlow, a: float, b: float, cells: int = 4000) -> float:
    """Mean of the flow's density over [a, b] (midpoint rule on ``cells`` cells)."""
    edges = torch.linspace(a, b, cells + 1, dtype=torch.float64)
    with torch.no_grad():
        return flow().log_prob(((edges[1:] + edges[:-1]) / 2)[:, None]).exp().mean().item()


def draws_and_seeds(quick: bool, figure: bool = True, ends: str = "default") -> str:
    """The default fit (or another of :data:`DRAW_CONFIGS`) over independent data draws and seeds: the
    piecewise-uniform target and Beta(2, 5)."""
    flow_kwargs, fit_kwargs, _, figure_name, what = DRAW_CONFIGS[ends]
    target = BOUNDED_TARGETS["piecewise"]()
    draws, seeds, n_train, n_test = ((1, 2), (0,), 2000, 10000) if quick else ((1, 2, 3, 4, 5), (0, 1, 2), 5000, 50000)
    steps = 300 if quick else DEFAULT_STEPS
    (low,), (high,) = target.low, target.high
    width = high - low
    windows = {
        "first 1%": (low, low + 0.01 * width, 0.4),
        "last 1%": (high - 0.01 * width, high, 0.6),
        "first 0.1%": (low, low + 0.001 * width, 0.4),
        "last 0.1%": (high - 0.001 * width, high, 0.6),
    }
    near = width * np.geomspace(1e-6, 0.05, 300)
    runs, curves = _piecewise_runs(target, draws, seeds, n_train, n_test, steps, windows, near, flow_kwargs, fit_kwargs)
    if figure:
        _bounds_figure(near / width, curves, figure_name)
    beta = _beta_runs(quick, seeds, steps, flow_kwargs, fit_kwargs)
    what += f" ({steps} steps at most)" + (", as `pyroflows flow fit` does" if ends == "default" else "")
    header = (
        f"Command: `python benchmarks/flows.py{' --quick' if quick else ' --only draws'}"
        f"{'' if ends == 'default' else ' --ends ' + ends}` (date {datetime.date.today()}). {what}, "
        f"on {len(draws)} independent draws of {n_train:,} points (seeds {', '.join(map(str, draws))}) x "
        f"{len(seeds)} fit seeds; KL = NLL on {n_test:,} fresh points (seed 1000) minus the truth's on the same "
        "points. "
        "Bound columns: the learned density's mean over the first / last 1% and 0.1% of the interval divided by the "
        "truth's (0.4 at the left, 0.6 at the right); 1 is exact."
    )
    return _render_draws(header, runs, draws, windows, beta, ends)


def _piecewise_runs(
    target: BoundedTarget,
    draws: tuple[int, ...],
    seeds: tuple[int, ...],
    n_train: int,
    n_test: int,
    steps: int,
    windows: dict[str, tuple[float, float, float]],
    near: np.ndarray,
    flow_kwargs: dict,
    fit_kwargs: dict,
) -> tuple[list[dict], list[tuple[np.ndarray, np.ndarray]]]:
    """The default fit on each draw x seed: KL, the density's mean near each bound, and its curve there."""
    test = target.sample(n_test, seed=1000)
    truth = true_nll(target, test)
    (low,), (high,) = target.low, target.high
    runs, curves = [], []
    for draw in draws:
        train = target.sample(n_train, seed=draw)
        for seed in seeds:
            pyro.clear_param_store()
            pyro.set_rng_seed(seed)  # as `pyroflows flow fit --seed` does before it builds the flow
            start = time.perf_counter()
            flow = CompactFlow(low, high, **flow_kwargs)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ConvergenceWarning)
                result = fit(flow, train, steps=steps, seed=seed, progress=False, **fit_kwargs)
            seconds = time.perf_counter() - start
            with torch.no_grad():
                kl = -flow().log_prob(torch.as_tensor(test)).mean().item() - truth
                curves.append(
                    (
                        flow().log_prob(torch.as_tensor(low + near)[:, None]).exp().numpy(),
                        flow().log_prob(torch.as_tensor(high - near)[:, None]).exp().numpy(),
                    )
                )
            ratios = {k: _window_mean(flow, a, b) / truth_density for k, (a, b, truth_density) in windows.items()}
            runs.append({"draw": draw, "seed": seed, "kl": kl, "steps": result.steps, "seconds": seconds,
                         "warned": bool(caught), "chosen": result.ends or _bound_choice(flow, result),
                         **ratios})  # fmt: skip
            print(f"piecewise draw {draw} seed {seed}: KL {kl:.4f}, " +
                  ", ".join(f"{k} {v:.3f}" for k, v in ratios.items()) +
                  f", {seconds:.1f} s {runs[-1]['chosen'] or ''}", flush=True)  # fmt: skip
    return runs, curves


def _beta_runs(quick: bool, seeds: tuple[int, ...], steps: int, flow_kwargs: dict, fit_kwargs: dict) -> dict:
    """The default fit to 1,000 points of Beta(2, 5) (200 with ``quick``) per seed, against the optimum."""
    beta, n_beta = stats.beta(2, 5), 200 if quick else 1000
    optimum = float(beta.entropy())  # the lowest expected NLL: H(Beta(2, 5)) = -0.4845
    rng = np.random.default_rng(2025)
    beta_test = rng.beta(2, 5, 10000 if quick else 50000)
    beta_truth = -float(beta.logpdf(beta_test).mean())
    rows = []
    for seed in seeds if quick else (0, 1, 2):
        train = np.random.default_rng(100 + seed).beta(2, 5, n_beta)
        pyro.clear_param_store()
        pyro.set_rng_seed(seed)
        flow = CompactFlow(0.0, 1.0, **flow_kwargs)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            result = fit(flow, train, steps=steps, seed=seed, progress=False, **fit_kwargs)
        with torch.no_grad():
            nll = -flow().log_prob(torch.as_tensor(beta_test)[:, None]).mean().item()
        rows.append({"seed": seed, "nll": nll, "kl": nll - beta_truth, "steps": result.steps, "warned": bool(caught),
                     "chosen": result.ends or _bound_choice(flow, result)})  # fmt: skip
        print(f"Beta(2, 5) seed {seed}: held-out NLL {nll:.4f} (optimum {optimum:.4f}, KL {nll - beta_truth:.4f}) "
              f"{rows[-1]['chosen'] or ''}")  # fmt: skip
    return {"rows": rows, "n": n_beta, "n_test": len(beta_test), "optimum": optimum, "truth": beta_truth}


def _render_draws(
    header: str, runs: list[dict], draws: tuple[int, ...], windows: dict, beta: dict, ends: str = "default"
) -> str:
    """The draws-and-seeds section: the piecewise table, its spread and bound ratios, the Beta(2, 5) table."""
    kls = np.array([r["kl"] for r in runs])
    lines = [
        DRAW_CONFIGS[ends][2],
        "",
        header,
        "",
        "| draw | seed | KL (nats) | first 1% | last 1% | first 0.1% | last 0.1% | steps | fit time (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        lines.append(
            f"| {r['draw']} | {r['seed']} | {r['kl']:.4f} | {r['first 1%']:.3f} | {r['last 1%']:.3f} | "
            f"{r['first 0.1%']:.3f} | {r['last 0.1%']:.3f} | {_steps(r)} | "
            f"{r['seconds']:.1f} |"
        )
    spread = kls.std(ddof=1) if len(kls) > 1 else 0.0
    lines += ["", f"KL over all {len(runs)} runs: mean {kls.mean():.4f}, sd {spread:.4f}, "
              f"min {kls.min():.4f}, max {kls.max():.4f}; runs above 0.005: {(kls > 0.005).sum()}."]  # fmt: skip
    for key in windows:
        per_draw = [np.median([r[key] for r in runs if r["draw"] == d]) for d in draws]
        every = np.array([r[key] for r in runs])
        lines.append(
            f"- {key}: median over draws of the per-draw median ratio {np.median(per_draw):.3f}; over every run "
            f"{every.min():.3f} to {every.max():.3f} (worst error {np.abs(every - 1).max():.1%})."
        )
    optimum = beta["optimum"]
    lines += [
        "",
        f"Beta(2, 5), {beta['n']:,} points (fresh draw per seed), "
        f"{'default fit' if ends == 'default' else 'the same configuration'}: held-out NLL on {beta['n_test']:,} "
        f"fresh points against the optimum {optimum:.4f} (the entropy, the truth's expected NLL; the truth's NLL on "
        f"these points is {beta['truth']:.4f}).",
        "",
        "| seed | held-out NLL | minus optimum | KL (minus the truth's NLL) | steps |",
        "|---|---|---|---|---|",
    ]
    for r in beta["rows"]:
        lines.append(f"| {r['seed']} | {r['nll']:.4f} | {r['nll'] - optimum:+.4f} | {r['kl']:.4f} | {_steps(r)} |")
    lines += [
        "",
        f"Figure: `benchmarks/{DRAW_CONFIGS[ends][3]}` (learned density against distance from each bound, every run).",
    ]
    return "\n".join(lines) + "\n"


def _bound_choice(flow: CompactFlow, result) -> str | None:  # noqa: ANN001 - a FitResult
    """``ends="data"``: the ends chosen at the two bounds and the exponent estimates behind them, for the table."""
    if result.bound_exponents is None:
        return None
    (lower, upper), (lo, hi) = flow.config["bound_ends"][0], result.bound_exponents[0]
    return f"{lower} / {upper} (a = {lo.a:.2f} / {hi.a:.2f}, z = {lo.z:+.1f} / {hi.z:+.1f})"


def _steps(run: dict) -> str:
    """The steps cell: the steps taken, whether fit warned, and the ends it chose (``ends="auto"``)."""
    return f"{run['steps']}{' (warned)' if run['warned'] else ''}{', ' + run['chosen'] if run.get('chosen') else ''}"


def _fit_split_train(x: torch.Tensor, seed: int, heldout_fraction: float = 0.1) -> torch.Tensor:
    """The training rows ``fit(..., seed=seed)`` draws (its split: a permutation right after seeding)."""
    pyro.set_rng_seed(seed)
    perm = torch.randperm(x.shape[0])
    return x[perm[int(round(heldout_fraction * x.shape[0])) :]]


def decisions(quick: bool) -> str:
    """The per-bound rule of ``ends="data"`` without fitting: its decisions on the draws part's training splits for
    other windows and thresholds, and how often it calls each bound flat over many fresh draws."""
    from pyroflows.datasets.bounded import _scaled_beta
    from pyroflows.flows.bound_exponent import FLAT_Z, bound_exponents, hill_exponent

    piecewise = BOUNDED_TARGETS["piecewise"]()
    splits = {}  # the draws part's training splits, as fit draws them
    for draw in (1, 2, 3, 4, 5):
        x = torch.as_tensor(piecewise.sample(5000, seed=draw))
        for seed in (0, 1, 2):
            splits[f"piecewise draw {draw} seed {seed}"] = (_fit_split_train(x, seed), 1.0, 2.5)
    for seed in (0, 1, 2):
        x = torch.as_tensor(np.random.default_rng(100 + seed).beta(2, 5, 1000))[:, None]
        splits[f"Beta(2, 5) seed {seed}"] = (_fit_split_train(x, seed), 0.0, 1.0)
    for name in ("edge-peaked", "u-shaped", "bimodal"):
        target = BOUNDED_TARGETS[name]()
        x = torch.as_tensor(target.sample(5000, seed=1))
        splits[f"main table {name}"] = (_fit_split_train(x, 0), target.low[0], target.high[0])
    lines = [
        DECISIONS_SECTION,
        "",
        f"Command: `python benchmarks/flows.py --only decisions` (date {datetime.date.today()}; no fitting). The rule "
        'of `ends="data"` (`pyroflows/flows/bound_exponent.py`): Hill\'s estimate of the exponent a of P(distance '
        f"<= t) ~ t^a from the k = ceil(n^(2/3)) training points nearest each bound, flat when |log a_hat| sqrt(k) <= "
        f"{FLAT_Z:g}. First, the training splits `fit` draws in the draws part (piecewise: 5 draws x 3 seeds, 30 "
        "bounds; Beta(2, 5): 3 seeds, 6 bounds) and the main table's (edge-peaked, u-shaped, bimodal), decided with "
        "other windows and thresholds: the number of bounds called otherwise than the truth's exponent says (a = 1: "
        "flat; Beta(2, 5) and the others' non-flat bounds: not), and the largest |z| on the piecewise target.",
        "",
        "| window k | z | piecewise bounds called not flat (of 30) | largest piecewise abs(z) | Beta(2, 5) bounds "
        "called flat (of 6) | main-table bounds called wrongly (of 6) |",
        "|---|---|---|---|---|---|",
    ]
    truth = {"edge-peaked": (True, False), "u-shaped": (False, False), "bimodal": (False, False)}
    for mult in (0.5, 1.0, 2.0):
        zs: dict[str, list[float]] = {}
        for name, (train, lo, hi) in splits.items():
            zs[name] = []
            for distance in (train[:, 0] - lo, hi - train[:, 0]):
                n = distance.numel()
                zs[name].append(
                    hill_exponent(distance.clamp(min=0), max(1, min(n - 1, math.ceil(mult * n ** (2 / 3))))).z
                )
        for z in (2.0, 3.0):
            pw = [abs(v) for k, pair in zs.items() if k.startswith("piecewise") for v in pair]
            beta = sum(abs(v) <= z for k, pair in zs.items() if k.startswith("Beta") for v in pair)
            wrong = sum((abs(v) <= z) != flat for name, flats in truth.items()
                        for v, flat in zip(zs[f"main table {name}"], flats, strict=True))  # fmt: skip
            window = "ceil(n^(2/3))" if mult == 1 else f"ceil({mult:g} n^(2/3))"
            lines.append(f"| {window} | {z:g} | {sum(v > z for v in pw)} | {max(pw):.2f} | {beta} | {wrong} |")
    targets = {
        "piecewise (1 / 1)": piecewise,
        "edge-peaked Beta(1, 3) (1 / 3)": BOUNDED_TARGETS["edge-peaked"](),
        "u-shaped Beta(0.5, 0.5) (0.5 / 0.5)": BOUNDED_TARGETS["u-shaped"](),
        "bimodal (3 / 3)": BOUNDED_TARGETS["bimodal"](),
        "Beta(2, 5) (2 / 5)": _scaled_beta("beta-2-5", "", 2.0, 5.0, 0.0, 1.0),
        "Beta(1.25, 1.25) (1.25 / 1.25)": _scaled_beta("beta-1.25", "", 1.25, 1.25, 0.0, 1.0),
        "Beta(0.8, 0.8) (0.8 / 0.8)": _scaled_beta("beta-0.8", "", 0.8, 0.8, 0.0, 1.0),
    }
    sizes, repeats = ((500, 5000), 50) if quick else ((500, 1000, 5000, 50000), 400)
    lines += [
        "",
        f"Then how often each bound is called flat (lower / upper) over {repeats} fresh draws per size ({repeats // 4} "
        "at 50,000), 90% of n points each (the size of fit's training split), seed 12345:",
        "",
        "| target (a lower / upper) | " + " | ".join(f"n = {n:,}" for n in sizes) + " |",
        "|---|" + "---|" * len(sizes),
    ]
    rng = np.random.default_rng(12345)
    for name, target in targets.items():
        low, high = torch.tensor(target.low, dtype=torch.float64), torch.tensor(target.high, dtype=torch.float64)
        cells = []
        for n in sizes:
            if n == 50000 and not name.startswith(("piecewise", "Beta(1.25", "Beta(0.8")):
                cells.append("")
                continue
            draws = [torch.as_tensor(target.sample(n - round(0.1 * n), seed=rng))
                     for _ in range(repeats if n < 50000 else repeats // 4)]  # fmt: skip
            flats = np.array([[e.flat for e in bound_exponents(x, low, high)[0]] for x in draws])
            cells.append(f"{flats[:, 0].mean():.1%} / {flats[:, 1].mean():.1%}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _bounds_figure(distance: np.ndarray, curves: list, name: str = "flows_bounds.png") -> None:
    """Learned density near each bound for every run, on a log scale of the distance to the bound.

    Built as a :class:`matplotlib.figure.Figure` (no pyplot: importing this script never changes a backend).
    """
    try:
        from matplotlib.figure import Figure
    except ImportError:  # pragma: no cover - matplotlib is a dependency
        return
    fig = Figure(figsize=(9, 3.5))
    axes = fig.subplots(1, 2, sharey=True)
    for ax, side, truth, k in ((axes[0], "lower", 0.4, 0), (axes[1], "upper", 0.6, 1)):
        for curve in curves:
            ax.semilogx(distance, curve[k], color="C1", alpha=0.5, lw=1)
        ax.axhline(truth, color="k", label="true density")
        ax.axvspan(distance[0], 0.01, color="0.9", zorder=0)
        ax.set_xlabel(f"distance from the {side} bound / width")
        ax.set_ylim(0, 1.5)
    axes[0].set_ylabel("density")
    axes[0].legend(loc="upper left")
    fig.suptitle("piecewise-uniform target: learned density near the bounds, every draw and seed")
    fig.tight_layout()
    save_figure(fig, Path(__file__).with_name(name), overwrite=True, dpi=100)


def render(
    rows: list[dict], guides: dict, n_train: int, n_test: int, epochs: int, quick: bool, only: str | None = None
) -> str:
    defaults = [r["kl"] for r in rows if r["method"] == "default"]
    lines = [
        SECTION,
        "",
        f"Command: `python benchmarks/flows.py{' --quick' if quick else ''}{' --only ' + only if only else ''}` "
        f"(date {datetime.date.today()}). "
        "Each target: "
        f"{n_train:,} training points (10% held out for early stopping), {n_test:,} fresh test points. "
        "KL = held-out NLL minus the true density's NLL on the same test points (a paired Monte Carlo estimate of "
        "KL(target || model) in nats; 0 is perfect; the exact entropies are in `pyroflows.datasets.bounded`). "
        "Leak = mass outside the "
        "support (the KDE is truncated and renormalised, so its KL counts the leak; the unbounded spline's KL "
        "includes it). default = `CompactFlow(low, high)` fitted with `fit`'s defaults (whole-interval spline on an "
        'interval, its ends chosen at each bound from the training points near it, `ends="data"`; autoregressive '
        f"on the box), at most {epochs} optimiser steps; 'spline, secant ends' is "
        '`CompactFlow(low, high, ends="secant")` (tail prior 0.01) fitted with `batch_size=8192`. Times are '
        "wall-clock on the shared 2-core machine.",
        "",
        "| target | method | KL (nats) | leak | fit time (s) |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['target']} | {r['method']} | {r['kl']:.4f} | {r['leak']:.4f} | {r['seconds']:.1f} |")
    lines += [
        "",
        f"Defaults: worst KL {max(defaults):.4f}, mean {np.mean(defaults):.4f} over {len(defaults)} targets.",
        "",
        "Guides for the Beta-Binomial posterior Beta(1, 41) (uniform prior, 0 successes in 40 trials): KL(q || exact "
        "posterior) by Monte Carlo from q, and PSIS Pareto k-hat (ArviZ) of log p(theta, data) - log q(theta).",
        "",
        "| guide | KL (nats) | k-hat | fit time (s) |",
        "|---|---|---|---|",
    ]
    for label, row in guides.items():
        lines.append(f"| {label} | {row['kl']:.4f} | {row['khat']:.2f} | {row['seconds']:.1f} |")
    return "\n".join(lines) + "\n"


def write_section(table: str, section: str = SECTION) -> None:
    _write_section(table, section)
    print(f"updated {RESULTS}")


if __name__ == "__main__":
    main()
