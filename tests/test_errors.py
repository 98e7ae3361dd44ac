"""``pyroflows.errors``: the package's errors are ``ValueError``s the CLI prints in one line, and every warning the
package issues is a :class:`PyroflowsWarning` (the CLI always shows those, and the test suite turns every other
warning into an error)."""

import ast
import builtins
import importlib
from pathlib import Path

import pytest

import pyroflows
from pyroflows.errors import CheckpointError, DataError, NumericalError, PyroflowsError, PyroflowsWarning

PACKAGE = Path(pyroflows.__file__).parent


def test_errors_are_pyroflows_errors_and_keep_their_builtin_bases():
    assert issubclass(DataError, ValueError) and issubclass(CheckpointError, ValueError)
    assert issubclass(NumericalError, ArithmeticError)
    assert all(issubclass(e, PyroflowsError) for e in (DataError, CheckpointError, NumericalError))
    assert issubclass(PyroflowsWarning, UserWarning)


def _warn_calls():
    """``(module name, line, category expression)`` of every ``warnings.warn`` call in the package."""
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and ast.unparse(node.func) in ("warnings.warn", "warn"):
                category = (
                    node.args[1]
                    if len(node.args) > 1
                    else next((k.value for k in node.keywords if k.arg == "category"), None)
                )
                parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
                module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
                yield module, node.lineno, category


CALLS = list(_warn_calls())


def test_the_package_issues_warnings():
    assert len(CALLS) >= 4  # the header, convergence, layer-split and trusted-pickle warnings at least


@pytest.mark.parametrize(("module", "line", "category"), CALLS, ids=[f"{m}:{n}" for m, n, _ in CALLS])
def test_every_warning_the_package_issues_is_a_pyroflows_warning(module, line, category):
    assert category is not None, f"{module}:{line}: warnings.warn without a category (a bare UserWarning)"
    first, *rest = ast.unparse(category).split(".")
    namespace = importlib.import_module(module)
    value = getattr(namespace, first) if hasattr(namespace, first) else getattr(builtins, first)  # e.g. UserWarning
    for part in rest:
        value = getattr(value, part)
    assert isinstance(value, type) and issubclass(value, PyroflowsWarning), f"{module}:{line}: {value}"
