"""Static checks in the test run: mypy (configured in setup.cfg) and ruff (configured in pyproject.toml).

Each tool runs from the repository root in this Python environment (``python -m mypy``, ``python -m ruff``, which
the ``test`` extra installs), and its output is the failure message. ruff checks the package, the tests and the
benchmark scripts; the docstring rules (D) apply to the package only (pyproject's per-file-ignores).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINTED = ["pyroflows", "tests", "benchmarks"]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=900)


def _report(result: subprocess.CompletedProcess[str]) -> str:
    return f"`{' '.join(result.args[2:])}` exited with {result.returncode}:\n{result.stdout}{result.stderr}"


@pytest.fixture
def mypy_cache(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """mypy's incremental cache: kept in pytest's cache folder between runs, else a fresh one (a cold run)."""
    cache = getattr(request.config, "cache", None)  # None under -p no:cacheprovider
    return cache.mkdir("mypy") if cache is not None else tmp_path / "mypy"


def test_mypy_finds_no_errors(mypy_cache: Path) -> None:
    # The files and the settings come from setup.cfg's [mypy] section, read from the repository root.
    result = _run("mypy", "--cache-dir", str(mypy_cache))
    assert result.returncode == 0, _report(result)
    assert "Success: no issues found" in result.stdout, _report(result)


def test_ruff_check_is_clean() -> None:
    result = _run("ruff", "check", "--no-cache", *LINTED)
    assert result.returncode == 0, _report(result)


def test_ruff_format_is_clean() -> None:
    result = _run("ruff", "format", "--check", "--no-cache", *LINTED)
    assert result.returncode == 0, _report(result)
