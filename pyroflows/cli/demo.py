"""``pyroflows demo``: a short tour of every capability on built-in data."""

from __future__ import annotations

import argparse
import importlib
import time
from pathlib import Path
from typing import Any

from pyroflows._config import smoke_mode
from pyroflows.cli._common import add_parser

# Each of these modules exposes ``run_demo(out_dir: Path, fast: bool) -> list[str]`` returning summary lines.
_DEMO_MODULES = ("flow", "diffusion", "attribute", "evaluate")


def register(subparsers: Any) -> None:
    parser = add_parser(
        subparsers,
        "demo",
        help="run a short tour of every capability on built-in data",
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
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import pyro

    fast = args.fast or smoke_mode()
    args.out.mkdir(parents=True, exist_ok=True)
    for name in _DEMO_MODULES:
        module = importlib.import_module(f"pyroflows.cli.{name}")
        if not hasattr(module, "run_demo"):
            continue
        pyro.clear_param_store()
        pyro.set_rng_seed(args.seed)
        print(f"== {name} ==", flush=True)
        start = time.perf_counter()
        lines = module.run_demo(args.out / name, fast)
        for line in lines:
            print(f"  {line}")
        print(f"  ({time.perf_counter() - start:.1f} s)", flush=True)
    print(f"outputs written to {args.out.resolve()}")
    return 0
