"""Bounding-box score of the bottlenecks on held-out cluttered digits, next to Captum's Saliency and a random map.

Usage: ``python benchmarks/attribution_bbox.py [--quick] [--n N] [--no-write]``

The bundled CNN, held-out images ``make_cluttered_digits(N, split="test", seed=0)`` (digits and clutter from source
digits the model never saw; every box covers at most a third of the image), the target being the true label. The
score (Schulz et al., 2020): with ``n`` the box's area, the fraction of the ``n`` highest-attributed pixels inside
the box. Per-sample bottleneck at the paper's settings (beta 10, 10 steps, 10 copies) with statistics from 5,000
training images; the shipped readout; ``Saliency`` is the absolute gradient; random is uniform noise.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

import pyro
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing

from captum.attr import Saliency  # noqa: E402

from pyroflows.attribution import PerSampleBottleneck  # noqa: E402
from pyroflows.datasets import make_cluttered_digits  # noqa: E402
from pyroflows.evaluation import bounding_box_score  # noqa: E402
from pyroflows.zoo import BUNDLED_LAYER, load_bundled_model, load_bundled_readout  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import write_section as _write_section  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="20 images, 1,000 estimation images")
    parser.add_argument("--n", type=int, default=500, help="held-out images (default 500)")
    parser.add_argument("--no-write", action="store_true", help="do not update benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    n, n_estimate = (20, 1000) if args.quick else (args.n, 5000)
    start = time.perf_counter()
    pyro.set_rng_seed(0)
    torch.manual_seed(0)
    model = load_bundled_model()
    test = make_cluttered_digits(n, split="test", seed=0)
    timings, maps = {}, {}
    t = time.perf_counter()
    bottleneck = PerSampleBottleneck(model, BUNDLED_LAYER)
    bottleneck.estimate(make_cluttered_digits(n_estimate, split="train", seed=1).loader(500))
    maps["per-sample IBA (beta 10)"] = torch.cat(
        [bottleneck.attribute(x, y) for x, y in zip(test.images.split(50), test.labels.split(50), strict=True)]
    )
    timings["per-sample IBA (beta 10)"] = time.perf_counter() - t
    t = time.perf_counter()
    maps["readout IBA (shipped)"] = load_bundled_readout(model).attribute(test.images)
    timings["readout IBA (shipped)"] = time.perf_counter() - t
    t = time.perf_counter()
    maps["Saliency (Captum)"] = Saliency(model).attribute(test.images.clone().requires_grad_(), target=test.labels)
    maps["Saliency (Captum)"] = maps["Saliency (Captum)"].abs()[:, 0]
    timings["Saliency (Captum)"] = time.perf_counter() - t
    maps["random"] = torch.rand(n, 56, 56)
    timings["random"] = 0.0
    lines = ["| method | bounding-box score (mean +- s.e.) | seconds for all images |", "|---|---|---|"]
    for name, m in maps.items():
        scores = bounding_box_score(m.detach(), test.boxes)
        se = scores.std().item() / n**0.5
        lines.append(f"| {name} | {scores.mean().item():.3f} +- {se:.3f} | {timings[name]:.1f} |")
    table = "\n".join(lines)
    print(table)
    total = time.perf_counter() - start
    if not args.no_write and not args.quick:
        section = (
            "## Attribution: bounding box\n\n"
            f"Command: `python benchmarks/attribution_bbox.py --n {n}` (date {datetime.date.today()}, {total:.0f} s). "
            "Bundled CNN "
            f"(held-out accuracy 95.2%), {n} held-out cluttered digits, target = true label; the per-sample "
            f"bottleneck at `{BUNDLED_LAYER}` with the paper's settings, statistics from {n_estimate} training "
            "images (the seconds include the estimate).\n\n" + table + "\n"
        )
        _write_section(section, "## Attribution: bounding box")
    return 0


if __name__ == "__main__":
    sys.exit(main())
