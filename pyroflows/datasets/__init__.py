"""Built-in data sets, generated from what installed packages carry (nothing is downloaded).

One module per family; each is re-exported here.
"""

__all__: list[str] = []
