"""Every command has ``--help`` with an example, and bad input ends in one line, not a traceback."""

import subprocess
import sys

import pytest

from pyroflows.cli import build_parser, main


def _commands(parser, prefix=()):
    for action in parser._actions:
        if action.__class__.__name__ == "_SubParsersAction":
            for name, sub in action.choices.items():
                yield (*prefix, name), sub
                yield from _commands(sub, (*prefix, name))


def test_every_command_has_help_with_an_example():
    commands = list(_commands(build_parser()))
    assert ("demo",) in [c for c, _ in commands]
    for command, sub in commands:
        text = sub.format_help()
        assert "example:" in text, f"'pyroflows {' '.join(command)} --help' shows no example"
        assert f"pyroflows {' '.join(command)}" in text


def test_no_command_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert "usage: pyroflows" in capsys.readouterr().out


def test_module_entry_point_runs():
    result = subprocess.run([sys.executable, "-m", "pyroflows", "--version"], capture_output=True, text=True)
    assert result.returncode == 0
    assert result.stdout.startswith("pyroflows ")


@pytest.mark.parametrize("argv", [["nonsense"], ["demo", "--seed", "x"]])
def test_argument_errors_are_one_line_with_status_2(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "error:" in err and "--help" in err


@pytest.mark.parametrize("argv", [["--version"], ["--help"], []])
def test_top_level_help_and_version_import_no_command_module(argv):
    """``pyroflows --help`` / ``--version`` list the commands without importing torch or any command module."""
    code = (
        "import sys, contextlib, io\n"
        "from pyroflows.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        f"    main({argv!r})\n"
        "heavy = sorted(m for m in sys.modules if m == 'torch' or m.startswith(('pyroflows.cli.flow', "
        "'pyroflows.cli.diffusion', 'pyroflows.cli.attribute', 'pyroflows.cli.evaluate', 'pyroflows.cli.demo')))\n"
        "assert not heavy, heavy\n"
        "assert 'pyroflows' in out.getvalue()\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_a_command_parses_with_only_its_own_module(capsys):
    with pytest.raises(SystemExit) as info:
        build_parser(["flow", "--help"]).parse_args(["flow", "--help"])
    assert info.value.code == 0
    assert "pyroflows flow" in capsys.readouterr().out
