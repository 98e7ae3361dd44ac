"""Built-in data sets, generated from what installed packages carry (nothing is downloaded).

One module per family; each is re-exported here.
"""

from pyroflows.datasets.cluttered_digits import ClutteredDigits, make_cluttered_digits

__all__: list[str] = ["ClutteredDigits", "make_cluttered_digits"]
