"""The bundled sequence models: a 1-D CNN for planted DNA motifs and a small transformer encoder for keywords.

* :class:`MotifCNN` reads one-hot sequences ``[N, 4, L]``: ``features.0`` a 9-wide convolution (no padding, so
  cell ``j`` sees bases ``j .. j + 8``), ``features.1`` its ReLU, ``features.2`` a max-pool by 2, ``features.3-4``
  a 5-wide convolution and ReLU, then global max pooling and a linear layer (2 classes: motif or not).
* :class:`KeywordTransformer` reads token ids ``[N, L]`` and an optional padding mask ``[N, L]`` (True at padding;
  derived from the pad id 0 when not given): ``embedding`` plus a learned position embedding, a two-layer
  ``nn.TransformerEncoder`` (``encoder.layers.0``, ``encoder.layers.1``; batch-first, so features are ``[N, L, C]``:
  use ``channel_dim=-1``) whose self-attention is local (each token attends to the tokens at most ``window = 1``
  positions away, sliding-window attention as in Longformer's local attention), a max over the unpadded tokens and a
  linear layer over 5 classes (the 4 keywords and "no keyword").

  Why local attention and a "no keyword" class (issue 13, measured on the earlier model with global attention and 4
  classes): its first layer copied the keyword's information to the other tokens, and one class was predicted from
  the absence of the other keywords. With the first layer's output at the keyword replaced by noise, the sequences
  of two of its four classes kept 99% of their target probability; for one of them, keeping only the keyword's
  position left 44%. A bottleneck after the first layer then rightly found the label at other positions (top-1 hit
  0.65). With a window of 1 and negatives, over three training seeds, noising the keyword's position leaves at most
  1% and keeping only it 99%: after the first layer the keyword's information is at the keyword.

Their weights in ``pyroflows/zoo/weights/`` are reproduced by ``python -m pyroflows.zoo.train_sequences``
(about a minute on one thread); the data come from :mod:`pyroflows.datasets.sequences`.

Example:
    >>> import torch
    >>> load_motif_model()(torch.zeros(2, 4, 100)).shape
    torch.Size([2, 2])
    >>> load_keyword_model()(torch.ones(2, 24, dtype=torch.long)).shape
    torch.Size([2, 5])
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from pyroflows.serialization import Checkpointable

__all__ = [
    "MotifCNN",
    "KeywordTransformer",
    "load_motif_model",
    "load_keyword_model",
    "MOTIF_WEIGHTS",
    "KEYWORD_WEIGHTS",
    "MOTIF_LAYER",
    "KEYWORD_LAYER",
]

_WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
MOTIF_WEIGHTS = _WEIGHTS_DIR / "motif_cnn.pt"
KEYWORD_WEIGHTS = _WEIGHTS_DIR / "keyword_transformer.pt"
#: Default bottleneck layer of the motif CNN: the first convolution's ReLU (16 x 92 cells for 100 bases).
MOTIF_LAYER = "features.1"
#: Default bottleneck layer of the keyword transformer: the output of the first encoder layer ([N, L, 32]).
KEYWORD_LAYER = "encoder.layers.0"


class MotifCNN(Checkpointable, nn.Module):
    """A small 1-D CNN for one-hot sequences ``[N, 4, L]`` (about 2.3k parameters).

    Example:
        >>> MotifCNN()(torch.zeros(3, 4, 50)).shape
        torch.Size([3, 2])
    """

    def __init__(self, channels: int = 16, num_classes: int = 2) -> None:
        super().__init__()
        self._config = {"channels": channels, "num_classes": num_classes}
        self.features = nn.Sequential(
            nn.Conv1d(4, channels, 9),
            nn.ReLU(),
            nn.MaxPool1d(2),
            nn.Conv1d(channels, channels, 5),
            nn.ReLU(),
        )
        self.classifier = nn.Sequential(nn.AdaptiveMaxPool1d(1), nn.Flatten(), nn.Linear(channels, num_classes))

    @property
    def config(self) -> dict[str, Any]:
        """The constructor arguments (what a checkpoint stores beside the weights)."""
        return dict(self._config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[N, num_classes]``."""
        return self.classifier(self.features(x))


class KeywordTransformer(Checkpointable, nn.Module):
    """A two-layer transformer encoder classifier for token ids ``[N, L]``, with local self-attention.

    Args:
        vocab: Vocabulary size (id 0 is padding).
        num_classes: Output classes (5: the 4 keywords and "no keyword").
        d_model: Embedding width.
        heads: Attention heads.
        layers: Encoder layers.
        max_length: Longest sequence (size of the position embedding).
        window: Each token attends to the unpadded tokens at most ``window`` positions away (and to itself), so the
            output of encoder layer ``l`` (from 0) at a position depends on the tokens within ``(l + 1) * window``
            of it; ``None``: global attention.

    Example:
        >>> model = KeywordTransformer().eval()
        >>> tokens = torch.tensor([[5, 1, 7, 0, 0]])
        >>> torch.allclose(model(tokens), model(tokens, tokens == 0))
        True
        >>> model.attention_mask(tokens == 0)[0].int()  # True: not attended (row: query, column: key)
        tensor([[0, 0, 1, 1, 1],
                [0, 0, 0, 1, 1],
                [1, 0, 0, 1, 1],
                [1, 1, 0, 0, 1],
                [1, 1, 1, 1, 0]], dtype=torch.int32)
    """

    def __init__(
        self, vocab: int = 32, num_classes: int = 5, d_model: int = 32, heads: int = 4, layers: int = 2,
        max_length: int = 64, window: int | None = 1,
    ) -> None:  # fmt: skip
        super().__init__()
        if window is not None and (isinstance(window, bool) or not isinstance(window, int) or window < 0):
            raise ValueError(f"window must be a non-negative integer or None (global attention), got {window!r}")
        self._config = {"vocab": vocab, "num_classes": num_classes, "d_model": d_model, "heads": heads,
                       "layers": layers, "max_length": max_length, "window": window}  # fmt: skip
        self.heads = heads
        self.window = window
        self.embedding = nn.Embedding(vocab, d_model)
        self.position = nn.Embedding(max_length, d_model)
        layer = nn.TransformerEncoderLayer(d_model, heads, dim_feedforward=2 * d_model, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(d_model, num_classes)

    @property
    def config(self) -> dict[str, Any]:
        """The constructor arguments (what a checkpoint stores beside the weights)."""
        return dict(self._config)

    @classmethod
    def from_config(cls, config: dict[str, Any], **kwargs: Any) -> KeywordTransformer:
        """Rebuild from a saved config; one saved before ``window`` existed had global attention (``window=None``)."""
        return cls(**{"window": None, **config}, **kwargs)

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token plus position embeddings ``[N, L, d_model]``."""
        return self.embedding(tokens) + self.position.weight[: tokens.shape[1]]

    def attention_mask(self, padding_mask: torch.Tensor) -> torch.Tensor:
        """``[N, L, L]``, True where query ``i`` may not attend to key ``j``.

        Key ``j`` is blocked when it is padded or more than ``window`` positions away. Every token may attend to
        itself, so no row is empty (a padded query's output is left out of the pooling, and no unpadded query attends
        to it).
        """
        length = padding_mask.shape[1]
        position = torch.arange(length, device=padding_mask.device)
        offset = position[:, None] - position[None, :]
        blocked = padding_mask[:, None, :].expand(-1, length, -1)
        if self.window is not None:
            blocked = blocked | (offset.abs() > self.window)
        return blocked & (offset != 0)

    def forward(self, tokens: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``[N, num_classes]``; ``padding_mask`` ``[N, L]`` is True at padding (default ``tokens == 0``)."""
        if padding_mask is None:
            padding_mask = tokens == 0
        padding_mask = padding_mask.bool()
        # One mask per sequence and head ([N * heads, L, L]): padding and the window in one boolean mask.
        mask = self.attention_mask(padding_mask).repeat_interleave(self.heads, 0)
        hidden = self.encoder(self.embed(tokens), mask=mask)
        # Max pooling over the unpadded tokens: one token can decide (a mean would reward spreading its information
        # over every position).
        pooled = hidden.masked_fill(padding_mask.unsqueeze(-1), float("-inf")).amax(1)
        return self.head(pooled)


def load_motif_model() -> MotifCNN:
    """The shipped motif CNN in eval mode (held-out accuracy in its checkpoint's ``extra``).

    Raises:
        CheckpointError: the weights file is missing or corrupt.
    """
    return MotifCNN.load(MOTIF_WEIGHTS).float().eval()  # float32 like its weights and data, whatever the default


def load_keyword_model() -> KeywordTransformer:
    """The shipped keyword transformer in eval mode.

    Raises:
        CheckpointError: the weights file is missing or corrupt.
    """
    return KeywordTransformer.load(KEYWORD_WEIGHTS).float().eval()  # float32 like its weights, whatever the default
