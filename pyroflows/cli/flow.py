"""``pyroflows flow fit | score | sample``: compact-support flows on data files."""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from pyroflows import distributed
from pyroflows.cli._common import SEED, add_parser, int_arg, print_json, seed_everything
from pyroflows.errors import DataError, NumericalError
from pyroflows.io import check_output_path, check_output_suffix, load_array, parse_bounds, save_array, save_figure

__all__ = ["register", "run_demo", "fit_command", "score_command", "sample_command"]

DEFAULT_EPOCHS = 100
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
            "bounds are an error (the model would give them zero density)."
        ),
        example="pyroflows flow fit data.npy --low 1 --high 2.5 --out flow.pt",
    )
    fit.add_argument("data", type=Path, metavar="DATA", help=".npy or .csv file, shape (N,) or (N, D)")
    fit.add_argument("--low", required=True, help="lower bound; comma-separated, one per column, for D > 1")
    fit.add_argument("--high", required=True, help="upper bound; comma-separated, one per column, for D > 1")
    fit.add_argument("--out", required=True, type=Path, metavar="MODEL", help="where to save the model (.pt)")
    fit.add_argument(
        "--transform",
        choices=("radial", "spline", "autoregressive"),
        default=None,
        help="flow layers (default: radial for one column, autoregressive for several)",
    )
    fit.add_argument("--layers", type=int_arg(low=0, high=1000), default=None,
                     help="number of flow layers (default: per transform)")  # fmt: skip
    fit.add_argument("--epochs", type=int_arg(low=1, high=10**6), default=DEFAULT_EPOCHS,
                     help=f"maximum epochs (default {DEFAULT_EPOCHS})")  # fmt: skip
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
            "model's support have zero likelihood: they are an error naming how many and which rows."
        ),
        example="pyroflows flow score flow.pt test.npy --json",
    )
    score.add_argument("model", type=Path, metavar="MODEL", help="a model written by 'pyroflows flow fit'")
    score.add_argument("data", type=Path, metavar="DATA", help=".npy or .csv file, shape (N,) or (N, D)")
    score.add_argument("--json", action="store_true", help='print {"nll": ..., "n": ...}')
    score.set_defaults(handler=score_command)

    sample = add_parser(
        sub,
        "sample",
        help="draw samples from a saved flow",
        description="Draw N samples from MODEL and write them to FILE (.npy or .csv; shape (N,) for an interval).",
        example="pyroflows flow sample flow.pt -n 1000 --out samples.npy",
    )
    sample.add_argument("model", type=Path, metavar="MODEL", help="a model written by 'pyroflows flow fit'")
    sample.add_argument("-n", type=int_arg(low=1, high=MAX_SAMPLES), required=True, metavar="N",
                        help=f"number of samples (at most {MAX_SAMPLES:,})")  # fmt: skip
    sample.add_argument("--out", required=True, type=Path, metavar="FILE", help="output .npy or .csv file")
    sample.add_argument("--seed", type=SEED, default=0, help="random seed (default 0)")
    sample.add_argument("--force", action="store_true", help="replace FILE if it exists")
    sample.set_defaults(handler=sample_command)


def _bounds(args: argparse.Namespace, dim: int) -> tuple[list[float], list[float]]:
    low = parse_bounds(args.low, name="--low")
    high = parse_bounds(args.high, name="--high")
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
    wide = [i for i in range(dim) if not math.isfinite(high[i] - low[i]) or high[i] - low[i] > 1e300]
    if wide:
        raise DataError(f"--low/--high: the interval of column(s) {wide} is too wide for float64 (width overflows)")
    return low, high


def fit_command(args: argparse.Namespace) -> int:
    """``pyroflows flow fit``."""
    from pyroflows.flows import CompactFlow, default_transform, fit

    check_output_path(args.out, overwrite=args.force)  # fail before loading and fitting, not after
    data = load_array(args.data)
    dim = 1 if data.ndim == 1 else data.shape[1]
    if data.shape[0] < 10:
        raise DataError(f"{args.data}: need at least 10 points to fit and hold some out, got {data.shape[0]}")
    low, high = _bounds(args, dim)
    transform = args.transform or default_transform(dim)
    if transform == "autoregressive" and dim == 1:
        raise DataError("--transform autoregressive needs data with 2 or more columns; use spline or radial")
    seed_everything(args.seed)
    flow = CompactFlow(low, high, transform=transform, num_layers=args.layers)
    result = fit(flow, data, epochs=args.epochs, seed=args.seed, progress=not args.quiet)
    summary = {
        "model": str(args.out),
        "n": int(data.shape[0]),
        "dim": dim,
        "transform": transform,
        "layers": flow.config["num_layers"],
        "epochs": len(result.train_nll),
        "best_epoch": result.best_epoch + 1,
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
            f"{result.seconds:.1f} s: held-out NLL {result.best_heldout_nll:.4f} nats at epoch "
            f"{summary['best_epoch']} of {summary['epochs']}; saved to {args.out}"
        )
    return 0


def _load_flow(path: Path):  # noqa: ANN202 - CompactFlow, imported lazily
    from pyroflows.flows import CompactFlow

    return CompactFlow.load(path)


def score_command(args: argparse.Namespace) -> int:
    """``pyroflows flow score``."""
    import torch

    from pyroflows.flows import check_data

    flow = _load_flow(args.model)
    data = load_array(args.data)
    x = check_data(flow, data, name=str(args.data))
    with torch.no_grad():
        d = flow()
        log_prob = torch.cat([d.log_prob(x[i : i + 65536]) for i in range(0, x.shape[0], 65536)])
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
    check_output_path(args.out, overwrite=args.force)
    flow = _load_flow(args.model)
    seed_everything(args.seed)
    samples = flow.sample((args.n,)).cpu().numpy()
    if flow.dim == 1:
        samples = samples[:, 0]
    if not np.isfinite(samples).all():
        raise NumericalError(f"{args.model}: the flow drew NaN or infinite samples; nothing was written")
    save_array(args.out, samples, overwrite=args.force)
    print(f"wrote {args.n} samples to {args.out}")
    return 0


def run_demo(out_dir: Path, fast: bool) -> list[str]:
    """Fit the default flow to 5,000 points of the piecewise-uniform target on [1, 2.5] and score 50,000 more.

    Writes ``data.npy``, ``flow.pt``, ``samples.npy`` and ``density.png`` to ``out_dir``; returns summary lines.
    """
    import torch

    from pyroflows.datasets.bounded import piecewise_uniform
    from pyroflows.flows import CompactFlow, fit

    target = piecewise_uniform()
    n_train, n_test, epochs = (1000, 5000, 3) if fast else (5000, 50000, DEFAULT_EPOCHS)
    train = target.sample(n_train, seed=1)
    test = target.sample(n_test, seed=2)
    save_array(out_dir / "data.npy", train[:, 0], overwrite=True)
    start = time.perf_counter()
    flow = CompactFlow(1.0, 2.5)
    result = fit(flow, train, epochs=epochs, seed=0, progress=False)
    seconds = time.perf_counter() - start
    flow.save(out_dir / "flow.pt", overwrite=True)
    with torch.no_grad():
        nll = -flow().log_prob(torch.as_tensor(test)).mean().item()
        samples = flow.sample((n_test,)).numpy()
    save_array(out_dir / "samples.npy", samples[:, 0], overwrite=True)
    truth = -target.log_prob(test).mean()
    lines = [
        f"piecewise-uniform target on [1, 2.5], {n_train} training points, default flow ({flow.config['transform']})",
        f"fit: {len(result.train_nll)} epochs in {seconds:.1f} s",
        f"held-out NLL {nll:.4f} nats vs the true density's {truth:.4f} on the same {n_test} points: "
        f"KL estimate {nll - truth:.4f} nats",
    ]
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        grid = torch.linspace(1.0, 2.5, 601, dtype=torch.float64)[:, None]
        with torch.no_grad():
            density = flow().log_prob(grid).exp().numpy()
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot(grid[:, 0], np.exp(target.log_prob(grid.numpy())), label="true density", color="k")
        ax.plot(grid[:, 0], density, label="learned flow", color="C1")
        ax.set_xlabel("y")
        ax.set_ylabel("density")
        ax.legend()
        fig.tight_layout()
        save_figure(fig, out_dir / "density.png", overwrite=True, dpi=100)
        plt.close(fig)
        lines.append(f"figure: {out_dir / 'density.png'}")
    except ImportError:  # pragma: no cover - matplotlib is a dependency, but the figure is optional
        pass
    return lines
