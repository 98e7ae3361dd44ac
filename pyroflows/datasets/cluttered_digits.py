"""Cluttered digits: scikit-learn's 8x8 digits pasted on a larger canvas among digit fragments, with boxes.

An offline stand-in for ImageNet with bounding boxes. Each image holds one upscaled digit (the label) at a random
place on a ``size x size`` canvas; the rest of the canvas holds small fragments cut from *other* digits, so a
classifier has to find the digit and an attribution method can be scored on whether it points inside the digit's
ground-truth box (the bounding-box protocol of Schulz et al., 2020, which keeps images whose box covers at most a
third of the image; every box here does).

The 1,797 source digits are split once, by a fixed permutation, into disjoint pools: 1,200 for ``split="train"``
and 597 for ``split="test"``, so test images show digits (and fragments) the model never saw.

Example:
    >>> data = make_cluttered_digits(4, split="test", seed=1)
    >>> data.images.shape, data.labels.shape, data.boxes.shape
    (torch.Size([4, 1, 56, 56]), torch.Size([4]), torch.Size([4, 4]))
    >>> x, y = next(iter(data.loader(batch_size=2)))
    >>> x.shape
    torch.Size([2, 1, 56, 56])
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

__all__ = ["ClutteredDigits", "make_cluttered_digits", "DIGIT_SIZE", "N_TRAIN_SOURCE"]

DIGIT_SIZE = 24  # the 8x8 source digits are upscaled 3x
N_TRAIN_SOURCE = 1200  # source digits in the train pool; the remaining 597 form the test pool
_FRAGMENT_SIZE = 10
_N_FRAGMENTS = 6
_BOX_THRESHOLD = 0.05  # pixels above this belong to the digit when its tight box is computed
_SPLIT_SEED = 20200224  # fixed: the train/test source pools never change with the user's seed


@dataclass
class ClutteredDigits(Dataset):
    """Images, labels and ground-truth boxes; a :class:`torch.utils.data.Dataset` of ``(x, y)`` pairs.

    Attributes:
        images: float32 ``[N, 1, size, size]`` in ``[0, 1]``.
        labels: long ``[N]``, the digit class 0-9.
        boxes: long ``[N, 4]``, ``(top, left, bottom, right)`` of the digit's tight box; ``bottom`` and ``right``
            are exclusive, so ``images[i, 0, top:bottom, left:right]`` is the digit.
    """

    images: torch.Tensor
    labels: torch.Tensor
    boxes: torch.Tensor

    def __len__(self) -> int:
        """The number of images."""
        return int(self.labels.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Image ``index`` and its label."""
        return self.images[index], self.labels[index]

    def loader(self, batch_size: int = 64, *, shuffle: bool = False, seed: int = 0) -> DataLoader:
        """A DataLoader yielding ``(x, y)`` batches (shuffled reproducibly under ``seed`` when ``shuffle``)."""
        generator = torch.Generator().manual_seed(seed) if shuffle else None
        return DataLoader(self, batch_size=batch_size, shuffle=shuffle, generator=generator)

    def masks(self) -> torch.Tensor:
        """Boolean ``[N, size, size]`` masks, true inside each image's box."""
        n, _, h, w = self.images.shape
        rows = torch.arange(h).view(1, h, 1)
        cols = torch.arange(w).view(1, 1, w)
        top, left, bottom, right = (self.boxes[:, i].view(n, 1, 1) for i in range(4))
        return (rows >= top) & (rows < bottom) & (cols >= left) & (cols < right)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The ``(image, label)`` pairs in order."""
        for i in range(len(self)):
            yield self[i]


def _source_pool(split: str) -> tuple[torch.Tensor, np.ndarray]:
    """The upscaled source digits ``[M, 24, 24]`` in ``[0, 1]`` and their labels for one split."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(_SPLIT_SEED).permutation(len(digits.target))
    index = order[:N_TRAIN_SOURCE] if split == "train" else order[N_TRAIN_SOURCE:]
    small = torch.as_tensor(digits.images[index] / 16.0, dtype=torch.float32).unsqueeze(1)
    # Bilinear upscaling gives smooth strokes instead of 3x3 blocks, so boxes and maps are not grid-aligned.
    large = F.interpolate(small, size=(DIGIT_SIZE, DIGIT_SIZE), mode="bilinear", align_corners=False)
    return large.squeeze(1).clamp(0.0, 1.0), digits.target[index]


def make_cluttered_digits(n: int, *, split: str = "train", seed: int = 0, size: int = 56) -> ClutteredDigits:
    """Generate ``n`` cluttered-digit images, deterministically for a given ``(split, seed, size)``.

    Each canvas first receives six fragments (random 10x10 crops of random other digits of the same pool, dimmed
    to 50-90% intensity), then the digit, combined by pixel-wise maximum. The box is the tight box of the digit's
    pixels above 0.05.

    Args:
        n: Number of images.
        split: ``"train"`` or ``"test"``; the two draw digits and fragments from disjoint source pools.
        seed: Random seed for placement, choice of digits and clutter.
        size: Canvas side; at least 36 so a box covers at most a third of the image. 56 is divisible by the
            evaluation's tile sizes 8 and 14.

    Returns:
        A :class:`ClutteredDigits`.

    Raises:
        ValueError: ``n`` not positive, unknown ``split``, or ``size`` too small.

    Example:
        >>> a = make_cluttered_digits(3, seed=5)
        >>> b = make_cluttered_digits(3, seed=5)
        >>> bool((a.images == b.images).all()), a.boxes.tolist() == b.boxes.tolist()
        (True, True)
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    # A 24x24 digit must cover at most a third of the canvas: 576 <= size^2 / 3.
    if size < 42:
        raise ValueError(f"size must be at least 42 so a digit's box covers at most a third of the image, got {size}")
    pool, pool_labels = _source_pool(split)
    rng = np.random.default_rng([seed, 0 if split == "train" else 1, size])
    m = len(pool_labels)
    which = rng.integers(0, m, size=n)
    top = rng.integers(0, size - DIGIT_SIZE + 1, size=n)
    left = rng.integers(0, size - DIGIT_SIZE + 1, size=n)
    frag_src = rng.integers(0, m, size=(n, _N_FRAGMENTS))
    frag_crop = rng.integers(0, DIGIT_SIZE - _FRAGMENT_SIZE + 1, size=(n, _N_FRAGMENTS, 2))
    frag_pos = rng.integers(0, size - _FRAGMENT_SIZE + 1, size=(n, _N_FRAGMENTS, 2))
    frag_gain = rng.uniform(0.5, 0.9, size=(n, _N_FRAGMENTS)).astype(np.float32)

    pool_np = pool.numpy()
    images = np.zeros((n, size, size), dtype=np.float32)
    boxes = np.zeros((n, 4), dtype=np.int64)
    f = _FRAGMENT_SIZE
    for i in range(n):
        canvas = images[i]
        for j in range(_N_FRAGMENTS):
            src = frag_src[i, j]
            if src == which[i]:
                src = (src + 1) % m  # clutter never comes from the digit itself
            cy, cx = frag_crop[i, j]
            py, px = frag_pos[i, j]
            patch = pool_np[src, cy : cy + f, cx : cx + f] * frag_gain[i, j]
            np.maximum(canvas[py : py + f, px : px + f], patch, out=canvas[py : py + f, px : px + f])
        digit = pool_np[which[i]]
        t, l0 = top[i], left[i]
        region = canvas[t : t + DIGIT_SIZE, l0 : l0 + DIGIT_SIZE]
        np.maximum(region, digit, out=region)
        rows = np.flatnonzero((digit > _BOX_THRESHOLD).any(axis=1))
        cols = np.flatnonzero((digit > _BOX_THRESHOLD).any(axis=0))
        boxes[i] = (t + rows[0], l0 + cols[0], t + rows[-1] + 1, l0 + cols[-1] + 1)
    return ClutteredDigits(
        images=torch.from_numpy(images).unsqueeze(1),
        labels=torch.as_tensor(pool_labels[which], dtype=torch.long),
        boxes=torch.from_numpy(boxes),
    )
