"""The bundled models, their shipped weights and the scripts that reproduce them.

* :class:`DigitCNN`, :func:`load_bundled_model`, :func:`load_bundled_readout`: the cluttered-digits CNN and its
  readout bottleneck (``BUNDLED_LAYER`` is the default bottleneck layer); reproduced by
  ``python -m pyroflows.zoo.train_digits`` and ``python -m pyroflows.zoo.train_digits_readout``.
* :class:`MotifCNN`, :class:`KeywordTransformer`, :func:`load_motif_model`, :func:`load_keyword_model`: the
  sequence models (data in :mod:`pyroflows.datasets.sequences`); reproduced by
  ``python -m pyroflows.zoo.train_sequences``.

The weights live in ``pyroflows/zoo/weights/``. Every model is a :class:`~pyroflows.serialization.Checkpointable`,
so ``DigitCNN.load(path)`` reads a file written by ``model.save(path)``.

The zoo sits below the capabilities it serves: it may import :mod:`pyroflows.attribution` (the readout class),
:mod:`pyroflows.evaluation` (the training scripts' scores) and :mod:`pyroflows.datasets`, while those import it only
lazily (``pyroflows.attribution.load_bundled_model`` still works, through a module ``__getattr__``).

Example:
    >>> import torch
    >>> load_bundled_model()(torch.zeros(1, 1, 56, 56)).shape
    torch.Size([1, 10])
"""

from pyroflows.zoo.digits import (
    BUNDLED_LAYER,
    BUNDLED_READOUT_LAYERS,
    BUNDLED_READOUT_WEIGHTS,
    BUNDLED_TEST_ACCURACY,
    BUNDLED_WEIGHTS,
    DigitCNN,
    load_bundled_model,
    load_bundled_readout,
)
from pyroflows.zoo.sequences import (
    KEYWORD_LAYER,
    KEYWORD_WEIGHTS,
    MOTIF_LAYER,
    MOTIF_WEIGHTS,
    KeywordTransformer,
    MotifCNN,
    load_keyword_model,
    load_motif_model,
)

__all__ = [
    "DigitCNN",
    "load_bundled_model",
    "load_bundled_readout",
    "BUNDLED_LAYER",
    "BUNDLED_READOUT_LAYERS",
    "BUNDLED_TEST_ACCURACY",
    "BUNDLED_WEIGHTS",
    "BUNDLED_READOUT_WEIGHTS",
    "MotifCNN",
    "KeywordTransformer",
    "load_motif_model",
    "load_keyword_model",
    "MOTIF_LAYER",
    "KEYWORD_LAYER",
    "MOTIF_WEIGHTS",
    "KEYWORD_WEIGHTS",
]
