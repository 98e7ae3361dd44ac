"""``pyroflows diffusion train|sample|nll|impute``: DDPMs on tabular data from the command line."""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

from pyroflows import distributed
from pyroflows.cli._common import SEED, add_parser, float_arg, int_arg, print_json, seed_everything
from pyroflows.errors import DataError, NumericalError

__all__ = ["register"]

#: Most samples one ``diffusion sample`` draws.
MAX_SAMPLES = 100_000_000
_STEPS = int_arg(low=1, high=100_000)
_ROWS = int_arg(low=1, high=10**8)
_LR = float_arg(low=0, low_open=True)
_CLASSES = int_arg(low=1, high=100_000)
_LABEL = int_arg(low=0, high=100_000)
_DROPOUT = float_arg(low=0, high=1, high_open=True)
_GUIDANCE = float_arg(low=0)
_PARTICLES = int_arg(low=1, high=1_000_000)


def register(subparsers: Any) -> None:
    """Add ``diffusion train|sample|impute|nll``.

    The choices and help of ``--schedule``, ``--network``, ``--sampler`` and ``--method`` come from the library's
    registries.
    """
    parser = add_parser(
        subparsers,
        "diffusion",
        description=(
            "DDPM diffusion models as Pyro Markov chains: train one on an (N, D) array or a built-in 2-D data set "
            "(optionally with class labels), draw samples (ancestral or DDIM, of a class with classifier-free "
            "guidance), fill in missing entries (sequential Monte Carlo over the chain), and compute the negative "
            "ELBO (an upper bound on -log p) of data."
        ),
        example="pyroflows diffusion train --dataset moons --out ddpm.pt",
    )
    sub = parser.add_subparsers(dest="diffusion_command", metavar="COMMAND")
    parser.set_defaults(handler=lambda args: _usage(parser))
    _add_train(sub)
    _add_sample(sub)
    _add_impute(sub)
    _add_nll(sub)


def _add_train(sub: Any) -> None:
    from pyroflows.datasets.toy2d import DATASETS
    from pyroflows.diffusion.ddpm import DEFAULT_STEPS, PARAMETERIZATIONS
    from pyroflows.diffusion.demo import DEFAULT_POINTS
    from pyroflows.diffusion.networks import NETWORKS
    from pyroflows.diffusion.schedules import SCHEDULES
    from pyroflows.diffusion.training import DEFAULT_LABEL_DROPOUT, LOSSES

    train = add_parser(
        sub,
        "train",
        help="train a DDPM on data",
        description=(
            "Train a DDPM on DATA (.npy or .csv of shape (N, D), any scale: it is min-max scaled to [-1, 1] inside "
            "the model) or on a built-in 2-D set (--dataset). Defaults: T = 10, polynomial schedule "
            "1 - alpha_bar_t = 0.999 (t/T)^2, an MLP with a sinusoidal step embedding behind the v skip connection, "
            "eps-MSE loss, AdamW lr 1e-2, "
            "5,000 optimizer steps on batches of up to 2,048 rows (5,000 full-batch epochs for up to 2,048 rows), "
            "lr annealed to 0, EMA of the weights (1-5 minutes for 10,000 2-D points, measured on a shared 2-core "
            "machine under load)."
        ),
        example="pyroflows diffusion train --dataset moons --out ddpm.pt --steps 10 --schedule polynomial",
    )
    train.add_argument("data", nargs="?", type=Path, metavar="DATA", help=".npy or .csv file of shape (N, D)")
    train.add_argument("--dataset", choices=sorted(DATASETS), help="a built-in 2-D data set instead of DATA")
    train.add_argument("--n-points", type=int_arg(low=2, high=10**8), default=DEFAULT_POINTS,
                       help=f"points drawn for --dataset (default {DEFAULT_POINTS})")  # fmt: skip
    train.add_argument("--out", type=Path, required=True, metavar="MODEL", help="output model file (.pt)")
    train.add_argument("--steps", type=_STEPS, default=DEFAULT_STEPS, metavar="T",
                       help=f"diffusion steps T (default {DEFAULT_STEPS})")  # fmt: skip
    train.add_argument("--schedule", choices=SCHEDULES.names(), default=SCHEDULES.default,
                       help=f"variance schedule: {SCHEDULES.help_text()}")  # fmt: skip
    train.add_argument("--epochs", type=_ROWS, default=None, metavar="E",
                       help="training epochs (default: as many as give 5,000 optimizer steps)")  # fmt: skip
    train.add_argument("--loss", choices=LOSSES, default="eps-mse", help="eps-mse (default) or the exact bound")
    train.add_argument("--network", choices=NETWORKS.names(), default=NETWORKS.default,
                       help=f"noise predictor: {NETWORKS.help_text()}")  # fmt: skip
    train.add_argument("--parameterization", choices=PARAMETERIZATIONS, default="v",
                       help="v (default: the network predicts v behind a skip connection) or eps (it predicts the "
                       "noise, as in Ho et al. and the post)")  # fmt: skip
    train.add_argument("--lr", type=_LR, default=1e-2, help="AdamW learning rate (default 1e-2)")
    train.add_argument("--batch-size", type=_ROWS, default=None, help="rows per step (default: min(N, 2048))")
    train.add_argument("--labels", type=Path, default=None, metavar="LABELS",
                       help="class labels of DATA's rows (.npy or .csv, one integer 0..K-1 per row): trains a "
                       "class-conditional model (with label dropout, so it is unconditional too)")  # fmt: skip
    train.add_argument("--num-classes", type=_CLASSES, default=None, metavar="K",
                       help="number of classes K (default: the largest label + 1)")  # fmt: skip
    train.add_argument("--label-dropout", type=_DROPOUT, default=DEFAULT_LABEL_DROPOUT, metavar="R",
                       help=f"fraction of labels replaced by the null label in training (default "
                       f"{DEFAULT_LABEL_DROPOUT})")  # fmt: skip
    train.add_argument("--seed", type=SEED, default=0, metavar="S", help="random seed (default 0)")
    train.add_argument("--force", action="store_true", help="replace MODEL if it exists")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(handler=_train, splits_work=True)


def _add_sample(sub: Any) -> None:
    from pyroflows.diffusion.sampling import SAMPLERS

    sample = add_parser(
        sub,
        "sample",
        help="draw samples from a trained DDPM",
        description="Draw N samples (in data units) from MODEL and save them as .npy or .csv.",
        example="pyroflows diffusion sample ddpm.pt -n 1000 --out samples.npy --sampler ddim --sampling-steps 5",
    )
    sample.add_argument("model", type=Path, metavar="MODEL", help="a model written by 'diffusion train'")
    sample.add_argument("-n", type=_ROWS, required=True, metavar="N", help="number of samples")
    sample.add_argument("--out", type=Path, required=True, metavar="FILE", help="output .npy or .csv")
    sample.add_argument("--sampler", choices=SAMPLERS.names(), default=SAMPLERS.default,
                        help=f"sampler: {SAMPLERS.help_text()}")  # fmt: skip
    sample.add_argument("--sampling-steps", type=_STEPS, default=None, metavar="K",
                        help="DDIM sub-sequence length K <= T (default T)")  # fmt: skip
    sample.add_argument("--label", type=_LABEL, default=None, metavar="K",
                        help="draw class K of a class-conditional model (default: unconditional)")  # fmt: skip
    sample.add_argument("--guidance", type=_GUIDANCE, default=0.0, metavar="W",
                        help="classifier-free guidance weight w with --label (default 0: the conditional model; "
                        "larger: sharper classes)")  # fmt: skip
    sample.add_argument("--seed", type=SEED, default=0, metavar="S", help="random seed (default 0)")
    sample.add_argument("--force", action="store_true", help="replace FILE if it exists")
    sample.set_defaults(handler=_sample)


def _add_impute(sub: Any) -> None:
    from pyroflows.diffusion.imputation import IMPUTATION_METHODS, TWISTS

    impute = add_parser(
        sub,
        "impute",
        help="fill in missing entries of data with a trained DDPM",
        description=(
            "Fill the missing entries of DATA (.npy with NaN, or .csv with empty or NaN cells) with draws from "
            "MODEL's conditional given each row's observed entries, which are written back unchanged. Any pattern "
            "of missing entries per row: a row with nothing missing is copied as is, a row with everything missing "
            "gets an unconditional sample. Methods: smc (default: a twisted particle filter over the reverse chain, "
            "exact as --particles grows) or replace (the replacement heuristic: one pass, biased). With "
            "--imputations M > 1 the output holds M complete copies of DATA one after the other (M x N rows: rows "
            "k*N .. k*N+N-1 are imputation k)."
        ),
        example="pyroflows diffusion impute ddpm.pt holes.csv --out filled.csv --particles 64 --imputations 5",
    )
    impute.add_argument("model", type=Path, metavar="MODEL", help="a model written by 'diffusion train'")
    impute.add_argument("data", type=Path, metavar="DATA", help=".npy or .csv of shape (N, D) with missing entries")
    impute.add_argument("--out", type=Path, required=True, metavar="FILE", help="output .npy or .csv")
    impute.add_argument("--method", choices=IMPUTATION_METHODS.names(), default=IMPUTATION_METHODS.default,
                        help=f"imputation method: {IMPUTATION_METHODS.help_text()}")  # fmt: skip
    impute.add_argument("--particles", type=_PARTICLES, default=64, metavar="P",
                        help="particles per imputed row for smc (default 64)")  # fmt: skip
    impute.add_argument("--twist", choices=TWISTS.names(), default=TWISTS.default,
                        help=f"smc's twisting function: {TWISTS.help_text()}")  # fmt: skip
    impute.add_argument("--imputations", type=_ROWS, default=1, metavar="M",
                        help="independent fills of every row (default 1)")  # fmt: skip
    impute.add_argument("--labels", type=Path, default=None, metavar="LABELS",
                        help="class labels of DATA's rows for a class-conditional model (.npy or .csv)")  # fmt: skip
    impute.add_argument("--guidance", type=_GUIDANCE, default=0.0, metavar="W",
                        help="classifier-free guidance weight with --labels (default 0)")  # fmt: skip
    impute.add_argument("--seed", type=SEED, default=0, metavar="S", help="random seed (default 0)")
    impute.add_argument("--force", action="store_true", help="replace FILE if it exists")
    impute.set_defaults(handler=_impute)


def _add_nll(sub: Any) -> None:
    nll = add_parser(
        sub,
        "nll",
        help="negative ELBO of data under a DDPM",
        description=(
            "The negative ELBO (the DDPM variational bound) of DATA in nats per sample in the data's own units, "
            "with its standard error over the rows."
        ),
        example="pyroflows diffusion nll ddpm.pt test.npy --json",
    )
    nll.add_argument("model", type=Path, metavar="MODEL", help="a model written by 'diffusion train'")
    nll.add_argument("data", type=Path, metavar="DATA", help=".npy or .csv file of shape (N, D)")
    nll.add_argument("--particles", type=_STEPS, default=16, help="guide draws per row (default 16)")
    nll.add_argument("--seed", type=SEED, default=0, metavar="S", help="random seed (default 0)")
    nll.add_argument("--json", action="store_true", help='print {"nll": ..., "se": ..., "n": ...}')
    nll.set_defaults(handler=_nll)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _load_data(path: Path, data_dim: int | None = None) -> Any:
    from pyroflows.io import load_array

    array = load_array(path, ndim=2, allow_1d=False)
    if data_dim is not None and array.shape[1] != data_dim:
        raise DataError(f"{path}: the model was trained on {data_dim} column(s), the file has {array.shape[1]}")
    return array


def _load_labels(path: Path, n: int, num_classes: int | None = None) -> tuple[Any, int]:
    """Read one integer label per row of the data; returns the labels and K (``num_classes`` or the largest + 1)."""
    import numpy as np

    from pyroflows.io import load_array

    labels = load_array(path, ndim=1)
    if labels.shape[0] != n:
        raise DataError(f"{path}: expected {n} labels (one per row of DATA), got {labels.shape[0]}")
    not_integer = np.flatnonzero(labels != np.round(labels))
    if not_integer.size:
        raise DataError(f"{path}: labels must be integers 0..K-1; rows {not_integer[:5].tolist()} are not")
    negative = np.flatnonzero(labels < 0)
    if negative.size:
        raise DataError(f"{path}: labels must be integers 0..K-1; rows {negative[:5].tolist()} are negative")
    classes = int(labels.max()) + 1 if num_classes is None else int(num_classes)
    return labels.astype(np.int64), classes


def _train(args: argparse.Namespace) -> int:
    import torch

    from pyroflows.datasets.toy2d import make_dataset
    from pyroflows.diffusion import DDPM, train
    from pyroflows.io import check_output_path

    if (args.data is None) == (args.dataset is None):
        raise DataError("give either DATA (a .npy/.csv file) or --dataset NAME, not both and not neither")
    check_output_path(args.out, overwrite=args.force)
    seed_everything(args.seed)
    if args.dataset is not None:
        data = make_dataset(args.dataset, args.n_points, seed=args.seed)
        source = f"--dataset {args.dataset}"
    else:
        data = _load_data(args.data)
        source = str(args.data)
    x = torch.as_tensor(data, dtype=torch.get_default_dtype())
    labels, num_classes = None, 0
    if args.labels is not None:
        if args.num_classes is not None and args.num_classes < 1:
            raise DataError(f"--num-classes: expected at least 1, got {args.num_classes}")
        labels, num_classes = _load_labels(args.labels, x.shape[0], args.num_classes)
    elif args.num_classes is not None:
        raise DataError("--num-classes needs --labels LABELS (the class of every row of DATA)")
    ddpm = DDPM(x.shape[1], steps=args.steps, schedule=args.schedule, network=args.network,
                parameterization=args.parameterization, num_classes=num_classes)  # fmt: skip
    start = time.perf_counter()
    history = train(ddpm, x, loss=args.loss, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                    progress=not args.quiet, labels=labels, label_dropout=args.label_dropout)  # fmt: skip
    seconds = time.perf_counter() - start
    if not distributed.is_main():  # under torchrun every rank holds the same trained DDPM; rank 0 writes it
        return 0
    ddpm.save(args.out, overwrite=args.force, extra={"history": history[-100:], "train_seconds": seconds,
                                                     "source": source})  # fmt: skip
    classes = f", {num_classes} classes" if num_classes else ""
    print(
        f"trained a DDPM (T = {args.steps}, {args.schedule} schedule, {args.network} network{classes}) on "
        f"{x.shape[0]} x "
        f"{x.shape[1]} points from {source}: {len(history)} epochs in {seconds:.1f} s, final {args.loss} loss "
        f"{history[-1]:.4f}; saved to {args.out}"
    )
    return 0


def _sample(args: argparse.Namespace) -> int:
    from pyroflows.diffusion import DDPM, SAMPLERS, sample
    from pyroflows.io import check_output_path, check_output_suffix, save_array

    check_output_suffix(args.out)
    check_output_path(args.out, overwrite=args.force)
    ddpm = DDPM.load(args.model)
    if args.label is None and args.guidance:
        raise DataError("--guidance needs --label K (guidance sharpens a class; without one it has no effect)")
    if args.label is not None and not ddpm.num_classes:
        raise DataError(f"--label: {args.model} is an unconditional model (trained without --labels)")
    if args.label is not None and not 0 <= args.label < ddpm.num_classes:
        raise DataError(f"--label: expected a class in 0..{ddpm.num_classes - 1}, got {args.label}")
    seed_everything(args.seed)
    sampler = SAMPLERS.build(args.sampler, ddpm, args.sampling_steps)
    samples = sample(ddpm, args.n, sampler=sampler, labels=args.label, guidance=args.guidance)
    if not bool(samples.isfinite().all()):
        raise NumericalError(f"{args.model}: the model drew NaN or infinite samples (a diverged training?); "
                             "nothing was written")  # fmt: skip
    save_array(args.out, samples.double().numpy(), overwrite=args.force)
    evaluations = len(sampler.timesteps) * (2 if args.guidance else 1)
    label = "" if args.label is None else f" of class {args.label}, guidance {args.guidance:g}"
    print(f"wrote {args.n} samples{label} ({args.sampler}, {evaluations} network evaluations each) to {args.out}")
    return 0


def _nll(args: argparse.Namespace) -> int:
    from pyroflows.diffusion import DDPM

    ddpm = DDPM.load(args.model)
    data = _load_data(args.data, ddpm.data_dim)
    seed_everything(args.seed)
    estimate = ddpm.nll(data, num_particles=args.particles)
    if not math.isfinite(estimate.nll):
        raise NumericalError(f"{args.model}: the negative ELBO of {args.data} is not finite ({estimate.nll})")
    se = estimate.se if math.isfinite(estimate.se) else None  # one row has no standard error
    if args.json:
        print_json({"nll": estimate.nll, "se": se, "n": estimate.n})
    else:
        spread = f"+- {se:.4f}" if se is not None else "(no standard error from one row)"
        print(f"negative ELBO: {estimate.nll:.4f} {spread} nats per sample (n = {estimate.n})")
    return 0


def _impute(args: argparse.Namespace) -> int:
    import numpy as np

    from pyroflows.diffusion import DDPM, impute
    from pyroflows.io import check_output_path, check_output_suffix, load_array, save_array

    check_output_suffix(args.out)
    check_output_path(args.out, overwrite=args.force)
    ddpm = DDPM.load(args.model)
    data = load_array(args.data, ndim=2, allow_1d=ddpm.data_dim == 1, allow_missing=True)
    if data.shape[1] != ddpm.data_dim:
        raise DataError(
            f"{args.data}: the model was trained on {ddpm.data_dim} column(s), the file has {data.shape[1]}"
        )
    labels = None
    if args.labels is not None:
        labels, _ = _load_labels(args.labels, data.shape[0])
    elif args.guidance:
        raise DataError("--guidance needs --labels LABELS")
    filled = impute(ddpm, data, method=args.method, num_particles=args.particles, labels=labels, twist=args.twist,
                    num_imputations=args.imputations, guidance=args.guidance, seed=args.seed)  # fmt: skip
    out = filled.numpy().reshape(-1, ddpm.data_dim)
    if not np.isfinite(out).all():  # never write NaN with success
        raise NumericalError(f"{args.model}: the imputed values are not finite (a diverged training?); nothing was "
                             "written")  # fmt: skip
    save_array(args.out, out, overwrite=args.force)
    holes = np.isnan(data)
    particles = f", {args.particles} particles" if args.method == "smc" else ""
    print(
        f"filled {int(holes.sum())} missing entries in {int(holes.any(axis=1).sum())} of {data.shape[0]} rows "
        f"({args.method}{particles}, {args.imputations} imputation(s)); wrote {out.shape[0]} rows to {args.out}"
    )
    return 0
