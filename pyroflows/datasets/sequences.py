"""Sequence tasks whose relevant positions are known: a planted DNA motif and a deciding keyword token.

* :func:`make_motif_sequences`: one-hot DNA-like sequences ``[N, 4, L]`` (bases A, C, G, T); label 1 when the motif
  ``MOTIF`` is planted at a random position, 0 otherwise (a random sequence, half of them with a decoy: the motif
  with two bases changed, so the motif's every base matters). ``spans[i] = (start, end)`` of the planted motif
  (``(0, 0)`` for negatives).
* :func:`make_keyword_sequences`: token ids ``[N, L]`` padded with ``PAD`` (id 0) after a random length; exactly one
  keyword (ids ``1..classes``) at a random position decides the label (keyword ``k`` is class ``k - 1``); the other
  tokens are fillers. ``padding`` is True at padded positions (PyTorch's ``src_key_padding_mask``). With
  ``null_fraction > 0`` that share of the sequences hold no keyword (a filler in its place), label ``classes`` ("no
  keyword", span ``(0, 0)``): the negatives of the motif task, so no keyword class is the one a model predicts from
  the absence of the others.

The ``train`` and ``test`` splits are independent draws (different random streams for one ``seed``).

Example:
    >>> data = make_motif_sequences(8, seed=0)
    >>> data.inputs.shape, data.inputs.sum(1).eq(1).all().item()
    (torch.Size([8, 4, 100]), True)
    >>> tokens = make_keyword_sequences(4, seed=0)
    >>> tokens.inputs.shape, bool((tokens.inputs[tokens.padding] == PAD).all())
    (torch.Size([4, 24]), True)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pyroflows.errors import DataError

__all__ = ["SequenceTask", "make_motif_sequences", "make_keyword_sequences", "MOTIF", "BASES", "PAD", "span_masks"]

BASES = "ACGT"
#: The planted motif (7 bases, like a transcription-factor binding site).
MOTIF = "TGACTCA"
#: Token id of padding in the keyword task.
PAD = 0


@dataclass
class SequenceTask:
    """A batch of sequences with labels and the known relevant span of each.

    Attributes:
        inputs: ``[N, 4, L]`` one-hot floats (motifs) or ``[N, L]`` token ids (keywords).
        labels: ``[N]`` class indices.
        spans: ``[N, 2]`` ``(start, end)`` of the relevant positions, end exclusive (``(0, 0)``: none).
        padding: ``[N, L]`` True at padded positions, or ``None``.
    """

    inputs: torch.Tensor
    labels: torch.Tensor
    spans: torch.Tensor
    padding: torch.Tensor | None = None

    def __len__(self) -> int:
        """The number of sequences."""
        return int(self.labels.shape[0])

    def subset(self, index: torch.Tensor) -> SequenceTask:
        """The rows ``index`` (e.g. the positives, or the correctly classified)."""
        padding = None if self.padding is None else self.padding[index]
        return SequenceTask(self.inputs[index], self.labels[index], self.spans[index], padding)


def _generator(seed: int, split: str) -> torch.Generator:
    if split not in ("train", "test"):
        raise DataError(f"split must be 'train' or 'test', got {split!r}")
    return torch.Generator().manual_seed(2 * int(seed) + (split == "test"))


def _check_n(n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise DataError(f"n must be a positive integer, got {n!r}")


def make_motif_sequences(
    n: int, *, length: int = 100, split: str = "train", seed: int = 0, positive_fraction: float = 0.5
) -> SequenceTask:
    """One-hot DNA-like sequences, a motif planted in the positives.

    Args:
        n: Number of sequences.
        length: Bases per sequence (at least twice the motif).
        split: ``"train"`` or ``"test"`` (independent draws).
        seed: Seed of the draw.
        positive_fraction: Share of sequences with the motif.

    Returns:
        :class:`SequenceTask` with ``inputs [N, 4, length]``.
    """
    _check_n(n)
    if length < 2 * len(MOTIF):
        raise DataError(f"length must be at least {2 * len(MOTIF)}, got {length}")
    g = _generator(seed, split)
    bases = torch.randint(0, 4, (n, length), generator=g)
    motif = torch.tensor([BASES.index(b) for b in MOTIF])
    width = len(MOTIF)
    labels = (torch.rand(n, generator=g) < positive_fraction).long()
    starts = torch.randint(0, length - width + 1, (n,), generator=g)
    decoy = torch.rand(n, generator=g) < 0.5
    spans = torch.zeros(n, 2, dtype=torch.long)
    for i in range(n):
        s = int(starts[i])
        if labels[i]:
            bases[i, s : s + width] = motif
            spans[i] = torch.tensor([s, s + width])
        elif decoy[i]:
            changed = motif.clone()
            where = torch.randperm(width, generator=g)[:2]
            changed[where] = (changed[where] + torch.randint(1, 4, (2,), generator=g)) % 4
            bases[i, s : s + width] = changed
    # A negative that holds the motif by chance (probability ~ length / 4^7) is re-drawn off it.
    windows = bases.unfold(1, width, 1)  # [N, L - w + 1, w]
    hits = (windows == motif).all(-1)
    for i in (labels == 0).nonzero().flatten().tolist():
        for s in hits[i].nonzero().flatten().tolist():
            bases[i, s] = (bases[i, s] + 1) % 4
    inputs = torch.nn.functional.one_hot(bases, 4).permute(0, 2, 1).float().contiguous()
    return SequenceTask(inputs, labels, spans)


def make_keyword_sequences(
    n: int,
    *,
    length: int = 24,
    min_length: int = 10,
    classes: int = 4,
    vocab: int = 32,
    split: str = "train",
    seed: int = 0,
    null_fraction: float = 0.0,
) -> SequenceTask:
    """Token sequences whose label is decided by the one keyword they hold (or by holding none).

    Args:
        n: Number of sequences.
        length: Padded length.
        min_length: Shortest unpadded length.
        classes: Number of keywords (ids ``1..classes``), one per class.
        vocab: Vocabulary size (fillers are ids ``classes + 1 .. vocab - 1``).
        split: ``"train"`` or ``"test"``.
        seed: Seed of the draw.
        null_fraction: Share of sequences without a keyword (label ``classes``, span ``(0, 0)``). The other
            sequences are the same as with ``null_fraction=0`` for the same seed (the nulls are drawn last).

    Returns:
        :class:`SequenceTask` with ``inputs [N, length]`` (int64), ``padding [N, length]`` and one-token spans.

    Example:
        >>> data = make_keyword_sequences(6, seed=1, null_fraction=0.5)
        >>> keep = data.labels < 4
        >>> bool((data.inputs[keep] == make_keyword_sequences(6, seed=1).inputs[keep]).all())
        True
    """
    _check_n(n)
    if not 1 <= min_length <= length:
        raise DataError(f"need 1 <= min_length <= length, got {min_length} and {length}")
    if vocab <= classes + 1:
        raise DataError(f"vocab must exceed classes + 1 = {classes + 1} (padding, keywords, fillers), got {vocab}")
    if not 0.0 <= float(null_fraction) < 1.0:
        raise DataError(f"null_fraction must be in [0, 1), got {null_fraction!r}")
    g = _generator(seed, split)
    tokens = torch.randint(classes + 1, vocab, (n, length), generator=g)
    lengths = torch.randint(min_length, length + 1, (n,), generator=g)
    labels = torch.randint(0, classes, (n,), generator=g)
    positions = (torch.rand(n, generator=g) * lengths).long()
    padding = torch.arange(length)[None, :] >= lengths[:, None]
    tokens[torch.arange(n), positions] = labels + 1
    tokens[padding] = PAD
    spans = torch.stack([positions, positions + 1], 1)
    if null_fraction > 0:  # drawn after everything else: the keyword sequences do not depend on null_fraction
        null = (torch.rand(n, generator=g) < null_fraction).nonzero().flatten()
        tokens[null, positions[null]] = torch.randint(classes + 1, vocab, (len(null),), generator=g)
        labels[null], spans[null] = classes, 0
    return SequenceTask(tokens, labels, spans, padding)


def span_masks(spans: torch.Tensor, length: int) -> torch.Tensor:
    """Boolean masks ``[N, length]``, True inside each ``(start, end)`` span.

    Raises:
        DataError: ``spans`` is not ``[N, 2]``, a span is empty or reaches outside ``[0, length]``.

    Example:
        >>> span_masks(torch.tensor([[1, 3]]), 4).int()
        tensor([[0, 1, 1, 0]], dtype=torch.int32)
    """
    spans = torch.as_tensor(spans)
    if spans.ndim != 2 or spans.shape[1] != 2:
        raise DataError(f"spans must have shape [N, 2] as (start, end), got {list(spans.shape)}")
    start, end = spans.long().unbind(1)
    bad = (start < 0) | (end > length) | (end <= start)
    if bad.any():
        rows = bad.nonzero().flatten().tolist()[:5]
        raise DataError(
            f"spans {rows} are empty or outside the {length} positions: {spans[rows].tolist()} "
            f"(expected 0 <= start < end <= {length})"
        )
    position = torch.arange(length, device=spans.device)[None, :]
    return (position >= start[:, None]) & (position < end[:, None])
