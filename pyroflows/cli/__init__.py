"""The ``pyroflows`` command line.

Each capability registers its sub-commands from its own module (``flow``, ``diffusion``, ``attribute``,
``evaluate``) and ``demo`` runs a short tour of all of them on built-in data.

Example:
    $ pyroflows demo --out pyroflows-demo
    $ pyroflows flow fit data.npy --low 0 --high 1 --out flow.pt
    $ pyroflows --help
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence

from pyroflows import __version__
from pyroflows.cli._common import COMMANDS, OneLineParser
from pyroflows.errors import PyroflowsError, PyroflowsWarning

__all__ = ["main", "build_parser", "COMMANDS"]


def _selected_command(argv: Sequence[str]) -> str | None:
    """The sub-command named in ``argv`` (the first word that is not an option), if it is one of :data:`COMMANDS`."""
    for word in argv:
        if not word.startswith("-"):
            return word if word in COMMANDS else None
    return None


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """Build the argument parser.

    Args:
        argv: The arguments about to be parsed. When given, only the sub-command they name is imported and fully
            registered (the others are listed by name and summary); when ``None`` every sub-command is registered.

    Example:
        >>> parser = build_parser(["--version"])  # imports no command module
        >>> sorted(parser._subparsers._group_actions[0].choices)
        ['attribute', 'demo', 'diffusion', 'evaluate', 'flow']
    """
    import importlib

    parser = OneLineParser(
        prog="pyroflows",
        description=(
            "Compact-support normalizing flows, DDPM diffusion and Information Bottleneck Attribution, "
            "as Pyro objects. Run 'pyroflows COMMAND --help' for each command's options and an example."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  pyroflows demo --out pyroflows-demo",
    )
    parser.add_argument("--version", action="version", version=f"pyroflows {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    selected = None if argv is None else _selected_command(argv)
    for name, summary in COMMANDS.items():
        if argv is None or name == selected:
            importlib.import_module(f"pyroflows.cli.{name}").register(subparsers)
        else:
            subparsers.add_parser(name, help=summary, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 success, 2 bad input).

    Example:
        >>> main(["--version"])  # doctest: +SKIP
        pyroflows 0.1.0
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a one-line argument error (status 2)
        return exc.code if isinstance(exc.code, int) else 2
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    with warnings.catch_warnings():  # restores the caller's filters and ``showwarning`` afterwards
        # The package's own warnings are part of a command's output: always shown, one line each, even under a
        # caller's ``-W error``; other libraries' warnings follow the caller's filters.
        warnings.simplefilter("always", PyroflowsWarning)
        warnings.showwarning = _show_warning
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    """Run the parsed command under torchrun's process group (if any); the package's errors become one line."""
    from pyroflows import distributed

    try:
        with distributed.launched():  # under torchrun: join the process group; each command splits its work
            if distributed.active() and not getattr(args, "splits_work", False):
                # A command that does not split its work (sampling, scoring, the demo) runs once, on rank 0.
                if not distributed.is_main():
                    return 0
                with distributed.local():
                    result = args.handler(args)
            else:
                result = args.handler(args)
    except PyroflowsError as exc:
        print(f"pyroflows: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pyroflows: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    """Warnings during a command: one line each, ``pyroflows: warning: ...``."""
    print(f"pyroflows: warning: {' '.join(str(message).split())}", file=sys.stderr if file is None else file)
