"""Helpers shared by the sub-command modules."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def add_parser(subparsers: Any, name: str, *, help: str, description: str, example: str) -> argparse.ArgumentParser:
    """Add a sub-command whose ``--help`` ends with a runnable example."""
    return subparsers.add_parser(
        name,
        help=help,
        description=description,
        epilog=f"example:\n  {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def print_json(payload: dict[str, Any]) -> None:
    """Print one JSON object on stdout (the machine-readable output of ``--json``)."""
    json.dump(payload, sys.stdout)
    sys.stdout.write("\n")
    sys.stdout.flush()


def seed_everything(seed: int | None) -> None:
    """Seed Python, NumPy, torch and Pyro (``pyro.set_rng_seed``) when ``seed`` is given."""
    if seed is None:
        return
    import pyro

    pyro.set_rng_seed(seed)
