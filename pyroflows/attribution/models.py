"""The bundled cluttered-digits CNN and its shipped weights.

``DigitCNN`` is a small VGG-style network for ``1 x 56 x 56`` cluttered digits. Its layers are named by position
in two ``nn.Sequential`` blocks, so a dotted name such as ``"features.6"`` addresses one, and every ReLU is an
``nn.ReLU`` module (not ``F.relu``, not in place) so hook-based methods such as Captum's ``GuidedBackprop`` and the
bottlenecks see them. Feature sizes: ``features.0-2`` 16 x 56 x 56 -> 28 x 28, ``features.3-5`` 32 x 28 x 28 ->
14 x 14, ``features.6-8`` 64 x 14 x 14 -> 7 x 7, ``features.9-10`` 32 x 7 x 7.

The weights in ``pyroflows/weights/digit_cnn.pt`` are reproduced by ``python -m pyroflows.attribution.train_bundled``.

Example:
    >>> import torch
    >>> model = load_bundled_model()
    >>> model(torch.zeros(2, 1, 56, 56)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from pyroflows.serialization import load_checkpoint

__all__ = ["DigitCNN", "load_bundled_model", "BUNDLED_LAYER", "BUNDLED_WEIGHTS", "BUNDLED_TEST_ACCURACY"]

_WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
BUNDLED_WEIGHTS = _WEIGHTS_DIR / "digit_cnn.pt"
#: Default bottleneck position in the bundled model: the output of the second conv block's ReLU (32 x 28 x 28),
#: an early-middle layer like the paper's ``conv4_1`` in VGG-16 (1/2 of the input resolution here).
BUNDLED_LAYER = "features.4"
#: Accuracy of the shipped weights on ``make_cluttered_digits(2000, split="test", seed=0)``, printed by the
#: training script and checked by the test suite.
BUNDLED_TEST_ACCURACY = 0.8795


class DigitCNN(nn.Module):
    """Four 3x3 conv blocks and a two-layer classifier; about 92k parameters.

    Args:
        num_classes: Number of output logits.
        size: Input side length (must be divisible by 8).

    Example:
        >>> DigitCNN()(torch.zeros(1, 1, 56, 56)).shape
        torch.Size([1, 10])
    """

    def __init__(self, num_classes: int = 10, size: int = 56) -> None:
        super().__init__()
        if size % 8:
            raise ValueError(f"size must be divisible by 8, got {size}")
        self.config = {"num_classes": num_classes, "size": size}
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
            nn.Conv2d(64, 32, 3, padding=1),
            nn.ReLU(),
        )
        side = size // 8
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(32 * side * side, 32),
            nn.ReLU(),
            nn.Linear(32, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[N, num_classes]`` for images ``[N, 1, size, size]``."""
        return self.classifier(self.features(x))


def load_bundled_model(device: torch.device | str | None = None) -> DigitCNN:
    """The shipped cluttered-digits CNN, in eval mode.

    Args:
        device: Where to put it (default CPU).

    Returns:
        A :class:`DigitCNN` with the weights of ``pyroflows/weights/digit_cnn.pt``.

    Raises:
        CheckpointError: the weights file is missing or corrupt (a broken installation).

    Example:
        >>> load_bundled_model().training
        False
    """
    checkpoint = load_checkpoint(BUNDLED_WEIGHTS, kind="DigitCNN")
    model = DigitCNN(**checkpoint["config"])
    model.load_state_dict(checkpoint["state_dict"])
    return model.to(device).eval()
