"""See the package README; public API re-exported here with ``__all__``."""

__all__: list[str] = []
