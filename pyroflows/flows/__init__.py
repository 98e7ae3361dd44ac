r"""Compact-support normalizing flows as Pyro distributions.

Densities on an interval or a box :math:`[low, high]` (or a line segment): invertible radial and spline flows in
logit space, squashed onto the bounds by a transform whose codomain is the interval, so the distribution's
``support`` is right; half-lines ``[low, inf)`` / ``(-inf, high]`` through an exp squash; conditional densities
:math:`p(y \mid x)` with the same layers (``ConditionalCompactFlow``); maximum-likelihood fitting with SVI; an
autoguide for interval-constrained latents, amortised for per-datum latents.

The layer families (``radial``, ``spline``, ``autoregressive``) and bases are registries in
:mod:`pyroflows.flows.families`: a new family is one new file and one ``FAMILIES.register`` line there.
"""

from pyroflows.flows.bound_exponent import BoundExponent, bound_exponents, hill_exponent
from pyroflows.flows.compact import BoundedTransformedDistribution, CompactFlow
from pyroflows.flows.conditional import ConditionalCompactFlow, check_context
from pyroflows.flows.diagnostics import kl_to_posterior, psis_khat
from pyroflows.flows.families import BASES, FAMILIES, FlowFamily, LayerOptions, default_transform
from pyroflows.flows.fit import ConvergenceWarning, FitResult, check_data, fit, log_prob_chunked
from pyroflows.flows.guide import AutoCompactFlow, interval_bounds, support_bounds
from pyroflows.flows.half_line import HalfLineSquashTransform
from pyroflows.flows.radial import Radial, radial
from pyroflows.flows.segment import OnSegment, SegmentDistribution, SegmentFlow
from pyroflows.flows.sigmoid_spline import SigmoidSpline, sigmoid_spline
from pyroflows.flows.squash import IntervalSquashTransform, to_bounds_dtype
from pyroflows.flows.two_slope_affine import TwoSlopeAffine, two_slope_affine

__all__ = [
    "AutoCompactFlow",
    "BASES",
    "BoundExponent",
    "FAMILIES",
    "FlowFamily",
    "LayerOptions",
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
    "bound_exponents",
    "check_context",
    "check_data",
    "default_transform",
    "fit",
    "hill_exponent",
    "interval_bounds",
    "kl_to_posterior",
    "log_prob_chunked",
    "psis_khat",
    "radial",
    "sigmoid_spline",
    "support_bounds",
    "to_bounds_dtype",
    "two_slope_affine",
]
