"""``pyroflows flow fit | score | sample``: compact-support flows on data files."""

from __future__ import annotations

import argparse
import math
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from pyroflows import distributed
from pyroflows.cli._common import SEED, add_parser, int_arg, print_json, seed_everything
from pyroflows.errors import DataError, NumericalError
from pyroflows.io import check_output_path, check_output_suffix, load_array, parse_bounds, save_array, save_figure

__all__ = ["register", "run_demo", "fit_command", "score_command", "sample_command"]

#: Most samples one ``flow sample`` writes (8 bytes per value per column).
MAX_SAMPLES = 100_000_000
#: What ``run_demo`` writes into its folder (``pyroflows demo`` checks them before any work).
DEMO_OUTPUTS = ("data.npy", "flow.pt", "samples.npy", "density.png")


def register(subparsers: Any) -> None:
    """Add ``flow`` and its sub-commands to the ``pyroflows`` parser."""
    flow = add_parser(
        subparsers,
        "flow",
        help="fit, score and sample densities on an interval or a box",
        description=(
            "Compact-support normalizing flows: a learned density that is exactly zero outside [low, high] "
            "(per dimension for a box)."
        ),
        example="pyroflows flow fit data.npy --low 1 --high 2.5 --out flow.pt",
    )
    sub = flow.add_subparsers(dest="flow_command", metavar="SUBCOMMAND")
    flow.set_defaults(handler=lambda args: (flow.print_help(), 2)[1])

    fit = add_parser(
        sub,
        "fit",
        help="fit a flow to data by maximum likelihood",
        description=(
            "Fit a CompactFlow on [low, high] to DATA (.npy or .csv, shape (N,) or (N, D)) by maximum likelihood "
            "with Pyro SVI, a 10%% held-out split and early stopping, and save it to MODEL. Points outside the "
            "bounds are an error (the model would give them zero density). --low -inf or --high inf gives a "
            "one-sided support [low, inf) / (-inf, high]. With --context FEATURES (.npy/.csv of shape (N, K), rows "
            "aligned with DATA) it fits a ConditionalCompactFlow p(y | x) instead."
        ),
        example=(
            "pyroflows flow fit data.npy --low 1 --high 2.5 --out flow.pt\n"
            "  pyroflows flow fit y.npy --context x.npy --low 0 --high 1 --out cond.pt\n"
            "  pyroflows flow fit durations.npy --low 0 --high inf --out positive.pt"
        ),
    )
    fit.add_argument("data", type=Path, metavar="DATA", help=".npy or .csv file, shape (N,) or (N, D)")
    fit.add_argument("--low", required=True, help="lower bound; comma-separated, one per column, for D > 1")
    fit.add_argument("--high", required=True, help="upper bound; comma-separated, one per column, for D > 1")
    fit.add_argument("--out", required=True, type=Path, metavar="MODEL", help="where to save the model (.pt)")
    fit.add_argument(
        "--transform",
        choices=("radial", "spline", "autoregressive"),
        default=None,
        help="flow layers (default: spline for one column, autoregressive for several)",
    )
    fit.add_argument("--layers", type=int_arg(low=0, high=1000), default=None,
                     help="number of flow layers (default: per transform)")  # fmt: skip
    fit.add_argument(
        "--steps",
        type=int_arg(low=1, high=10**7),
        default=None,
        help="maximum optimiser steps, whatever the number of points (default 2000); a warning says when the "
        "held-out NLL was still improving at the end",
    )
    fit.add_argument(
        "--context",
        type=Path,
        default=None,
        metavar="FEATURES",
        help="features of each DATA row (.npy/.csv, shape (N, K)): fit a conditional flow p(y | x)",
    )
    fit.add_argument("--seed", type=SEED, default=0, help="random seed (default 0)")
    fit.add_argument("--force", action="store_true", help="replace MODEL if it exists")
    fit.add_argument("--quiet", action="store_true", help="no progress bar")
    fit.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    fit.set_defaults(handler=fit_command, splits_work=True)

    score = add_parser(
        sub,
        "score",
        help="mean negative log-likelihood of data under a saved flow",
        description=(
            "Print the mean negative log-likelihood (nats per point) of DATA under MODEL. Points outside the "
            "model's support have zero likelihood: they are an error naming how many and which rows. A "
            "conditional model needs --context FEATURES (one row of K features per DATA row) and scores "
            "-log p(y_i | x_i)."
        ),
        example=(
            "pyroflows flow score flow.pt test.npy --json\n  pyroflows flow score cond.pt y.npy --context x.npy --json"
        ),
    )
    score.add_argument("model", type=Path, metavar="MODEL", help="a model written by 'pyroflows flow fit'")
    score.add_argument("data", type=Path, metavar="DATA", help=".npy or .csv file, shape (N,) or (N, D)")
    score.add_argument("--json", action="store_true", help='print {"nll": ..., "n": ...}')
    score.add_argument(
        "--context", type=Path, default=None, metavar="FEATURES", help="features of each DATA row (conditional models)"
    )
    score.set_defaults(handler=score_command)

    sample = add_parser(
        sub,
        "sample",
        help="draw samples from a saved flow",
        description=(
            "Draw N samples from MODEL and write them to FILE (.npy or .csv; shape (N,) for an interval). For a "
            "conditional model, --context FEATURES (M rows of K features) draws N samples per context row: a .npy "
            "file gets shape (M, N, D) ((M, N) for an interval), a .csv file M*N rows of D columns, context row i's "
            "draws in rows i*N to i*N + N - 1."
        ),
        example="pyroflows flow sample flow.pt -n 1000 --out samples.npy\n"
        "  pyroflows flow sample cond.pt --context x.npy -n 100 --out draws.npy",
    )
    sample.add_argument("model", type=Path, metavar="MODEL", help="a model written by 'pyroflows flow fit'")
    sample.add_argument("-n", type=int_arg(low=1, high=MAX_SAMPLES), required=True, metavar="N",
                        help=f"number of samples (at most {MAX_SAMPLES:,})")  # fmt: skip
    sample.add_argument("--out", required=True, type=Path, metavar="FILE", help="output .npy or .csv file")
    sample.add_argument("--seed", type=SEED, default=0, help="random seed (default 0)")
    sample.add_argument(
        "--context", type=Path, default=None, metavar="FEATURES", help="draw N samples per row of these features"
    )
    sample.add_argument("--force", action="store_true", help="replace FILE if it exists")
    sample.set_defaults(handler=sample_command)


def _bounds(args: argparse.Namespace, dim: int) -> tuple[list[float], list[float]]:
    low = parse_bounds(args.low, name="--low", allow_infinite=True)
    high = parse_bounds(args.high, name="--high", allow_infinite=True)
    for name, values in (("--low", low), ("--high", high)):
        if len(values) not in (1, dim):
            raise DataError(f"{name}: got {len(values)} values but the data have {dim} column(s); give 1 or {dim}")
    low, high = low * dim if len(low) == 1 else low, high * dim if len(high) == 1 else high
    bad = [i for i in range(dim) if low[i] >= high[i]]
    if bad:
        raise DataError(
            f"--low must be below --high; column(s) {bad} have low {[low[i] for i in bad]} >= high "
            f"{[high[i] for i in bad]}"
        )
    # A one-sided support has one infinite bound; two finite bounds must have a finite width.
    wide = [
        i
        for i in range(dim)
        if math.isfinite(low[i])
        and math.isfinite(high[i])
        and (not math.isfinite(high[i] - low[i]) or high[i] - low[i] > 1e300)
    ]
    if wide:
        raise DataError(f"--low/--high: the interval of column(s) {wide} is too wide for float64 (width overflows)")
    return low, high


def fit_command(args: argparse.Namespace) -> int:
    """``pyroflows flow fit``."""
    from pyroflows.flows import default_transform, fit
    from pyroflows.flows.fit import DEFAULT_STEPS

    check_output_path(args.out, overwrite=args.force)  # fail before loading and fitting, not after
    steps = DEFAULT_STEPS if args.steps is None else args.steps
    data = load_array(args.data)
    dim = 1 if data.ndim == 1 else data.shape[1]
    if data.shape[0] < 10:
        raise DataError(f"{args.data}: need at least 10 points to fit and hold some out, got {data.shape[0]}")
    low, high = _bounds(args, dim)
    transform = args.transform or default_transform(dim)
    if transform == "autoregressive" and dim == 1:
        raise DataError("--transform autoregressive needs data with 2 or more columns; use spline or radial")
    context = _load_context(args.context, data.shape[0]) if args.context is not None else None
    seed_everything(args.seed)
    flow = _make_flow(low, high, data, context, transform, args)
    result = fit(flow, data, steps=steps, seed=args.seed, progress=not args.quiet, context=context)
    summary = {
        "model": str(args.out),
        "n": int(data.shape[0]),
        "dim": dim,
        "transform": transform,
        "conditional": context is not None,
        "layers": flow.config["num_layers"],
        "steps": result.steps,
        "best_step": result.best_step,
        "converged": result.converged,
        "heldout_nll": result.best_heldout_nll,
        "seconds": round(result.seconds, 2),
    }
    if not distributed.is_main():  # under torchrun every rank holds the same fitted flow; rank 0 writes it
        return 0
    flow.save(args.out, overwrite=args.force, extra={"fit": summary, "train_nll": result.train_nll})
    if args.json:
        print_json(summary)
    else:
        print(
            f"fitted a {transform} flow ({summary['layers']} layer(s)) to {summary['n']} points in "
            f"{result.seconds:.1f} s: held-out NLL {result.best_heldout_nll:.4f} nats at step "
            f"{summary['best_step']} of {summary['steps']}; saved to {args.out}"
        )
    return 0


def _load_context(path: Path, rows: int) -> np.ndarray:
    """FEATURES as an ``(N, K)`` array with one row per data row (NaN and a row-count mismatch are errors)."""
    context = load_array(path, ndim=2)
    if context.shape[0] != rows:
        raise DataError(
            f"{path}: has {context.shape[0]} row(s) but the data have {rows}; --context needs one row per data row"
        )
    return context


def _make_flow(low, high, data, context, transform, args):  # noqa: ANN001, ANN202 - lazily imported types
    from pyroflows.flows import CompactFlow, ConditionalCompactFlow

    scale = 1.0
    if any(math.isinf(v) for v in low + high):
        # A half-line squash works in units of the data's typical distance from the finite bound.
        bound = np.asarray(low if math.isinf(high[0]) else high)
        distance = np.abs(data.reshape(data.shape[0], -1) - bound)
        scale = float(np.median(distance)) if np.median(distance) > 0 else 1.0
    try:
        if context is None:
            return CompactFlow(low, high, transform=transform, num_layers=args.layers, scale=scale)
        return ConditionalCompactFlow(
            low, high, context.shape[1], transform=transform, num_layers=args.layers, scale=scale
        )
    except ValueError as exc:  # bounds the flows cannot take (mixed one-sided kinds, no finite bound)
        raise DataError(f"--low/--high: {exc}") from exc


def _load_flow(path: Path):  # noqa: ANN202 - CompactFlow or ConditionalCompactFlow, imported lazily
    from pyroflows.flows import CompactFlow, ConditionalCompactFlow
    from pyroflows.serialization import load_checkpoint

    kind = load_checkpoint(path)["kind"]
    if kind == "ConditionalCompactFlow":
        return ConditionalCompactFlow.load(path)
    return CompactFlow.load(path)


def _is_conditional(flow) -> bool:  # noqa: ANN001
    from pyroflows.flows import ConditionalCompactFlow

    return isinstance(flow, ConditionalCompactFlow)


def _check_context_option(flow, args: argparse.Namespace) -> None:  # noqa: ANN001
    if _is_conditional(flow) and args.context is None:
        raise DataError(
            f"{args.model}: is a conditional flow; pass --context FEATURES (one row of {flow.context_dim} "
            "feature(s) per data row)"
        )
    if not _is_conditional(flow) and args.context is not None:
        raise DataError(f"--context: {args.model} is not a conditional flow (fitted without --context)")


def score_command(args: argparse.Namespace) -> int:
    """``pyroflows flow score``."""
    import torch

    from pyroflows.flows import check_context, check_data

    flow = _load_flow(args.model)
    _check_context_option(flow, args)
    data = load_array(args.data)
    x = check_data(flow, data, name=str(args.data))
    with torch.no_grad():
        if args.context is not None:
            c = check_context(flow, _load_context(args.context, x.shape[0]), name=str(args.context))
            chunks = [flow(c[i : i + 65536]).log_prob(x[i : i + 65536]) for i in range(0, x.shape[0], 65536)]
        else:
            d = flow()
            chunks = [d.log_prob(x[i : i + 65536]) for i in range(0, x.shape[0], 65536)]
        log_prob = torch.cat(chunks)
    nll = -log_prob.mean().item()
    if not math.isfinite(nll):  # cannot happen for in-support points, but never print a silent non-number
        raise DataError(f"{args.data}: the NLL is not finite ({nll})")
    if args.json:
        print_json({"nll": nll, "n": int(x.shape[0])})
    else:
        print(f"mean NLL {nll:.6f} nats over {x.shape[0]} points")
    return 0


def sample_command(args: argparse.Namespace) -> int:
    """``pyroflows flow sample``."""
    check_output_suffix(args.out)
    flow = _load_flow(args.model)
    _check_context_option(flow, args)
    context = None
    if args.context is not None:
        from pyroflows.flows import check_context

        context = check_context(flow, load_array(args.context, ndim=2), name=str(args.context))
        if args.n * context.shape[0] > MAX_SAMPLES:
            raise DataError(
                f"-n {args.n} for each of {context.shape[0]} context rows is {args.n * context.shape[0]:,} samples; "
                f"at most {MAX_SAMPLES:,}"
            )
    check_output_path(args.out, overwrite=args.force)
    seed_everything(args.seed)
    if context is None:
        samples = flow.sample((args.n,)).cpu().numpy()
        if flow.dim == 1:
            samples = samples[:, 0]
    else:
        samples = flow.sample(context, (args.n,)).cpu().numpy().transpose(1, 0, 2)  # (M, N, D)
        if args.out.suffix.lower() == ".csv":
            samples = samples.reshape(-1, flow.dim)
        if flow.dim == 1:
            samples = samples[..., 0]
    if not np.isfinite(samples).all():
        raise NumericalError(f"{args.model}: the flow drew NaN or infinite samples; nothing was written")
    save_array(args.out, samples, overwrite=args.force)
    per = f" for each of {context.shape[0]} context rows" if context is not None else ""
    print(f"wrote {args.n} samples{per} to {args.out}")
    return 0


def run_demo(out_dir: Path, fast: bool) -> list[str]:
    """Fit the default flow to 5,000 points of the piecewise-uniform target on [1, 2.5] and score 50,000 more.

    Writes ``data.npy``, ``flow.pt``, ``samples.npy`` and ``density.png`` to ``out_dir``; returns summary lines.
    """
    import torch

    from pyroflows.datasets.bounded import piecewise_uniform
    from pyroflows.flows import CompactFlow, fit
    from pyroflows.flows.fit import ConvergenceWarning

    target = piecewise_uniform()
    n_train, n_test, steps = (1000, 5000, 60) if fast else (5000, 50000, None)
    train = target.sample(n_train, seed=1)
    test = target.sample(n_test, seed=2)
    save_array(out_dir / "data.npy", train[:, 0], overwrite=True)
    start = time.perf_counter()
    flow = CompactFlow(1.0, 2.5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # --fast trains for a few steps on purpose
        result = fit(flow, train, **({} if steps is None else {"steps": steps}), seed=0, progress=False)
    seconds = time.perf_counter() - start
    flow.save(out_dir / "flow.pt", overwrite=True)
    with torch.no_grad():
        nll = -flow().log_prob(torch.as_tensor(test)).mean().item()
        samples = flow.sample((n_test,)).numpy()
    save_array(out_dir / "samples.npy", samples[:, 0], overwrite=True)
    truth = -target.log_prob(test).mean()
    lines = [
        f"piecewise-uniform target on [1, 2.5], {n_train} training points, default flow ({flow.config['transform']})",
        f"fit: {result.steps} optimiser steps in {seconds:.1f} s",
        f"held-out NLL {nll:.4f} nats vs the true density's {truth:.4f} on the same {n_test} points: "
        f"KL estimate {nll - truth:.4f} nats",
    ]
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        # Fine everywhere, and geometrically finer towards each bound (down to 1e-7 of the width), so neither the
        # jumps nor the behaviour at the bounds are drawn as straight segments between distant grid points.
        width = 1.5
        near = width * np.geomspace(1e-7, 0.05, 200)
        grid_np = np.unique(np.concatenate([np.linspace(1.0, 2.5, 4001)[1:-1], 1.0 + near, 2.5 - near]))
        grid = torch.as_tensor(grid_np, dtype=torch.float64)[:, None]
        with torch.no_grad():
            density = flow().log_prob(grid).exp().numpy()
        truth_density = np.exp(target.log_prob(grid_np[:, None]))
        fig = plt.figure(figsize=(7, 5.5))
        ax = fig.add_subplot(2, 1, 1)
        ax.plot(grid_np, truth_density, label="true density", color="k")
        ax.plot(grid_np, density, label="learned flow", color="C1")
        ax.set_xlabel("y")
        ax.set_ylabel("density")
        ax.legend()
        for i, (side, distance) in enumerate((("lower", grid_np - 1.0), ("upper", 2.5 - grid_np))):
            edge = fig.add_subplot(2, 2, 3 + i)
            keep = (distance > 0) & (distance < 0.05 * width)
            edge.semilogx(distance[keep] / width, truth_density[keep], color="k")
            edge.semilogx(distance[keep] / width, density[keep], color="C1")
            edge.set_xlabel(f"distance from the {side} bound / width")
            edge.set_ylabel("density")
            edge.set_ylim(bottom=0)
        fig.tight_layout()
        save_figure(fig, out_dir / "density.png", overwrite=True, dpi=100)
        plt.close(fig)
        lines.append(f"figure: {out_dir / 'density.png'}")
    except ImportError:  # pragma: no cover - matplotlib is a dependency, but the figure is optional
        pass
    return lines
