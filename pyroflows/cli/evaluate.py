"""``pyroflows evaluate``: the IBA paper's evaluation protocol for many attribution methods, as a table and plots."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from pyroflows import distributed
from pyroflows.cli._common import SEED, add_parser, int_arg, print_json, seed_everything
from pyroflows.cli._model_file import TRUST_HELP
from pyroflows.errors import DataError

__all__ = ["register", "run"]

_COUNT = int_arg(low=1, high=100_000)


def _methods_arg(text: str) -> list[str]:
    """``--methods a,b``: registered names (checked by the library's :func:`check_methods`)."""
    from pyroflows.evaluation import check_methods

    try:
        return check_methods([m.strip() for m in text.split(",") if m.strip()])
    except DataError as exc:
        raise argparse.ArgumentTypeError(str(exc).split(": ", 1)[-1]) from None


def register(subparsers: Any) -> None:
    """Add the ``evaluate`` command to ``subparsers``."""
    from pyroflows.evaluation import DEFAULT_METHODS, METHODS

    parser = add_parser(
        subparsers,
        "evaluate",
        description=(
            "Attribute held-out cluttered digits with each method and score the maps with the paper's protocol: "
            "degradation (area between the normalised LeRF and MoRF curves, 8x8 and 14x14 tiles), the "
            "bounding-box score, Sensitivity-N (1x1 and 8x8 tiles) and the cascading-randomisation sanity check. "
            "Writes table.md, table.csv and PNG plots to --out. Only images the model classifies correctly are "
            "used, and the target is their label. Methods: " + ", ".join(DEFAULT_METHODS) + "."
        ),
        example="pyroflows evaluate --methods saliency,grad-cam,per-sample --n-images 20 --out evaluation\n"
        "  pyroflows evaluate --task motifs --n-images 50 --out motifs",
    )
    parser.add_argument(
        "--task",
        choices=("digits", "motifs", "keywords"),
        default="digits",
        help="digits (default: cluttered digits and the bundled CNN), motifs (planted DNA motifs and the shipped 1-D "
        "CNN) or keywords (keyword tokens and the shipped transformer): the sequence tasks report the span score "
        "and the top-1 hit rate instead of the bounding box, with the sequence methods by default",
    )
    parser.add_argument(
        "--model",
        default="bundled",
        help="'bundled' (default), or a model taking 1 x 56 x 56 digits: a torch.export program (.pt2), a "
        "TorchScript file (gradient methods only: it takes no hooks), or with --trust-model-file a whole-model "
        "pickle (loading a pickle runs code from the file: only use files you trust)",
    )
    parser.add_argument("--trust-model-file", action="store_true", help=TRUST_HELP)
    parser.add_argument("--layer", default=None, help="bottleneck layer (default: the bundled model's features.6)")
    parser.add_argument(
        "--methods", type=_methods_arg, default=None,
        help="comma-separated method names (default: all of the task's methods): " + METHODS.help_text(),
    )  # fmt: skip
    parser.add_argument("--n-images", type=_COUNT, default=24, help="held-out images to evaluate on (default 24)")
    parser.add_argument("--n-masks", type=int_arg(low=3, high=100_000), default=20,
                        help="Sensitivity-N masks per n, at least 3 for a correlation (default 20)")  # fmt: skip
    parser.add_argument(
        "--sensitivity-steps", type=_COUNT, default=6, help="log-spaced n per Sensitivity-N tile size (default 6)"
    )
    parser.add_argument("--sanity-images", type=_COUNT, default=8, help="images for the sanity check (default 8)")
    parser.add_argument(
        "--estimation-images", type=_COUNT, default=1000, help="training images to estimate the bottleneck on"
    )
    parser.add_argument("--seed", type=SEED, default=0, help="random seed (default 0)")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--force", action="store_true", help="replace existing output files")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--json", action="store_true", help="print the table as one JSON object")
    parser.set_defaults(handler=run, splits_work=True)


def run(args: argparse.Namespace) -> int:
    """Run ``pyroflows evaluate``: the metrics table of the chosen methods; the exit status."""
    from pyroflows.evaluation import DEFAULT_METHODS, SEQUENCE_METHODS, evaluate_bundled, evaluate_sequences

    seed_everything(args.seed)
    default = DEFAULT_METHODS if args.task == "digits" else SEQUENCE_METHODS
    methods = list(default) if args.methods is None else args.methods
    start = time.perf_counter()
    if args.task != "digits":
        if args.model != "bundled" or args.layer is not None:
            raise DataError("--model and --layer apply to --task digits; the sequence tasks use their shipped models")
        table, n = evaluate_sequences(
            args.out, task=args.task, methods=methods, n_images=args.n_images, n_masks=args.n_masks,
            sensitivity_steps=args.sensitivity_steps, sanity_images=args.sanity_images,
            estimation_images=args.estimation_images, seed=args.seed, force=args.force,
            progress=not args.no_progress and distributed.is_main(),
        )  # fmt: skip
        return _report(args, table, n, time.perf_counter() - start)
    table, n = evaluate_bundled(
        args.out, model=args.model, layer=args.layer, methods=methods, n_images=args.n_images,
        n_masks=args.n_masks, sensitivity_steps=args.sensitivity_steps,
        sanity_images=args.sanity_images, estimation_images=args.estimation_images,
        seed=args.seed, force=args.force, progress=not args.no_progress and distributed.is_main(),
        trust_model_file=args.trust_model_file,
    )  # fmt: skip
    return _report(args, table, n, time.perf_counter() - start)


def _report(args: argparse.Namespace, table: Any, n: int, seconds: float) -> int:
    if not distributed.is_main():  # under torchrun rank 0 alone prints
        return 0
    if args.json:
        print_json({"images": n, "seconds": seconds, "rows": table.rows(), "out": str(args.out)})
    else:
        print(table.to_markdown(), end="")
        print(f"{n} images, {seconds:.1f} s; wrote {args.out}/table.md, table.csv and plots")
    return 0
