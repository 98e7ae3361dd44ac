"""``pyroflows demo``: a short tour of every capability on built-in data."""

from __future__ import annotations

import argparse
import importlib
import time
from pathlib import Path
from typing import Any

from pyroflows._config import smoke_mode
from pyroflows.cli._common import SEED, add_parser
from pyroflows.io import check_output_dir

# Each of these modules exposes ``run_demo(out_dir: Path, fast: bool) -> list[str]`` returning summary lines, and
# ``DEMO_OUTPUTS``, the names of the files it writes into ``out_dir`` (checked here before any work).
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
    parser.add_argument("--seed", type=SEED, default=0, help="random seed (default 0)")
    parser.add_argument("--force", action="store_true", help="replace the outputs of an earlier demo in --out")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import pyro

    fast = args.fast or smoke_mode()
    modules = []
    for name in _DEMO_MODULES:
        module = importlib.import_module(f"pyroflows.cli.{name}")
        if hasattr(module, "run_demo"):
            modules.append((name, module))
    # Refuse before any work: --out a file, or an earlier demo's outputs without --force. Folders are made only
    # when their first file is written.
    check_output_dir(args.out, overwrite=args.force)
    for name, module in modules:
        check_output_dir(args.out / name, getattr(module, "DEMO_OUTPUTS", ()), overwrite=args.force)
    for name, module in modules:
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
