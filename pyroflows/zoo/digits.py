"""The bundled cluttered-digits CNN and its shipped weights.

``DigitCNN`` is a small VGG-style network for ``1 x 56 x 56`` cluttered digits. Its layers are named by position
in two ``nn.Sequential`` blocks, so a dotted name such as ``"features.6"`` addresses one, and every ReLU is an
``nn.ReLU`` module (not ``F.relu``, not in place) so hook-based methods such as Captum's ``GuidedBackprop`` and the
bottlenecks see them. Feature sizes: ``features.0-2`` 16 x 56 x 56 -> 28 x 28, ``features.3-5`` 32 x 28 x 28 ->
14 x 14, ``features.6-8`` 64 x 14 x 14 -> 7 x 7, ``features.9-10`` 64 x 7 x 7; the classifier max-pools globally
(``classifier.0``) before two linear layers.

The weights in ``pyroflows/zoo/weights/digit_cnn.pt`` are reproduced by ``python -m pyroflows.zoo.train_digits``.

Example:
    >>> import torch
    >>> model = load_bundled_model()
    >>> model(torch.zeros(2, 1, 56, 56)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from pyroflows.errors import DataError
from pyroflows.serialization import Checkpointable

if TYPE_CHECKING:
    from pyroflows.attribution import ReadoutBottleneck

__all__ = [
    "DigitCNN",
    "load_bundled_model",
    "load_bundled_readout",
    "BUNDLED_LAYER",
    "BUNDLED_READOUT_LAYERS",
    "BUNDLED_WEIGHTS",
    "BUNDLED_READOUT_WEIGHTS",
    "BUNDLED_TEST_ACCURACY",
]

_WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
BUNDLED_WEIGHTS = _WEIGHTS_DIR / "digit_cnn.pt"
#: Default bottleneck position in the bundled model: the output of the third convolution (64 x 14 x 14, before its
#: ReLU), an early-middle layer like the paper's ``conv4_1`` in VGG-16 (a quarter of the input resolution). It gave
#: the best bounding-box score of the layers tried (``features.3``: 0.81, ``.6``: 0.82, ``.7``: 0.81, ``.9``: 0.69
#: on 40 held-out images).
BUNDLED_LAYER = "features.6"
#: Accuracy of the shipped weights on ``make_cluttered_digits(2000, split="test", seed=0)``, printed by the
#: training script and checked by the test suite.
BUNDLED_TEST_ACCURACY = 0.9515


class DigitCNN(Checkpointable, nn.Module):
    """Four 3x3 conv blocks, global max pooling and a two-layer classifier; about 65k parameters.

    Args:
        num_classes: Number of output logits.
        size: Input side length (must be divisible by 8; any size works after the global pooling, but the
            shipped weights were trained at 56).

    Raises:
        DataError: ``size`` is not a positive multiple of 8.

    Example:
        >>> DigitCNN()(torch.zeros(1, 1, 56, 56)).shape
        torch.Size([1, 10])
        >>> DigitCNN().config
        {'num_classes': 10, 'size': 56}
    """

    def __init__(self, num_classes: int = 10, size: int = 56) -> None:
        super().__init__()
        if size % 8:
            raise DataError(f"size must be divisible by 8, got {size}")
        self.num_classes, self.size = num_classes, size
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(64, 64, 3, padding=1),
            nn.ReLU(),
        )
        # Global max pooling: the digit may be anywhere, and a position-specific linear read-out underfits.
        self.classifier = nn.Sequential(
            nn.AdaptiveMaxPool2d(1),
            nn.Flatten(),
            nn.Linear(64, 64),
            nn.ReLU(),
            nn.Linear(64, num_classes),
        )

    @property
    def config(self) -> dict[str, Any]:
        """The constructor arguments (what a checkpoint stores beside the weights)."""
        return {"num_classes": self.num_classes, "size": self.size}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[N, num_classes]`` for images ``[N, 1, size, size]``."""
        return self.classifier(self.features(x))


def load_bundled_model(device: torch.device | str | None = None) -> DigitCNN:
    """The shipped cluttered-digits CNN, in eval mode.

    Args:
        device: Where to put it (default CPU).

    Returns:
        A :class:`DigitCNN` with the weights of ``pyroflows/zoo/weights/digit_cnn.pt``.

    Raises:
        CheckpointError: the weights file is missing or corrupt (a broken installation).

    Example:
        >>> load_bundled_model().training
        False
    """
    # float32, as its weights and the digit images are, whatever torch's default dtype (a float64 default would
    # build a float64 CNN that the float32 images cannot run through).
    return DigitCNN.load(BUNDLED_WEIGHTS).to(device=device, dtype=torch.float32).eval()


BUNDLED_READOUT_WEIGHTS = _WEIGHTS_DIR / "digit_cnn_readout.pt"
#: The layers whose outputs the bundled readout reads: each conv block's ReLU (56, 28, 14 and 7 pixels wide).
BUNDLED_READOUT_LAYERS = ("features.1", "features.4", "features.7", "features.10")


def load_bundled_readout(model: nn.Module | None = None) -> ReadoutBottleneck:
    """The shipped readout bottleneck for the bundled CNN (at ``BUNDLED_LAYER``), ready to ``attribute``.

    Reproduced by ``python -m pyroflows.zoo.train_digits_readout``.

    Args:
        model: The bundled model (loaded if not given).

    Returns:
        A trained :class:`~pyroflows.attribution.ReadoutBottleneck`.

    Example:
        >>> readout = load_bundled_readout()
        >>> readout.attribute(torch.zeros(1, 1, 56, 56)).shape
        torch.Size([1, 56, 56])
    """
    from pyroflows.attribution import ReadoutBottleneck

    return ReadoutBottleneck.load(BUNDLED_READOUT_WEIGHTS, load_bundled_model() if model is None else model)
