"""Evaluation of attribution maps: the IBA paper's four metrics, Captum baselines and the comparison table.

Metrics follow Captum's style, ``metric(model, inputs, attributions, target=..., ...)`` returning one score or
curve per example: :func:`degradation_curves` / :func:`degradation_score` (MoRF/LeRF),
:func:`sensitivity_n`, :func:`cascading_randomization` (sanity check) and :func:`bounding_box_score`.
:func:`evaluate_methods` runs them all for every method of the registry :data:`METHODS` (:func:`available_methods`);
:func:`evaluate_bundled` runs the protocol on the bundled cluttered-digits CNN and writes the table and plots.

The registry and its contract are in :mod:`~pyroflows.evaluation.methods`; the members register themselves when
their module is imported below (Captum's methods, LRP, then the bottlenecks: the order of ``--methods`` choices).
"""

from pyroflows.evaluation.bounding_box import bounding_box_score
from pyroflows.evaluation.degradation import DegradationCurves, degradation_curves, degradation_score, normalize_curves

# isort: split
# The members register themselves when imported, in this order (the order of the --methods choices).
from pyroflows.evaluation.captum_methods import RandomAttribution

# isort: split
from pyroflows.evaluation.bottleneck_methods import readout_for_model

# isort: split
from pyroflows.evaluation.bundled import evaluate_bundled, evaluate_sequences  # noqa: I001
from pyroflows.evaluation.methods import (
    DEFAULT_METHODS,
    METHODS,
    SEQUENCE_METHODS,
    AttributeFn,
    ConfiguredAttribution,
    MethodContext,
    MethodFactory,
    MethodNotSupported,
    available_methods,
    check_methods,
    make_attribute_fn,
    make_attribution,
    reduce_channels,
    register_method,
)
from pyroflows.evaluation.protocol import (
    SANITY_THRESHOLD,
    TABLE_COLUMNS,
    EvaluationTable,
    MethodEvaluation,
    evaluate_methods,
)
from pyroflows.evaluation.sanity_check import (
    SanityCheck,
    cascading_randomization,
    map_ssim,
    minmax_normalize,
    randomizable_layers,
)
from pyroflows.evaluation.sensitivity_n import SensitivityN, default_sensitivity_ns, pearson_rows, sensitivity_n
from pyroflows.evaluation.span import span_score, top1_hit

__all__ = [
    "METHODS",
    "MethodFactory",
    "AttributeFn",
    "ConfiguredAttribution",
    "RandomAttribution",
    "SEQUENCE_METHODS",
    "make_attribution",
    "readout_for_model",
    "DEFAULT_METHODS",
    "DegradationCurves",
    "EvaluationTable",
    "MethodContext",
    "MethodEvaluation",
    "MethodNotSupported",
    "SANITY_THRESHOLD",
    "SanityCheck",
    "SensitivityN",
    "TABLE_COLUMNS",
    "available_methods",
    "check_methods",
    "bounding_box_score",
    "cascading_randomization",
    "default_sensitivity_ns",
    "degradation_curves",
    "degradation_score",
    "evaluate_methods",
    "evaluate_bundled",
    "evaluate_sequences",
    "make_attribute_fn",
    "map_ssim",
    "minmax_normalize",
    "normalize_curves",
    "pearson_rows",
    "randomizable_layers",
    "reduce_channels",
    "register_method",
    "sensitivity_n",
    "span_score",
    "top1_hit",
]
