"""``pyroflows demo``: a short tour of every capability on built-in data."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pyroflows._config import smoke_mode
from pyroflows.cli._common import SEED, add_parser


def register(subparsers: Any) -> None:
    """Add the ``demo`` command to ``subparsers``."""
    parser = add_parser(
        subparsers,
        "demo",
        description=(
            "Fit a compact-support flow to the piecewise-uniform target on [1, 2.5], train a DDPM on two moons "
            "at T = 10, and attribute cluttered digits with the bundled CNN through the information "
            "bottleneck. Writes models, samples and figures to --out and prints what it measured."
        ),
        example="pyroflows demo --out pyroflows-demo",
    )
    parser.add_argument("--out", type=Path, default=Path("pyroflows-demo"), help="output directory")
    parser.add_argument(
        "--fast", action="store_true", help="tiny sizes (seconds, not minutes); also set by PYROFLOWS_SMOKE=1"
    )
    parser.add_argument("--seed", type=SEED, default=0, help="random seed (default 0)")
    parser.add_argument("--force", action="store_true", help="replace the outputs of an earlier demo in --out")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run :func:`pyroflows.demo.run_demo` with the command's options."""
    from pyroflows.demo import run_demo

    run_demo(args.out, args.fast or smoke_mode(), seed=args.seed, overwrite=args.force,
             report=lambda line: print(line, flush=True))  # fmt: skip
    print(f"outputs written to {args.out.resolve()}")
    return 0
