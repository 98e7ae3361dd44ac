"""Helpers shared by the sub-command modules."""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Callable
from typing import Any

from pyroflows.errors import DataError, NumericalError

#: The sub-commands, in ``--help`` order, with their one-line summaries: the one home of that text (each
#: module's ``register(subparsers)`` takes it from here through :func:`add_parser`). A command's module is imported
#: only when that command runs, so ``pyroflows --help`` and ``--version`` answer without importing torch.
COMMANDS: dict[str, str] = {
    "demo": "run a short tour of every capability on built-in data",
    "flow": "fit, score and sample densities on an interval or a box",
    "diffusion": "train, sample and score DDPM diffusion models",
    "attribute": "information-bottleneck attribution maps (per-sample or readout) for images",
    "evaluate": "compare attribution methods with the IBA paper's metrics (a Table-1-style table and plots)",
}


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line on stderr (exit status 2).

    It reads values that start with a minus sign and a digit (``--low -0.5,-0.5``, ``--beta -1``) as values, not as
    options.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # argparse only takes "-5" or "-.5" for a negative number; "-0.5,-0.5" or "-1e3" would be an option.
        self._negative_number_matcher = re.compile(r"^-\.?\d[\d.,:eE+\-\s]*$")

    def error(self, message: str) -> Any:  # noqa: D102 - argparse's hook
        message = " ".join(message.split())
        command = self.prog.split(" ", 1)[1] + ": " if " " in self.prog else ""
        self.exit(2, f"pyroflows: error: {command}{message} (see '{self.prog} --help')\n")


def int_arg(*, low: int | None = None, high: int | None = None) -> Callable[[str], int]:
    """An argparse ``type`` for an integer in ``[low, high]`` (``1e3`` accepted), checked as the library does.

    Example:
        >>> parser = OneLineParser(prog="demo")
        >>> _ = parser.add_argument("-n", type=int_arg(low=1))
        >>> parser.parse_args(["-n", "2e3"]).n
        2000
    """
    from pyroflows.validation import parse_int

    def parse(text: str) -> int:
        try:
            return parse_int(text, "value", low=low, high=high)
        except DataError as exc:
            raise argparse.ArgumentTypeError(str(exc).split(": ", 1)[-1]) from None

    parse.__name__ = "integer"
    return parse


def float_arg(
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> Callable[[str], float]:
    """An argparse ``type`` for a finite number in a range (``low_open``: the bound excluded).

    Example:
        >>> parser = OneLineParser(prog="demo")
        >>> _ = parser.add_argument("--lr", type=float_arg(low=0, low_open=True))
        >>> parser.parse_args(["--lr", "1e-3"]).lr
        0.001
    """
    from pyroflows.validation import parse_float

    def parse(text: str) -> float:
        try:
            return parse_float(text, "value", low=low, high=high, low_open=low_open, high_open=high_open)
        except DataError as exc:
            raise argparse.ArgumentTypeError(str(exc).split(": ", 1)[-1]) from None

    parse.__name__ = "number"
    return parse


#: The ``--seed`` option's type: what ``pyro.set_rng_seed`` (NumPy) accepts.
SEED = int_arg(low=0, high=2**32 - 1)


def add_parser(
    subparsers: Any, name: str, *, description: str, example: str, help: str | None = None
) -> argparse.ArgumentParser:
    """Add a sub-command whose ``--help`` ends with a runnable example.

    ``help`` defaults to its :data:`COMMANDS` summary.
    """
    return subparsers.add_parser(
        name,
        help=COMMANDS.get(name) if help is None else help,
        description=description,
        epilog=f"example:\n  {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _non_finite(value: Any, key: str = "") -> list[str]:
    if isinstance(value, float) and not math.isfinite(value):
        return [key or "value"]
    if isinstance(value, dict):
        return [k for key2, v in value.items() for k in _non_finite(v, f"{key}.{key2}" if key else str(key2))]
    if isinstance(value, (list, tuple)):
        return [k for i, v in enumerate(value) for k in _non_finite(v, f"{key}[{i}]")]
    return []


def print_json(payload: dict[str, Any]) -> None:
    """Print one JSON object on stdout (the machine-readable output of ``--json``).

    Strict JSON, so a NaN or infinity is an error (:class:`NumericalError`) rather than an invalid document.
    """
    bad = _non_finite(payload)
    if bad:
        raise NumericalError(f"the result is not finite ({', '.join(bad[:5])}); nothing was printed")
    json.dump(payload, sys.stdout, allow_nan=False)
    sys.stdout.write("\n")
    sys.stdout.flush()


def seed_everything(seed: int | None) -> None:
    """Seed Python, NumPy, torch and Pyro (``pyro.set_rng_seed``) when ``seed`` is given."""
    if seed is None:
        return
    import pyro

    pyro.set_rng_seed(seed)
