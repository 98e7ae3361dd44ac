"""Span score and top-1 hit rate on the shipped sequence tasks: the bottlenecks next to every baseline, over seeds.

Usage: ``python benchmarks/attribution_sequences.py [--quick] [--n N] [--seeds S] [--no-write]``

For each seed ``s``: the held-out draw ``s`` of the test split (``motifs``: the positives the model classifies
correctly, ``keywords``: the sequences it classifies correctly), statistics from draw ``s + 1`` of the training
split (2,000 sequences; keywords: a fifth without a keyword, as in training), the readout trained on it (8 epochs;
on the positives / the keyword sequences), every method of ``SEQUENCE_METHODS`` at its defaults
with seed ``s``. Span score: the fraction of the ``k`` highest positions inside the known span (``k`` its width:
7 bases, 1 token); top-1: whether the highest position is inside. Reported as mean +- standard deviation over the
seeds (each seed's figure is itself a mean over ``N`` sequences). Bottlenecks at ``features.1`` (motifs) and after
``encoder.layers.0`` (keywords).
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing

from pyroflows.evaluation import SEQUENCE_METHODS, make_attribute_fn, span_score, top1_hit  # noqa: E402
from pyroflows.evaluation.sequence_tasks import sequence_task, train_readout  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import write_section as _write_section  # noqa: E402


def _measure(task: str, n: int, seed: int, estimation: int, epochs: int) -> dict[str, tuple[float, float, float]]:
    setup = sequence_task(task, n=n, estimation=estimation, seed=seed)
    setup.context.readout = train_readout(setup, epochs=epochs, seed=seed)
    results = {}
    for name in SEQUENCE_METHODS:
        start = time.perf_counter()
        maps = make_attribute_fn(name, setup.context)(setup.model, setup.inputs, setup.target)
        seconds = time.perf_counter() - start
        span = float(span_score(maps, setup.spans, setup.padding).mean())
        top1 = float(top1_hit(maps, setup.spans, setup.padding).mean())
        results[name] = (span, top1, seconds / len(setup.target))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="20 sequences, 2 seeds, 300 estimation sequences")
    parser.add_argument("--n", type=int, default=200, help="held-out sequences per seed (default 200)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds / data draws (default 3)")
    parser.add_argument("--no-write", action="store_true", help="do not update benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    n, seeds, estimation, epochs = (20, 2, 300, 1) if args.quick else (args.n, args.seeds, 2000, 8)
    torch.set_num_threads(1)
    warnings.simplefilter("ignore", UserWarning)
    start = time.perf_counter()
    lines = []
    for task in ("motifs", "keywords"):
        runs = [_measure(task, n, seed, estimation, epochs) for seed in range(seeds)]
        lines += [
            f"### {task}",
            "",
            "| method | span score | top-1 hit rate | seconds per sequence |",
            "|---|---|---|---|",
        ]
        for name in SEQUENCE_METHODS:
            values = torch.tensor([run[name] for run in runs], dtype=torch.float64)  # [seeds, 3]
            mean, std = values.mean(0), values.std(0) if seeds > 1 else torch.zeros(3)
            lines.append(f"| {name} | {mean[0]:.3f} +- {std[0]:.3f} | {mean[1]:.3f} +- {std[1]:.3f} | {mean[2]:.4f} |")
        lines.append("")
        print("\n".join(lines[-len(SEQUENCE_METHODS) - 4 :]), flush=True)
    total = time.perf_counter() - start
    if not args.no_write and not args.quick:
        section = (
            "## Attribution: sequence tasks\n\n"
            f"Command: `python benchmarks/attribution_sequences.py --n {n} --seeds {seeds}` (date "
            f"{datetime.date.today()}, {total:.0f} s, one thread). Shipped MotifCNN (bottlenecks at `features.1`) and "
            "KeywordTransformer (local attention, window 1, and a 'no keyword' class since issue 13's second look; "
            "bottlenecks after `encoder.layers.0`, `channel_dim=-1`, padding left out; statistics on training "
            "sequences a fifth of which hold no keyword, the held-out ones all hold one); "
            f"{n} held-out sequences per seed, {seeds} seeds (data draw, statistics draw, method seed); mean +- "
            "standard deviation over seeds. Every method at its registry defaults (per-sample beta 10, 10 steps; "
            "input bottleneck 10 + 20 steps; readout trained 8 epochs, Adam 1e-2, the information loss's weight "
            "rising over the first 4, on the 2,000 training sequences (motifs: their positives; keywords: those "
            "with a keyword)).\n\n" + "\n".join(lines)
        )
        _write_section(section, "## Attribution: sequence tasks")
    return 0


if __name__ == "__main__":
    sys.exit(main())
