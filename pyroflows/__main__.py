"""``python -m pyroflows`` is the same as the ``pyroflows`` command."""

from pyroflows.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
