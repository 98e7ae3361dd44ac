"""``pyroflows flow fit | score | sample``: compact-support flows on data files."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import numpy as np

from pyroflows import distributed
from pyroflows.cli._common import SEED, add_parser, int_arg, print_json, seed_everything
from pyroflows.errors import DataError, NumericalError
from pyroflows.io import check_output_path, check_output_suffix, load_array, parse_bounds, save_array

__all__ = ["register", "fit_command", "score_command", "sample_command"]

#: Most samples one ``flow sample`` writes (8 bytes per value per column).
MAX_SAMPLES = 100_000_000


def register(subparsers: Any) -> None:
    """Add ``flow`` and its sub-commands to the ``pyroflows`` parser."""
    flow = add_parser(
        subparsers,
        "flow",
        description=(
            "Compact-support normalizing flows: a learned density that is exactly zero outside [low, high] "
            "(per dimension for a box)."
        ),
        example="pyroflows flow fit data.npy --low 1 --high 2.5 --out flow.pt",
    )
    sub = flow.add_subparsers(dest="flow_command", metavar="SUBCOMMAND")

    def show_help(args: argparse.Namespace) -> int:
        flow.print_help()
        return 2

    flow.set_defaults(handler=show_help)
    _add_fit(sub)
    _add_score(sub)
    _add_sample(sub)


def _add_fit(sub: Any) -> None:
    """``flow fit``: its options, the ``--transform`` choices and help read from the family registry."""
    from pyroflows.flows import CompactFlow, ConditionalCompactFlow
    from pyroflows.flows.families import DEFAULT_TRANSFORM_RULE, FAMILIES, SPLINE_ENDS

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
        choices=FAMILIES.names(),
        default=None,
        help="flow layers: "
        + "; ".join(f"{n}: {FAMILIES.get(n).help}" for n in FAMILIES)
        + f" (default: {DEFAULT_TRANSFORM_RULE})",
    )
    fit.add_argument(
        "--ends",
        choices=SPLINE_ENDS.names(),
        default=None,
        help="the spline's end derivatives, hence the density at each bound (--transform spline only): "
        + SPLINE_ENDS.help_text(),
    )
    fit.add_argument("--layers", type=int_arg(low=0, high=1000), default=None,
                     help="number of flow layers (default: per transform)")  # fmt: skip
    fit.add_argument(
        "--steps",
        type=int_arg(low=1, high=10**7),
        default=None,
        help="maximum optimiser steps, whatever the number of points (default "
        f"{CompactFlow.default_fit_steps}; with --context {ConditionalCompactFlow.default_fit_steps}, or "
        f"{ConditionalCompactFlow.default_fit_steps_half_line} on a half-line: the flow class's default); a warning "
        "says when the held-out NLL was still improving at the end",
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


def _add_score(sub: Any) -> None:
    """``flow score``."""
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


def _add_sample(sub: Any) -> None:
    """``flow sample``."""
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
    from pyroflows.flows import fit

    check_output_path(args.out, overwrite=args.force)  # fail before loading and fitting, not after
    data = load_array(args.data)
    dim = 1 if data.ndim == 1 else data.shape[1]
    if data.shape[0] < 10:
        raise DataError(f"{args.data}: need at least 10 points to fit and hold some out, got {data.shape[0]}")
    low, high = _bounds(args, dim)
    context = _load_context(args.context, data.shape[0]) if args.context is not None else None
    seed_everything(args.seed)
    flow = _make_flow(low, high, data, context, args)
    transform = flow.config["transform"]
    result = fit(flow, data, steps=args.steps, seed=args.seed, progress=not args.quiet, context=context)
    summary = {
        "model": str(args.out),
        "n": int(data.shape[0]),
        "dim": dim,
        "transform": transform,
        "ends": flow.config.get("ends"),
        "conditional": context is not None,
        "layers": flow.config["num_layers"],
        "steps": result.steps,
        "best_step": result.best_step,
        "converged": result.converged,
        "heldout_nll": result.best_heldout_nll,
        "seconds": round(result.seconds, 2),
    }
    if result.ends:  # --ends auto: the held-out NLL of each candidate the choice was made from
        summary["ends_heldout_nll"] = result.ends_heldout_nll
    if result.bound_exponents is not None:  # --ends data: each bound's ends and the exponent estimates behind them
        summary["bound_ends"] = flow.config["bound_ends"]
        summary["bound_exponents"] = [[_finite(e.a) for e in pair] for pair in result.bound_exponents]
    if not distributed.is_main():  # under torchrun every rank holds the same fitted flow; rank 0 writes it
        return 0
    flow.save(args.out, overwrite=args.force, extra={"fit": summary, "train_nll": result.train_nll})
    if args.json:
        print_json(summary)
    else:
        ends = f", {summary['ends']} ends" if summary["ends"] not in (None, "fixed") else ""
        chosen = f" (chosen by held-out NLL: {_nlls(result.ends_heldout_nll)})" if result.ends else ""
        if result.bound_exponents is not None:
            chosen = f" ({_per_bound(summary['bound_ends'], result.bound_exponents)})"
        print(
            f"fitted a {transform} flow ({summary['layers']} layer(s){ends}{chosen}) to {summary['n']} points in "
            f"{result.seconds:.1f} s: held-out NLL {result.best_heldout_nll:.4f} nats at step "
            f"{summary['best_step']} of {summary['steps']}; saved to {args.out}"
        )
    return 0


def _nlls(by_ends: dict[str, float]) -> str:
    return ", ".join(f"{ends} {nll:.4f}" for ends, nll in by_ends.items())


def _per_bound(bound_ends: list[list[str]], exponents: list) -> str:  # noqa: ANN001 - BoundExponent pairs
    """``lower secant (a = 0.97), upper free (a = 4.2)``, per dimension (``; `` between them)."""
    return "; ".join(
        ", ".join(
            f"{side} {ends} (a = {e.a:.2f})" for side, ends, e in zip(("lower", "upper"), pair, estimates, strict=True)
        )
        for pair, estimates in zip(bound_ends, exponents, strict=True)
    )


def _finite(value: float) -> float | None:
    """``value``, or None for NaN / inf (the JSON summary stays valid JSON)."""
    return value if math.isfinite(value) else None


def _load_context(path: Path, rows: int) -> np.ndarray:
    """FEATURES as an ``(N, K)`` array with one row per data row (NaN and a row-count mismatch are errors)."""
    context = load_array(path, ndim=2)
    if context.shape[0] != rows:
        raise DataError(
            f"{path}: has {context.shape[0]} row(s) but the data have {rows}; --context needs one row per data row"
        )
    return context


def _make_flow(low, high, data, context, args):  # noqa: ANN001, ANN202 - lazily imported types
    from pyroflows.flows import CompactFlow, ConditionalCompactFlow

    scale = 1.0
    if any(math.isinf(v) for v in low + high):
        # A half-line squash works in units of the data's typical distance from the finite bound.
        bound = np.asarray(low if math.isinf(high[0]) else high)
        distance = np.abs(data.reshape(data.shape[0], -1) - bound)
        scale = float(np.median(distance)) if np.median(distance) > 0 else 1.0
    # The flows check the transform (families.FAMILIES), its dimension and the bounds, raising DataError.
    if context is None:
        return CompactFlow(low, high, transform=args.transform, num_layers=args.layers, ends=args.ends, scale=scale)
    if args.ends is not None:
        raise DataError("--ends: a conditional flow (--context) has Pyro's fixed spline ends; leave --ends out")
    return ConditionalCompactFlow(low, high, context.shape[1], transform=args.transform, num_layers=args.layers,
                                  scale=scale)  # fmt: skip


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
    from pyroflows.flows import check_context, check_data, log_prob_chunked

    flow = _load_flow(args.model)
    _check_context_option(flow, args)
    data = load_array(args.data)
    x = check_data(flow, data, name=str(args.data))
    c = None
    if args.context is not None:
        c = check_context(flow, _load_context(args.context, x.shape[0]), name=str(args.context))
    log_prob = log_prob_chunked(flow, x, context=c)
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
