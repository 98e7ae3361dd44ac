"""Reproduce the bundled CNN's weights: ``python -m pyroflows.zoo.train_digits [--out PATH]``.

Trains :class:`~pyroflows.zoo.DigitCNN` on 12,000 training cluttered digits (seed 0) with Adam,
then prints the accuracy on 2,000 held-out test images (``split="test"``, seed 0: digits from the disjoint test
pool). Deterministic under ``--seed`` on a given machine and torch version (CPU). Takes a few minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from pyroflows.datasets import make_cluttered_digits
from pyroflows.zoo.digits import BUNDLED_WEIGHTS, DigitCNN

__all__ = ["train_digit_cnn", "accuracy", "main"]

N_TRAIN = 12000
N_TEST = 2000


@torch.no_grad()
def accuracy(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 500) -> float:
    """Fraction of ``images`` whose arg-max logit equals ``labels``.

    Example:
        >>> model = DigitCNN().eval()
        >>> 0.0 <= accuracy(model, torch.zeros(4, 1, 56, 56), torch.zeros(4, dtype=torch.long)) <= 1.0
        True
    """
    was_training = model.training
    model.eval()
    correct = 0
    for start in range(0, len(labels), batch_size):
        logits = model(images[start : start + batch_size])
        correct += int((logits.argmax(-1) == labels[start : start + batch_size]).sum())
    model.train(was_training)
    return correct / len(labels)


def train_digit_cnn(
    *, n_train: int = N_TRAIN, epochs: int = 6, batch_size: int = 64, lr: float = 2e-3, seed: int = 0, progress=True
) -> DigitCNN:
    """Train a :class:`DigitCNN` on freshly generated training cluttered digits.

    Args:
        n_train: Number of training images.
        epochs: Passes over them.
        batch_size: Minibatch size.
        lr: Adam learning rate (cosine-annealed to zero).
        seed: Seeds the data, the initial weights and the shuffling.
        progress: Show a tqdm bar.

    Returns:
        The trained model, in eval mode.
    """
    torch.manual_seed(seed)
    data = make_cluttered_digits(n_train, split="train", seed=seed)
    model = DigitCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    steps = epochs * ((n_train + batch_size - 1) // batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    generator = torch.Generator().manual_seed(seed)
    bar = tqdm(total=steps, disable=not progress, desc="training DigitCNN")
    model.train()
    for _ in range(epochs):
        order = torch.randperm(n_train, generator=generator)
        for start in range(0, n_train, batch_size):
            index = order[start : start + batch_size]
            x = data.images[index]
            # Random 1-pixel shifts would blur box alignment; a little intensity jitter is enough augmentation.
            x = x * torch.empty(len(index), 1, 1, 1).uniform_(0.8, 1.2, generator=generator)
            loss = F.cross_entropy(model(x.clamp(0, 1)), data.labels[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    return model.eval()


def main(argv: list[str] | None = None) -> int:
    """Train the bundled digit CNN and write its weights (the command line of this script)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=BUNDLED_WEIGHTS, help="weights file (default: the bundled one)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--force", action="store_true", help="replace an existing weights file")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    model = train_digit_cnn(epochs=args.epochs, seed=args.seed)
    test = make_cluttered_digits(N_TEST, split="test", seed=0)
    acc = accuracy(model, test.images, test.labels)
    model.save(
        args.out,
        extra={"test_accuracy": acc, "n_train": N_TRAIN, "epochs": args.epochs, "seed": args.seed},
        overwrite=args.force,
    )
    print(f"test accuracy on {N_TEST} held-out cluttered digits: {acc:.4f}")
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB) in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
