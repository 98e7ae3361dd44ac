"""Built-in data sets, generated from what installed packages carry (nothing is downloaded).

One module per family; each is re-exported here.
"""

from pyroflows.datasets.bounded import (
    BOUNDED_TARGETS,
    BoundedTarget,
    bimodal,
    bounded_target,
    box_2d,
    edge_peaked,
    piecewise_uniform,
    u_shaped,
)
from pyroflows.datasets.cluttered_digits import ClutteredDigits, make_cluttered_digits
from pyroflows.datasets.sequences import SequenceTask, make_keyword_sequences, make_motif_sequences, span_masks
from pyroflows.datasets.toy2d import DATASETS as TOY2D_DATASETS
from pyroflows.datasets.toy2d import make_dataset

__all__: list[str] = [
    "ClutteredDigits",
    "make_cluttered_digits",
    "make_dataset",
    "SequenceTask",
    "make_motif_sequences",
    "make_keyword_sequences",
    "span_masks",
    "TOY2D_DATASETS",
    "BOUNDED_TARGETS",
    "BoundedTarget",
    "bimodal",
    "bounded_target",
    "box_2d",
    "edge_peaked",
    "piecewise_uniform",
    "u_shaped",
]
