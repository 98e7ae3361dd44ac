"""Reproduce the bundled sequence models: ``python -m pyroflows.zoo.train_sequences [--force]``.

Trains :class:`~pyroflows.zoo.MotifCNN` on 6,000 training motif sequences and
:class:`~pyroflows.zoo.KeywordTransformer` on 6,000 training keyword sequences (seed 0; a fifth of them without a
keyword, the "no keyword" class) with Adam on one thread, then prints each one's accuracy on 2,000 held-out sequences
(``split="test"``, seed 0; the keyword sequences' share of nulls as in training) and writes
``pyroflows/zoo/weights/motif_cnn.pt`` and ``keyword_transformer.pt``. Deterministic under ``--seed`` on a given machine
and torch version (CPU, one thread). About a minute in all.
"""

from __future__ import annotations

import argparse
import functools
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from pyroflows.datasets.sequences import make_keyword_sequences, make_motif_sequences
from pyroflows.zoo.sequences import KEYWORD_WEIGHTS, MOTIF_WEIGHTS, KeywordTransformer, MotifCNN

__all__ = ["train_motif_cnn", "train_keyword_transformer", "accuracy", "main", "KEYWORD_NULL_FRACTION"]

N_TRAIN = 6000
N_TEST = 2000
#: Share of keyword sequences without a keyword (the "no keyword" class), in training and in the held-out figure.
KEYWORD_NULL_FRACTION = 0.2


def _train(model, inputs, labels, extra, *, epochs, batch_size, lr, seed) -> None:
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    steps = epochs * ((len(labels) + batch_size - 1) // batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(labels), generator=generator)
        for start in range(0, len(labels), batch_size):
            index = order[start : start + batch_size]
            loss = F.cross_entropy(model(inputs[index], *(e[index] for e in extra)), labels[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    model.eval()


@torch.no_grad()
def accuracy(model: torch.nn.Module, inputs: torch.Tensor, labels: torch.Tensor, *extra: torch.Tensor) -> float:
    """Fraction of sequences classified as labelled."""
    return float((model(inputs, *extra).argmax(-1) == labels).double().mean())


def train_motif_cnn(*, n_train: int = N_TRAIN, epochs: int = 8, seed: int = 0) -> MotifCNN:
    """Train a :class:`MotifCNN` on fresh training motif sequences (batch 64, Adam 3e-3, cosine)."""
    torch.manual_seed(seed)
    data = make_motif_sequences(n_train, split="train", seed=seed)
    model = MotifCNN()
    _train(model, data.inputs, data.labels, (), epochs=epochs, batch_size=64, lr=3e-3, seed=seed)
    return model


def train_keyword_transformer(*, n_train: int = N_TRAIN, epochs: int = 6, seed: int = 0) -> KeywordTransformer:
    """Train a :class:`KeywordTransformer` on fresh training keyword sequences, a fifth of them without a keyword.

    Batch 64, Adam 2e-3, cosine schedule.
    """
    torch.manual_seed(seed)
    data = make_keyword_sequences(n_train, split="train", seed=seed, null_fraction=KEYWORD_NULL_FRACTION)
    model = KeywordTransformer()
    _train(model, data.inputs, data.labels, (data.padding,), epochs=epochs, batch_size=64, lr=2e-3, seed=seed)
    return model


def main(argv: list[str] | None = None) -> int:
    """Train the shipped sequence models and write their weights (the command line of this script)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--motif-out", type=Path, default=MOTIF_WEIGHTS)
    parser.add_argument("--keyword-out", type=Path, default=KEYWORD_WEIGHTS)
    parser.add_argument("--force", action="store_true", help="replace existing weights files")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    keywords = functools.partial(make_keyword_sequences, null_fraction=KEYWORD_NULL_FRACTION)
    for name, train, make, out in (
        ("motif CNN", train_motif_cnn, make_motif_sequences, args.motif_out),
        ("keyword transformer", train_keyword_transformer, keywords, args.keyword_out),
    ):
        start = time.perf_counter()
        model = train(seed=args.seed)
        test = make(N_TEST, split="test", seed=0)
        extra = () if test.padding is None else (test.padding,)
        acc = accuracy(model, test.inputs, test.labels, *extra)
        model.save(out, extra={"test_accuracy": acc, "n_train": N_TRAIN, "seed": args.seed}, overwrite=args.force)
        print(f"{name}: held-out accuracy {acc:.4f} on {N_TEST}; wrote {out} in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
