"""Information Bottleneck Attribution (Schulz et al., ICLR 2020) as Pyro model/guide pairs.

* :class:`PerSampleBottleneck`: optimises one mask per image with ``pyro.infer.SVI`` (all images of a batch
  together); only the part of the network after the layer runs at each step.
* :class:`ReadoutBottleneck`: a readout network trained as an amortised guide; attributes in one forward pass.
* :class:`InputBottleneck`: InputIBA, a bottleneck on the input whose mask is bounded by a layer bottleneck's map.
* All three are Captum attributions (``attribute(inputs, target, additional_forward_args)``); ``channel_dim`` reads
  ``[N, L, C]`` layers, sequence maps are put on the input's positions through the layer's receptive field
  (:mod:`~pyroflows.attribution.layout`), and padding masks are respected.
* :class:`MotifCNN`, :class:`KeywordTransformer` and their loaders: the shipped sequence models (data in
  :mod:`pyroflows.datasets.sequences`).
* :class:`DigitCNN`, :func:`load_bundled_model`, :func:`load_bundled_readout`: the shipped cluttered-digits CNN and
  its readout (``BUNDLED_LAYER`` is the default bottleneck layer). These live in :mod:`pyroflows.zoo` and are
  re-exported here lazily (a module ``__getattr__``), so importing the attribution package does not import the zoo,
  which itself imports attribution.
* Building blocks, one concept per module: :class:`BottleneckBase` (:mod:`.base`: the shared base class, its one
  ``estimate`` and ``set_statistics``), :func:`per_element_capacity` (the closed-form KL) and :func:`gaussian_blur`
  (:mod:`.capacity`), :class:`FeatureStatistics` (:mod:`.statistics`, streaming moments), :class:`LayerSplit` /
  :func:`frozen` / :func:`resolve_layer` (:mod:`.layers`: reaching a layer without modifying the model),
  :func:`optimize_tail` (:mod:`.tail`: the tail rebuilt for many forward and backward passes),
  :class:`MaskedFeatureNormal` (:mod:`.distributions`: the bottleneck's :math:`Z`, whose KL is computed once per
  image, not once per noise copy) and :class:`ClosedFormKLELBO` (:mod:`.elbo`).
"""

from pyroflows.attribution.base import BottleneckBase
from pyroflows.attribution.capacity import gaussian_blur, lambda_from_alpha, per_element_capacity
from pyroflows.attribution.distributions import MaskedFeatureNormal
from pyroflows.attribution.elbo import ClosedFormKLELBO
from pyroflows.attribution.input_bottleneck import InputBottleneck
from pyroflows.attribution.layers import (
    LayerNotFoundError,
    LayerSplit,
    LayerSplitError,
    LayerSplitWarning,
    frozen,
    resolve_layer,
)
from pyroflows.attribution.layout import positions_to_input, receptive_field_weights
from pyroflows.attribution.per_sample import PerSampleBottleneck
from pyroflows.attribution.readout import ReadoutBottleneck, ReadoutNetwork
from pyroflows.attribution.statistics import FeatureStatistics
from pyroflows.attribution.tail import optimize_tail

#: Names re-exported from :mod:`pyroflows.zoo` on first access (the zoo imports this package, not the reverse).
_ZOO_NAMES = (
    "DigitCNN",
    "load_bundled_model",
    "load_bundled_readout",
    "BUNDLED_LAYER",
    "BUNDLED_READOUT_LAYERS",
    "BUNDLED_TEST_ACCURACY",
    "MotifCNN",
    "KeywordTransformer",
    "load_motif_model",
    "load_keyword_model",
    "MOTIF_LAYER",
    "KEYWORD_LAYER",
)


def __getattr__(name: str) -> object:
    if name in _ZOO_NAMES:
        import pyroflows.zoo

        return getattr(pyroflows.zoo, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_ZOO_NAMES))


__all__ = [
    "PerSampleBottleneck",
    "BottleneckBase",
    "ReadoutBottleneck",
    "ReadoutNetwork",
    "FeatureStatistics",
    "LayerSplit",
    "frozen",
    "resolve_layer",
    "per_element_capacity",
    "gaussian_blur",
    "lambda_from_alpha",
    "ClosedFormKLELBO",
    "MaskedFeatureNormal",
    "optimize_tail",
    "InputBottleneck",
    "LayerNotFoundError",
    "LayerSplitError",
    "LayerSplitWarning",
    "receptive_field_weights",
    "positions_to_input",
    *_ZOO_NAMES,
]
