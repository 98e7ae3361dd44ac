"""Reproduce the bundled readout bottleneck: ``python -m pyroflows.zoo.train_digits_readout``.

Estimates the statistics of the bundled CNN's ``BUNDLED_LAYER`` and of the readout layers over 5,000 training
cluttered digits, trains the readout network by SVI (beta 10, Adam lr 1e-2, batches of 64, the information loss
warmed up linearly over the first epoch) over 4,000 training images for 3 epochs, and prints the bounding-box score
of its maps on 200 held-out test images. Deterministic under ``--seed`` on a given machine, torch version and
thread count (the shipped file was made with ``OMP_NUM_THREADS=1``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pyro
import torch

from pyroflows.attribution import ReadoutBottleneck
from pyroflows.datasets import make_cluttered_digits
from pyroflows.evaluation import bounding_box_score
from pyroflows.zoo.digits import (
    BUNDLED_LAYER,
    BUNDLED_READOUT_LAYERS,
    BUNDLED_READOUT_WEIGHTS,
    load_bundled_model,
)

__all__ = ["train_bundled_readout", "main"]


def train_bundled_readout(
    *, n_train: int = 4000, n_estimate: int = 5000, epochs: int = 3, lr: float = 1e-2, seed: int = 0, progress=True
) -> ReadoutBottleneck:
    """Train a readout bottleneck for the bundled CNN at ``BUNDLED_LAYER`` (see the module docstring)."""
    pyro.set_rng_seed(seed)
    model = load_bundled_model()
    readout = ReadoutBottleneck(model, BUNDLED_LAYER, list(BUNDLED_READOUT_LAYERS))
    readout.estimate(make_cluttered_digits(n_estimate, split="train", seed=seed + 1).loader(500), progress=progress)
    data = make_cluttered_digits(n_train, split="train", seed=seed + 2)
    readout.fit(data.loader(64, shuffle=True, seed=seed), epochs=epochs, lr=lr, progress=progress)
    return readout


def main(argv: list[str] | None = None) -> int:
    """Train the bundled readout bottleneck and write its weights (the command line of this script)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=BUNDLED_READOUT_WEIGHTS, help="weights file (default: bundled)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--n-train", type=int, default=4000)
    parser.add_argument("--force", action="store_true", help="replace an existing weights file")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    readout = train_bundled_readout(epochs=args.epochs, seed=args.seed, lr=args.lr, n_train=args.n_train)
    test = make_cluttered_digits(200, split="test", seed=0)
    with torch.no_grad():
        score = bounding_box_score(readout.attribute(test.images), test.boxes).mean().item()
    readout.save(args.out, overwrite=args.force)
    print(f"readout bounding-box score on 200 held-out cluttered digits: {score:.3f}")
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB) in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
