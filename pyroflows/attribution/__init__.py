"""Information Bottleneck Attribution (Schulz et al., ICLR 2020) as Pyro model/guide pairs.

* :class:`PerSampleBottleneck`: optimises one mask per image with ``pyro.infer.SVI``.
* :class:`DigitCNN`, :func:`load_bundled_model`: the shipped cluttered-digits CNN (``BUNDLED_LAYER`` is its
  default bottleneck layer).
"""

from pyroflows.attribution.capacity import gaussian_blur, lambda_from_alpha, per_element_capacity
from pyroflows.attribution.hooks import LayerSplit, frozen, resolve_layer
from pyroflows.attribution.models import BUNDLED_LAYER, BUNDLED_TEST_ACCURACY, DigitCNN, load_bundled_model
from pyroflows.attribution.per_sample import PerSampleBottleneck
from pyroflows.attribution.readout import ReadoutBottleneck, ReadoutNetwork
from pyroflows.attribution.statistics import FeatureStatistics

__all__ = [
    "PerSampleBottleneck",
    "ReadoutBottleneck",
    "ReadoutNetwork",
    "DigitCNN",
    "load_bundled_model",
    "BUNDLED_LAYER",
    "BUNDLED_TEST_ACCURACY",
    "FeatureStatistics",
    "LayerSplit",
    "frozen",
    "resolve_layer",
    "per_element_capacity",
    "gaussian_blur",
    "lambda_from_alpha",
]
