"""The IBA paper's Table 1 on the bundled cluttered-digits CNN: every method through the same evaluation code.

Runs :func:`pyroflows.evaluation.evaluate_bundled` (the library call behind ``pyroflows evaluate``), times it,
prints the table and refreshes the ``## Attribution evaluation`` section of ``benchmarks/RESULTS.md``.

Usage:
    python benchmarks/evaluation_table.py [--quick] [--n-images N] [--out DIR] [--no-write]
"""

from __future__ import annotations

import argparse
import datetime
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SECTION = "## Attribution evaluation"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="8 images, few masks: a smoke run (not written)")
    parser.add_argument("--n-images", type=int, default=50)
    parser.add_argument("--methods", default=None, help="comma-separated subset (default: all)")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "pyroflows-evaluation")
    parser.add_argument("--no-write", action="store_true", help="do not touch RESULTS.md")
    args = parser.parse_args()

    from pyroflows.evaluation import DEFAULT_METHODS, evaluate_bundled

    methods = args.methods.split(",") if args.methods else list(DEFAULT_METHODS)
    n_images = 8 if args.quick else args.n_images
    n_masks = 10 if args.quick else 20
    start = time.perf_counter()
    table, n = evaluate_bundled(args.out, methods=methods, n_images=n_images, n_masks=n_masks, force=True)
    seconds = time.perf_counter() - start
    command = "python benchmarks/evaluation_table.py" + (" --quick" if args.quick else "")
    if args.n_images != 50 and not args.quick:
        command += f" --n-images {args.n_images}"
    if args.methods:
        command += f" --methods {args.methods}"
    markdown = table.to_markdown()
    print(markdown)
    print(f"{n} images, {len(methods)} methods, {seconds:.0f} s wall time")
    if args.quick or args.no_write:
        return
    body = (
        f"{SECTION}\n\n"
        f"Command: `{command}` (equivalently `pyroflows evaluate --n-images {n_images} --out DIR`), "
        f"{datetime.date.today()}, {seconds:.0f} s wall time on the shared 2-core machine for {len(methods)} methods "
        f"on {n} "
        "held-out cluttered digits (correctly classified; target = label), 20 Sensitivity-N masks for each "
        "of 6 n per tile size, sanity "
        "check on 8 of them. Higher is better for degradation, bbox and sensitivity_n; lower for sanity_ssim "
        "(`fail` above 0.5). seconds_per_image is the attribution time alone.\n\n"
        f"{markdown}\n"
    )
    path = ROOT / "benchmarks" / "RESULTS.md"
    text = path.read_text()
    pattern = re.compile(rf"{re.escape(SECTION)}\n.*?(?=\n## |\Z)", re.S)
    text = pattern.sub(body.rstrip("\n") + "\n", text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + body
    path.write_text(text)
    print(f"refreshed '{SECTION}' in {path}")


if __name__ == "__main__":
    main()
