"""Run-time switches read from the environment."""

from __future__ import annotations

import os

SMOKE_ENV = "PYROFLOWS_SMOKE"


def smoke_mode() -> bool:
    """Whether fast "smoke" mode is on (``PYROFLOWS_SMOKE=1``).

    Notebooks, the demo and examples shrink epochs and sizes in smoke mode so the test suite can execute
    them in seconds. Any value other than ``""``, ``"0"``, ``"false"`` or ``"no"`` turns it on.

    Example:
        >>> import os
        >>> os.environ["PYROFLOWS_SMOKE"] = "1"
        >>> smoke_mode()
        True
        >>> del os.environ["PYROFLOWS_SMOKE"]
        >>> smoke_mode()
        False
    """
    return os.environ.get(SMOKE_ENV, "").strip().lower() not in ("", "0", "false", "no")
