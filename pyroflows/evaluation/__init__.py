"""See the package README; public API re-exported here with ``__all__``."""

from pyroflows.evaluation.bounding_box import bounding_box_score

__all__: list[str] = ["bounding_box_score"]
