"""The tour of every capability on built-in data (what ``pyroflows demo`` runs).

Each part lives with its capability (``pyroflows.<package>.demo``: ``run_demo(out_dir, fast, *, overwrite)`` and
``DEMO_OUTPUTS``); this module runs them in order, each in its own folder, with a clean Pyro parameter store and the
same seed.

Example:
    >>> import tempfile, pathlib
    >>> lines = run_demo(pathlib.Path(tempfile.mkdtemp()) / "tour", fast=True, parts=("flow",))  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from pyroflows.errors import DataError
from pyroflows.io import check_output_dir

__all__ = ["DEMO_PARTS", "run_demo"]

#: The tour's parts, in order: the output sub-folder and the module that runs it.
DEMO_PARTS: dict[str, str] = {
    "flow": "pyroflows.flows.demo",
    "diffusion": "pyroflows.diffusion.demo",
    "attribute": "pyroflows.attribution.demo",
    "evaluate": "pyroflows.evaluation.demo",
}


def run_demo(
    out_dir: str | Path,
    fast: bool = False,
    *,
    seed: int = 0,
    overwrite: bool = False,
    parts: Sequence[str] | None = None,
    report: Callable[[str], None] = print,
) -> list[str]:
    """Run the tour; every output path is checked before any work.

    Args:
        out_dir: Output folder (one sub-folder per part).
        fast: Tiny sizes (seconds, not minutes).
        seed: Pyro's seed before each part.
        overwrite: Replace the outputs of an earlier tour.
        parts: A subset of :data:`DEMO_PARTS` (default all).
        report: Called with each summary line as it is produced.

    Returns:
        Every summary line.

    Raises:
        pyroflows.errors.DataError: an unknown part; ``out_dir`` is a file, or holds an earlier tour's outputs and
            not ``overwrite``.
    """
    import pyro

    out_dir = Path(out_dir)
    names = list(DEMO_PARTS) if parts is None else list(parts)
    unknown = [name for name in names if name not in DEMO_PARTS]
    if unknown:
        raise DataError(f"parts: unknown {unknown}; expected some of {', '.join(DEMO_PARTS)}")
    modules = [(name, importlib.import_module(DEMO_PARTS[name])) for name in names]
    check_output_dir(out_dir, overwrite=overwrite)
    for name, module in modules:
        check_output_dir(out_dir / name, module.DEMO_OUTPUTS, overwrite=overwrite)
    lines: list[str] = []
    for name, module in modules:
        pyro.clear_param_store()
        pyro.set_rng_seed(seed)
        report(f"== {name} ==")
        start = time.perf_counter()
        # The outputs were checked above (refused unless ``overwrite``), so each part may replace them.
        for line in module.run_demo(out_dir / name, fast, overwrite=True):
            report(f"  {line}")
            lines.append(line)
        report(f"  ({time.perf_counter() - start:.1f} s)")
    return lines
