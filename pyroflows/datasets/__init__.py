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

__all__: list[str] = [
    "BOUNDED_TARGETS",
    "BoundedTarget",
    "bimodal",
    "bounded_target",
    "box_2d",
    "edge_peaked",
    "piecewise_uniform",
    "u_shaped",
]
