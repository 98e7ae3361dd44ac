"""The shipped sequence tasks as evaluation set-ups: held-out sequences with known spans, the model, the methods.

* ``motifs``: :class:`~pyroflows.attribution.MotifCNN` on one-hot DNA-like sequences ``[N, 4, 100]``; the
  held-out positives it classifies correctly, target 1, the planted 7-base motif as the span; bottlenecks at
  ``features.1`` (the first convolution's ReLU, 92 cells put on the 100 bases through the receptive field);
  degradation over tiles of 5 and 10 bases replaced by the per-channel mean (uniform base frequencies).
* ``keywords``: :class:`~pyroflows.attribution.KeywordTransformer` on token ids ``[N, 24]``; the held-out sequences
  with a keyword it classifies correctly, target the label, the keyword as the span; statistics from training
  sequences a fifth of which hold no keyword, as the model was trained; bottlenecks after ``encoder.layers.0``
  (``[N, L, C]``, ``channel_dim=-1``, padding left out); token baselines on the embedding; degradation over tiles of
  1 and 2 tokens replaced by a filler token.

:func:`evaluate_sequence_task` runs :func:`~pyroflows.evaluation.evaluate_methods` on one of them, with a readout
bottleneck trained on the training split first when ``readout`` is among the methods.

Example:
    >>> setup = sequence_task("keywords", n=4, estimation=64)
    >>> setup.inputs.shape, setup.context.channel_dim
    (torch.Size([4, 24]), -1)
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from pyroflows.errors import DataError
from pyroflows.evaluation.methods import SEQUENCE_METHODS, MethodContext, _quiet_captum
from pyroflows.evaluation.protocol import EvaluationTable, evaluate_methods

__all__ = ["SEQUENCE_TASKS", "SequenceSetup", "sequence_task", "evaluate_sequence_task", "train_readout"]

SEQUENCE_TASKS = ("motifs", "keywords")


def _tokens_padding(tokens: torch.Tensor, args: tuple[Any, ...]) -> torch.Tensor:
    from pyroflows.datasets.sequences import PAD

    return tokens == PAD


@dataclass
class SequenceSetup:
    """Everything one sequence task's evaluation needs.

    Attributes:
        task: ``"motifs"`` or ``"keywords"``.
        model: The shipped model.
        inputs: Held-out inputs the model classifies correctly (positives only for motifs).
        target: Their labels.
        spans: ``[N, 2]`` known relevant spans.
        padding: ``[N, L]`` padding (keywords) or ``None``.
        train_inputs: Training-split inputs for the bottlenecks' statistics; ``train_labels`` their labels.
        train_evidence: Which training inputs hold the task's evidence (a motif; a keyword, not the null class).
        context: The registry's context (layer, layout, padding, embedding).
        degradation_tiles / sensitivity_tiles / baseline: The metrics' settings.
        readout_layers: Layers the task's readout bottleneck reads.
    """

    task: str
    model: nn.Module
    inputs: torch.Tensor
    target: torch.Tensor
    spans: torch.Tensor
    padding: torch.Tensor | None
    train_inputs: torch.Tensor
    train_labels: torch.Tensor
    train_evidence: torch.Tensor
    context: MethodContext
    degradation_tiles: tuple[int, ...]
    sensitivity_tiles: tuple[int, ...]
    baseline: Any
    readout_layers: tuple[str, ...]


def sequence_task(task: str, *, n: int = 200, estimation: int = 2000, seed: int = 0) -> SequenceSetup:
    """The held-out set-up of ``task`` (draw ``seed`` of the test split; statistics from the training split).

    Raises:
        DataError: an unknown task, or a non-positive ``n``.
    """
    from pyroflows.datasets.sequences import make_keyword_sequences, make_motif_sequences
    from pyroflows.zoo.sequences import (
        KEYWORD_LAYER,
        MOTIF_LAYER,
        load_keyword_model,
        load_motif_model,
    )

    if task not in SEQUENCE_TASKS:
        raise DataError(f"unknown task {task!r}; choose from {', '.join(SEQUENCE_TASKS)} (or digits)")
    if n < 1 or estimation < 2:
        raise DataError(f"need n >= 1 sequences and estimation >= 2, got {n} and {estimation}")
    model: nn.Module
    tiles: tuple[int, ...]
    sens: tuple[int, ...]
    baseline: str | int
    if task == "motifs":
        model = load_motif_model()
        pool = make_motif_sequences(4 * n + 40, split="test", seed=seed)
        train = make_motif_sequences(estimation, split="train", seed=seed + 1)
        with torch.no_grad():
            keep = (pool.labels == 1) & (model(pool.inputs).argmax(1) == pool.labels)
        evidence = train.labels == 1
        context = MethodContext(layer=MOTIF_LAYER, data=train.inputs, seed=seed, options={"window": 5})
        tiles, sens, baseline, readout = (5, 10), (1, 5), "mean", (MOTIF_LAYER, "features.4")
    else:
        from pyroflows.zoo.train_sequences import KEYWORD_NULL_FRACTION

        model = load_keyword_model()
        pool = make_keyword_sequences(2 * n + 20, split="test", seed=seed)  # every one holds a keyword
        train = make_keyword_sequences(
            estimation, split="train", seed=seed + 1, null_fraction=KEYWORD_NULL_FRACTION
        )  # fmt: skip
        evidence = train.spans[:, 1] > train.spans[:, 0]  # a keyword-less sequence's span is (0, 0)
        with torch.no_grad():
            keep = model(pool.inputs, pool.padding).argmax(1) == pool.labels
        context = MethodContext(
            layer=KEYWORD_LAYER, data=train.inputs, seed=seed, channel_dim=-1, padding_mask=_tokens_padding,
            embedding="embedding", options={"window": 1, "pad": 0},
        )  # fmt: skip
        # Degraded tokens become a filler (id classes + 1): an all-padding sequence has no tokens to attend to.
        tiles, sens, baseline, readout = (1, 2), (1,), 5, (KEYWORD_LAYER, "encoder.layers.1")
    chosen = keep.nonzero().flatten()[:n]
    if len(chosen) == 0:
        raise DataError("the model classifies none of the held-out sequences correctly")
    test = pool.subset(chosen)
    return SequenceSetup(
        task, model, test.inputs, test.labels, test.spans, test.padding, train.inputs, train.labels, evidence,
        context, tiles, sens, baseline, readout,
    )  # fmt: skip


def train_readout(
    setup: SequenceSetup,
    *,
    epochs: int = 8,
    batch_size: int = 64,
    lr: float = 1e-2,
    seed: int = 0,
    warmup: float | None = None,
):
    """A :class:`~pyroflows.attribution.ReadoutBottleneck` at the task's layer, trained on its training split.

    It trains on the sequences of the classes the evaluation explains (``motifs``: the positives; ``keywords``: those
    with a keyword).

    ``warmup`` (default: half the epochs) is the number of epochs over which the information loss's weight rises to
    ``beta`` (:meth:`~pyroflows.attribution.ReadoutBottleneck.fit`). Over one epoch of eight, the motif readout
    collapsed on two of three seeds to the mask that passes nothing (0 bits, loss 3.86 per sequence against 2.0
    trained), from which the saturated sigmoid gives no gradient back; over four it trained on every seed.
    """
    from pyroflows.attribution import ReadoutBottleneck
    from pyroflows.evaluation._utils import seeded

    context = setup.context
    if context.layer is None:
        raise DataError("train_readout: setup.context.layer names no bottleneck layer")
    with seeded(seed), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*cannot be split at.*")
        readout = ReadoutBottleneck(
            setup.model, context.layer, list(setup.readout_layers), channel_dim=context.channel_dim,
            padding_mask=context.padding_mask,
        )  # fmt: skip
        readout.estimate(setup.train_inputs)
        inputs, labels = setup.train_inputs, setup.train_labels
        # Trained where the evidence is: a negative's best mask passes nothing (no motif or keyword, no information),
        # and with many negatives the readout learns to close everywhere. The evaluation explains the others.
        inputs, labels = inputs[setup.train_evidence], labels[setup.train_evidence]
        batches = list(zip(inputs.split(batch_size), labels.split(batch_size), strict=True))
        readout.fit(batches, epochs=epochs, lr=lr, warmup=epochs / 2 if warmup is None else warmup)
    return readout


def evaluate_sequence_task(
    task: str,
    methods: Sequence[str] = SEQUENCE_METHODS,
    *,
    n: int = 200,
    estimation: int = 2000,
    seed: int = 0,
    readout_epochs: int = 8,
    n_masks: int = 20,
    sensitivity_steps: int = 6,
    sanity_images: int = 8,
    progress: bool = False,
) -> tuple[EvaluationTable, SequenceSetup]:
    """Evaluate ``methods`` on a shipped sequence task: degradation, span score, top-1 hit, Sensitivity-N, sanity.

    Returns:
        The table (with ``span`` and ``top1`` columns) and the set-up it ran on.
    """
    setup = sequence_task(task, n=n, estimation=estimation, seed=seed)
    if "readout" in methods:
        setup.context.readout = train_readout(setup, epochs=readout_epochs, seed=seed)
    with _quiet_captum():
        table = evaluate_methods(
            setup.model, setup.inputs, setup.target, list(methods), spans=setup.spans, padding=setup.padding,
            context=setup.context, degradation_tiles=setup.degradation_tiles,
            sensitivity_tiles=setup.sensitivity_tiles, sensitivity_steps=sensitivity_steps, n_masks=n_masks,
            sanity_images=sanity_images, baseline=setup.baseline, seed=seed, progress=progress,
        )  # fmt: skip
    return table, setup
