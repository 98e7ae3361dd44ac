"""Benchmark: ConditionalCompactFlow against what a user would otherwise write for a bounded response given features.

Targets (``pyroflows.datasets.conditional``): a Beta whose two parameters move with two features; a mixture whose
weight moves between a U shape and an interior peak; a heteroscedastic normal truncated to [0, 1] piling mass
against 0; a dependent pair on a box; a Gamma on [0, inf) whose shape crosses 1. Each model is fitted to 5,000
(x, y) rows (10% held out for early stopping) and scored on 20,000 fresh rows: KL = held-out NLL minus the true
conditional density's NLL on the same rows (a paired estimate of NLL minus the conditional entropy); mean error =
the average over 200 test contexts of |E_q[y | x] - E[y | x]| (quadrature for one dimension, 4,000 draws per context
on the box, the larger coordinate).

Models: ``ConditionalCompactFlow`` with ``fit``'s defaults; (a) Beta regression (Gamma regression on the half-line)
with an MLP link, written in Pyro; (b) the do-it-yourself Pyro conditional spline plus squash
(``ConditionalTransformedDistribution(Normal, [conditional_spline(...), IntervalSquashTransform(...)])``, an
``ExpTransform`` on the half-line); (c) a mixture density network of 5 Betas (Gammas on the half-line); (d) zuko's
conditional NSF on the logit (log on the half-line) of y. Every baseline trains with the same loop: minibatches of
512, Adam from lr 1e-2 decaying to 1e-4, at most 3,000 steps, held-out NLL every 100 steps, best state kept, stop
after 10 evaluations without improvement.

Usage:
    python benchmarks/conditional_flows.py              # 3 data draws, rewrites its section of RESULTS.md
    python benchmarks/conditional_flows.py --quick      # 1 draw, 1,000 rows, short budgets, prints only
    python benchmarks/conditional_flows.py --targets box --models flow --rows box.json --no-write
    python benchmarks/conditional_flows.py --combine box.json gamma.json   # one table from saved runs
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import math
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist
import pyro.distributions.transforms as T
import torch
from _results import write_section as _write_section  # noqa: E402  # benchmarks/ is sys.path[0] when run
from pyro.infer import SVI, Trace_ELBO
from torch import nn

from pyroflows.datasets.conditional import CONDITIONAL_TARGETS, ConditionalTarget
from pyroflows.flows import ConditionalCompactFlow, ConvergenceWarning, IntervalSquashTransform, fit

RESULTS = Path(__file__).with_name("RESULTS.md")
SECTION = "## Conditional compact flows"
DT = torch.float64

LogProb = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (y (N, D), x (N, K)) -> (N,)


def _mlp(k: int, out: int, hidden: int = 64) -> nn.Sequential:
    return nn.Sequential(nn.Linear(k, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, out))


def train_loop(module: nn.Module, log_prob: LogProb, y: torch.Tensor, x: torch.Tensor, steps: int, seed: int) -> None:
    """The baselines' shared maximum-likelihood loop (Pyro SVI with an empty guide, as a Pyro user writes it)."""
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(y.shape[0], generator=gen)
    n_val = y.shape[0] // 10
    yv, xv, yt, xt = y[perm[:n_val]], x[perm[:n_val]], y[perm[n_val:]], x[perm[n_val:]]
    batch = min(512, yt.shape[0])
    pyro.module("baseline", module)

    def model(yb, xb):
        pyro.module("baseline", module)
        pyro.factor("loglik", log_prob(yb, xb).sum() * (yt.shape[0] / yb.shape[0]))

    decay = (1e-2) ** (1.0 / steps)
    svi = SVI(model, lambda yb, xb: None, pyro.optim.ClippedAdam({"lr": 1e-2, "lrd": decay, "clip_norm": 10.0}),
              Trace_ELBO())  # fmt: skip
    best, best_state, bad = math.inf, copy.deepcopy(module.state_dict()), 0
    for step in range(1, steps + 1):
        idx = torch.randint(0, yt.shape[0], (batch,), generator=gen)
        svi.step(yt[idx], xt[idx])
        if step % 100 == 0 or step == steps:
            with torch.no_grad():
                val = -log_prob(yv, xv).mean().item()
            if val < best - 1e-5:
                best, best_state, bad = val, copy.deepcopy(module.state_dict()), 0
            else:
                bad += 1
                if bad >= 10:
                    break
    module.load_state_dict(best_state)


def _scale_to_unit(target: ConditionalTarget) -> tuple[torch.Tensor, torch.Tensor]:
    low, high = torch.tensor(target.low, dtype=DT), torch.tensor(target.high, dtype=DT)
    return low, high - low


def beta_regression(target: ConditionalTarget, d: int, k: int) -> tuple[nn.Module, LogProb, Callable]:
    """(a) One Beta per coordinate (a Gamma on a half-line) with log-parameters from an MLP of the features."""
    net = _mlp(k, 2 * d).to(DT)
    half_line = math.isinf(target.high[0])
    low, width = _scale_to_unit(target)

    def dist_of(x):
        a, b = net(x).exp().clamp(1e-4, 1e4).chunk(2, -1)
        if half_line:
            return dist.Gamma(a, b).to_event(1)
        return dist.TransformedDistribution(dist.Beta(a, b), [T.AffineTransform(low, width)]).to_event(1)

    def log_prob(y, x):
        if half_line:
            return dist_of(x).log_prob(y.clamp(min=1e-300))
        u = ((y - low) / width).clamp(1e-12, 1 - 1e-12)
        return dist.Beta(*net(x).exp().clamp(1e-4, 1e4).chunk(2, -1)).to_event(1).log_prob(u) - width.log().sum()

    return net, log_prob, lambda x, n: dist_of(x).sample((n,))


def diy_spline(target: ConditionalTarget, d: int, k: int) -> tuple[nn.Module, LogProb, Callable]:
    """(b) Pyro's conditional spline on a Normal base, then a squash onto the support (an exp on a half-line)."""
    layer = (T.conditional_spline(d, k, count_bins=8, hidden_dims=[64, 64]) if d == 1
             else T.conditional_spline_autoregressive(d, k, count_bins=8, hidden_dims=[64, 64])).to(DT)  # fmt: skip
    if math.isinf(target.high[0]):
        squash = T.ExpTransform()
    else:
        squash = IntervalSquashTransform(torch.tensor(target.low, dtype=DT), torch.tensor(target.high, dtype=DT))
    base = dist.Normal(torch.zeros(d, dtype=DT), torch.ones(d, dtype=DT)).to_event(1)
    flow = dist.ConditionalTransformedDistribution(base, [layer, squash])

    def log_prob(y, x):
        if math.isinf(target.high[0]):
            y = y.clamp(min=1e-300)
        with pyro.validation_enabled(False):
            return flow.condition(x).log_prob(y)

    def sample(x, n):
        return flow.condition(x).sample((n, x.shape[0]))

    return layer, log_prob, sample


def beta_mdn(target: ConditionalTarget, d: int, k: int, components: int = 5) -> tuple[nn.Module, LogProb, Callable]:
    """(c) A mixture density network: mixture weights and per-component Beta (Gamma) parameters from an MLP."""
    net = _mlp(k, components * (1 + 2 * d)).to(DT)
    half_line = math.isinf(target.high[0])
    low, width = _scale_to_unit(target)

    def mixture(x):
        out = net(x)
        logits = out[..., :components]
        params = out[..., components:].reshape(out.shape[:-1] + (components, 2, d)).exp().clamp(1e-4, 1e4)
        comp = (dist.Gamma if half_line else dist.Beta)(params[..., 0, :], params[..., 1, :]).to_event(1)
        return dist.MixtureSameFamily(dist.Categorical(logits=logits), comp)

    def log_prob(y, x):
        if half_line:
            return mixture(x).log_prob(y.clamp(min=1e-300))
        u = ((y - low) / width).clamp(1e-12, 1 - 1e-12)
        return mixture(x).log_prob(u) - width.log().sum()

    def sample(x, n):
        s = mixture(x).sample((n,))
        return s if half_line else low + width * s

    return net, log_prob, sample


def zuko_nsf(target: ConditionalTarget, d: int, k: int) -> tuple[nn.Module, LogProb, Callable]:
    """(d) zuko's conditional neural spline flow on logit(y) (log(y - low) on a half-line), Jacobian included."""
    validate = torch.distributions.Distribution._validate_args
    import zuko  # importing zuko switches torch's global argument validation off: restore it

    torch.distributions.Distribution.set_default_validate_args(validate)
    nsf = zuko.flows.NSF(d, k, transforms=3, hidden_features=(64, 64)).to(DT)
    half_line = math.isinf(target.high[0])
    low, width = _scale_to_unit(target)

    def to_real(y):
        if half_line:
            z = (y - low).clamp(min=1e-300).log()
            return z, -z.sum(-1)
        u = ((y - low) / width).clamp(1e-15, 1 - 1e-15)
        return torch.log(u) - torch.log1p(-u), -(torch.log(u) + torch.log1p(-u) + width.log()).sum(-1)

    def log_prob(y, x):
        z, log_jac = to_real(y)
        return nsf(x).log_prob(z) + log_jac

    def sample(x, n):
        z = nsf(x).sample((n,))
        return low + z.exp() if half_line else low + width * torch.sigmoid(z)

    return nsf, log_prob, sample


FLOW = "ConditionalCompactFlow (defaults)"
BASELINES = {
    "(a) Beta regression, MLP link (Pyro)": beta_regression,
    "(b) DIY Pyro conditional spline + squash": diy_spline,
    "(c) MDN of 5 Betas": beta_mdn,
    "(d) zuko conditional NSF + sigmoid": zuko_nsf,
}


def conditional_means(
    target: ConditionalTarget, log_prob: LogProb, sample: Callable, x: torch.Tensor, seed: int
) -> np.ndarray:
    """E_q[y | x] per context row: quadrature in logit / log coordinates for one dimension, else Monte Carlo."""
    if target.dim == 1:
        u = torch.linspace(-30, 30 if math.isfinite(target.high[0]) else 6, 3001, dtype=DT)
        if math.isfinite(target.high[0]):
            lo, hi = target.low[0], target.high[0]
            y, dy = hi * torch.sigmoid(u) + lo * torch.sigmoid(-u), (hi - lo) * torch.sigmoid(u) * torch.sigmoid(-u)
        else:
            y, dy = target.low[0] + u.exp(), u.exp()
        keep = (y > target.low[0]) & (y < target.high[0])
        u, y, dy = u[keep], y[keep], dy[keep]
        means = []
        with torch.no_grad():
            for row in x:
                dens = log_prob(y[:, None], row.expand(y.shape[0], -1)).exp() * dy
                means.append((torch.trapezoid(dens * y, u) / torch.trapezoid(dens, u)).item())
        return np.asarray(means)[:, None]
    torch.manual_seed(seed)
    with torch.no_grad():
        return sample(x, 4000).mean(0).numpy()


def run_model(name: str, target: ConditionalTarget, data: tuple, seed: int, quick: bool) -> dict:
    (x, y), (xt, yt), xm = data
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    xs, ys = torch.as_tensor(x), torch.as_tensor(y)
    start = time.perf_counter()
    extra: dict = {}
    if name == FLOW:
        flow = ConditionalCompactFlow(list(target.low), list(target.high), target.context_dim)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            result = fit(flow, y, context=x, seed=seed, progress=False, **({"steps": 300} if quick else {}))
        extra = {"steps": result.steps, "warned": any(w.category is ConvergenceWarning for w in caught)}

        def log_prob(yy, xx):
            return flow.condition(xx).log_prob(yy)

        def sample(xx, n):
            return flow.sample(xx, (n,))
    else:
        module, log_prob, sample = BASELINES[name](target, target.dim, target.context_dim)
        train_loop(module, log_prob, ys, xs, steps=300 if quick else 3000, seed=seed)
    seconds = time.perf_counter() - start
    with torch.no_grad():
        nll = -log_prob(torch.as_tensor(yt), torch.as_tensor(xt)).mean().item()
    kl = nll + float(target.log_prob(yt, xt).mean())
    means = conditional_means(target, log_prob, sample, torch.as_tensor(xm), seed)
    mean_error = float(np.abs(means - target.mean(xm)).mean(0).max())
    return {"kl": kl, "mean_error": mean_error, "seconds": seconds, **extra}


MODEL_KEYS = {"flow": FLOW, **{name[1]: name for name in BASELINES}}  # flow, a, b, c, d


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 draw of 1,000 rows, short budgets")
    parser.add_argument("--no-write", action="store_true", help="print only; do not update RESULTS.md")
    parser.add_argument("--draws", type=int, default=3, help="independent data draws (and seeds) per target")
    parser.add_argument("--first-draw", type=int, default=0, help="index of the first data draw (and seed)")
    parser.add_argument("--targets", default=",".join(CONDITIONAL_TARGETS), help="comma-separated target names")
    parser.add_argument("--baselines", action=argparse.BooleanOptionalAction, default=True, help="run the baselines")
    parser.add_argument("--models", default=",".join(MODEL_KEYS),
                        help="comma-separated models among flow, a, b, c, d (default all)")  # fmt: skip
    parser.add_argument("--rows", type=Path, default=None, metavar="JSON",
                        help="also save the measured rows (and the load averages) to this JSON file")  # fmt: skip
    parser.add_argument(
        "--combine",
        type=Path,
        nargs="+",
        default=None,
        metavar="JSON",
        help="fit nothing: render (and write, without --no-write) one table from saved --rows files",
    )
    args = parser.parse_args()
    if args.combine:
        saved = [json.loads(path.read_text()) for path in args.combine]
        rows: dict[tuple[str, str], list[dict]] = {}
        for run in saved:
            for item in run["rows"]:
                rows.setdefault((item["target"], item["model"]), []).extend(item["runs"])
        order = {name: i for i, name in enumerate(CONDITIONAL_TARGETS)}
        models = [FLOW, *BASELINES]
        rows = dict(sorted(rows.items(), key=lambda kv: (order.get(kv[0][0], 99), models.index(kv[0][1]))))
        table = render(
            rows,
            saved[0]["n_train"],
            saved[0]["n_test"],
            max(r["draws"] for r in saved),
            False,
            [r["load"] for r in saved],
            sum(r["minutes"] for r in saved),
            [str(p) for p in args.combine],
        )
        print(table)
        if not args.no_write:
            write_section(table)
        return
    n_train, n_test, n_means, draws = (1000, 2000, 20, 1) if args.quick else (5000, 20000, 200, args.draws)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    keys = args.models.split(",") if args.baselines else ["flow"]
    unknown = [k for k in keys if k not in MODEL_KEYS]
    if unknown:
        parser.error(f"--models: unknown {unknown}; choose among {', '.join(MODEL_KEYS)}")
    models = [MODEL_KEYS[k] for k in MODEL_KEYS if k in keys]
    rows = {}
    for name in args.targets.split(","):
        target = CONDITIONAL_TARGETS[name]()
        for draw in range(args.first_draw, args.first_draw + draws):
            data = (target.sample(n_train, seed=100 + draw), target.sample(n_test, seed=200 + draw),
                    target.sample(n_means, seed=300 + draw)[0])  # fmt: skip
            for model in models:
                row = run_model(model, target, data, seed=draw, quick=args.quick)
                row["load"] = os.getloadavg()[0]
                rows.setdefault((name, model), []).append(row)
                print(f"{name:10s} draw {draw} {model:42s} KL {row['kl']:.4f}  mean err {row['mean_error']:.4f}  "
                      f"{row['seconds']:.1f} s  (load {row['load']:.1f})"
                      + (f"  {row['steps']} steps{', warned' if row['warned'] else ''}" if "steps" in row else ""),
                      flush=True)  # fmt: skip
    minutes = (time.perf_counter() - started) / 60
    load = [load_before, os.getloadavg()[0]]
    if args.rows is not None:
        args.rows.write_text(json.dumps({
            "n_train": n_train, "n_test": n_test, "draws": draws, "minutes": minutes, "load": load,
            "rows": [{"target": t, "model": m, "runs": rs} for (t, m), rs in rows.items()],
        }, indent=1))  # fmt: skip
    table = render(rows, n_train, n_test, draws, args.quick, [load], minutes)
    print()
    print(table)
    if not args.no_write and not args.quick:
        write_section(table)


def _spread(values: list[float], digits: int = 4) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f} [{min(values):.{digits}f}, {max(values):.{digits}f}]"


def render(rows, n_train, n_test, draws, quick, loads, minutes, combined=None) -> str:
    """The section: one line per target and model, mean [min, max] over draws, with the load averages."""
    load_range = ", ".join(f"{a:.1f} -> {b:.1f}" for a, b in loads)
    run_loads = [r["load"] for rs in rows.values() for r in rs if "load" in r]
    command = (
        f"`python benchmarks/conditional_flows.py --combine {' '.join(combined)}` of separate runs (one process per "
        "target or per group of models, each `--rows` to its file)"
        if combined
        else f"`python benchmarks/conditional_flows.py{' --quick' if quick else ''}`"
    )
    lines = [
        SECTION,
        "",
        f"Command: {command} (date {datetime.date.today()}, {minutes:.0f} min of fitting in all, load average "
        f"at the start -> end of each run {load_range}"
        + (f", {min(run_loads):.1f} to {max(run_loads):.1f} after the fits" if run_loads else "")
        + " on the shared 2-core machine: compare times within the table). "
        f"{n_train:,} training rows (10% held out), {n_test:,} test rows, up to {draws} independent data draws and "
        "seeds per target: mean [min, max] over draws. KL = held-out conditional NLL minus the true conditional "
        "density's NLL on the same rows (nats); mean error = average |E_q[y|x] - E[y|x]| over 200 test contexts. "
        "The models and their training loops are described in the script's docstring.",
        "",
        "| target | model | draws | KL (nats) | mean error | fit time (s) | load |",
        "|---|---|---|---|---|---|---|",
    ]
    for (target, model), rs in rows.items():
        loads_here = [r["load"] for r in rs if "load" in r]
        lines.append(
            f"| {target} | {model} | {len(rs)} | {_spread([r['kl'] for r in rs])} | "
            f"{_spread([r['mean_error'] for r in rs])} | {_spread([r['seconds'] for r in rs], 1)} | "
            + (f"{min(loads_here):.1f}-{max(loads_here):.1f}" if loads_here else "")
            + " |"
        )
    return "\n".join(lines) + "\n"


def write_section(table: str) -> None:
    _write_section(table, SECTION)
    print(f"updated {RESULTS}")


if __name__ == "__main__":
    main()
