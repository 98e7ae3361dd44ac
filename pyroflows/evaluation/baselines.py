"""The attribution methods' former home, kept so ``from pyroflows.evaluation.baselines import ...`` still works.

The registry and the methods' contract are in :mod:`~pyroflows.evaluation.methods`, Captum's methods in
:mod:`~pyroflows.evaluation.captum_methods` and :mod:`~pyroflows.evaluation.lrp`, the bottlenecks in
:mod:`~pyroflows.evaluation.bottleneck_methods`.

Example:
    >>> from pyroflows.evaluation.baselines import available_methods
    >>> "per-sample" in available_methods()
    True
"""

from pyroflows.evaluation.bottleneck_methods import readout_for_model
from pyroflows.evaluation.captum_methods import RandomAttribution
from pyroflows.evaluation.lrp import lrp_compatible_copy
from pyroflows.evaluation.methods import (
    DEFAULT_METHODS,
    METHODS,
    SEQUENCE_METHODS,
    AttributeFn,
    ConfiguredAttribution,
    MethodContext,
    MethodNotSupported,
    available_methods,
    make_attribute_fn,
    make_attribution,
    reduce_channels,
    register_method,
)

__all__ = [
    "AttributeFn",
    "MethodContext",
    "MethodNotSupported",
    "METHODS",
    "available_methods",
    "make_attribute_fn",
    "make_attribution",
    "register_method",
    "reduce_channels",
    "ConfiguredAttribution",
    "RandomAttribution",
    "readout_for_model",
    "lrp_compatible_copy",
    "DEFAULT_METHODS",
    "SEQUENCE_METHODS",
]
