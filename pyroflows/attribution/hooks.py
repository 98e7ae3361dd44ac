"""The old home of the layer split and the tail optimiser, kept so existing imports work.

The layer split (:func:`resolve_layer`, :func:`frozen`, :class:`LayerSplit`, the hook fallback) now lives in
:mod:`pyroflows.attribution.layers`, the optimised tail (:func:`optimize_tail`) in :mod:`pyroflows.attribution.tail`.

Example:
    >>> from pyroflows.attribution.hooks import LayerSplit
    >>> from pyroflows.attribution.layers import LayerSplit as Moved
    >>> LayerSplit is Moved
    True
"""

from pyroflows.attribution.layers import (
    HeadOutput,
    LayerNotFoundError,
    LayerSplit,
    LayerSplitError,
    LayerSplitWarning,
    frozen,
    replace_output,
    resolve_layer,
)
from pyroflows.attribution.tail import optimize_tail

__all__ = [
    "resolve_layer",
    "frozen",
    "replace_output",
    "LayerSplit",
    "HeadOutput",
    "optimize_tail",
    "LayerNotFoundError",
    "LayerSplitError",
    "LayerSplitWarning",
]
