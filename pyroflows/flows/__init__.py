"""Compact-support normalizing flows as Pyro distributions.

Densities on an interval or a box :math:`[low, high]` (or a line segment): invertible radial and spline flows in
logit space, squashed onto the bounds by a transform whose codomain is the interval, so the distribution's
``support`` is right; maximum-likelihood fitting with SVI; an autoguide for interval-constrained latents.
"""

from pyroflows.flows.compact import BoundedTransformedDistribution, CompactFlow, default_transform
from pyroflows.flows.conditional import ConditionalCompactFlow, check_context
from pyroflows.flows.diagnostics import kl_to_posterior, psis_khat
from pyroflows.flows.fit import ConvergenceWarning, FitResult, check_data, fit
from pyroflows.flows.guide import AutoCompactFlow, interval_bounds
from pyroflows.flows.half_line import HalfLineSquashTransform
from pyroflows.flows.radial import Radial, radial
from pyroflows.flows.segment import OnSegment, SegmentDistribution, SegmentFlow
from pyroflows.flows.sigmoid_spline import SigmoidSpline, sigmoid_spline
from pyroflows.flows.squash import IntervalSquashTransform, to_bounds_dtype
from pyroflows.flows.two_slope_affine import TwoSlopeAffine, two_slope_affine

__all__ = [
    "AutoCompactFlow",
    "BoundedTransformedDistribution",
    "CompactFlow",
    "ConditionalCompactFlow",
    "ConvergenceWarning",
    "FitResult",
    "HalfLineSquashTransform",
    "IntervalSquashTransform",
    "OnSegment",
    "Radial",
    "SegmentDistribution",
    "SegmentFlow",
    "SigmoidSpline",
    "TwoSlopeAffine",
    "check_context",
    "check_data",
    "default_transform",
    "fit",
    "interval_bounds",
    "kl_to_posterior",
    "psis_khat",
    "radial",
    "sigmoid_spline",
    "to_bounds_dtype",
    "two_slope_affine",
]
