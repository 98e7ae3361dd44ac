"""The bundled sequence models: a 1-D CNN for planted DNA motifs and a small transformer encoder for keywords.

* :class:`MotifCNN` reads one-hot sequences ``[N, 4, L]``: ``features.0`` a 9-wide convolution (no padding, so
  cell ``j`` sees bases ``j .. j + 8``), ``features.1`` its ReLU, ``features.2`` a max-pool by 2, ``features.3-4``
  a 5-wide convolution and ReLU, then global max pooling and a linear layer (2 classes: motif or not).
* :class:`KeywordTransformer` reads token ids ``[N, L]`` and an optional padding mask ``[N, L]`` (True at padding;
  derived from the pad id 0 when not given): ``embedding`` plus a learned position embedding, a two-layer
  ``nn.TransformerEncoder`` (``encoder.layers.0``, ``encoder.layers.1``; batch-first, so features are ``[N, L, C]``:
  use ``channel_dim=-1``), a max over the unpadded tokens and a linear layer.

Their weights in ``pyroflows/zoo/weights/`` are reproduced by ``python -m pyroflows.zoo.train_sequences``
(about a minute on one thread); the data come from :mod:`pyroflows.datasets.sequences`.

Example:
    >>> import torch
    >>> load_motif_model()(torch.zeros(2, 4, 100)).shape
    torch.Size([2, 2])
    >>> load_keyword_model()(torch.ones(2, 24, dtype=torch.long)).shape
    torch.Size([2, 4])
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
    """A two-layer transformer encoder classifier for token ids ``[N, L]``.

    Args:
        vocab: Vocabulary size (id 0 is padding).
        num_classes: Output classes.
        d_model: Embedding width.
        heads: Attention heads.
        layers: Encoder layers.
        max_length: Longest sequence (size of the position embedding).

    Example:
        >>> model = KeywordTransformer().eval()
        >>> tokens = torch.tensor([[5, 1, 7, 0, 0]])
        >>> torch.allclose(model(tokens), model(tokens, tokens == 0))
        True
    """

    def __init__(
        self, vocab: int = 32, num_classes: int = 4, d_model: int = 32, heads: int = 4, layers: int = 2,
        max_length: int = 64,
    ) -> None:  # fmt: skip
        super().__init__()
        self._config = {"vocab": vocab, "num_classes": num_classes, "d_model": d_model, "heads": heads,
                       "layers": layers, "max_length": max_length}  # fmt: skip
        self.embedding = nn.Embedding(vocab, d_model)
        self.position = nn.Embedding(max_length, d_model)
        layer = nn.TransformerEncoderLayer(d_model, heads, dim_feedforward=2 * d_model, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(d_model, num_classes)

    @property
    def config(self) -> dict[str, Any]:
        """The constructor arguments (what a checkpoint stores beside the weights)."""
        return dict(self._config)

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token plus position embeddings ``[N, L, d_model]``."""
        return self.embedding(tokens) + self.position.weight[: tokens.shape[1]]

    def forward(self, tokens: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``[N, num_classes]``; ``padding_mask`` ``[N, L]`` is True at padding (default ``tokens == 0``)."""
        if padding_mask is None:
            padding_mask = tokens == 0
        hidden = self.encoder(self.embed(tokens), src_key_padding_mask=padding_mask)
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
