"""Exceptions raised for bad user input.

The errors derive from :class:`ValueError`, so ``except ValueError`` keeps working, and from
:class:`PyroflowsError`, which the command line turns into a one-line message instead of a traceback.
"""

from __future__ import annotations


class PyroflowsError(Exception):
    """Base class of the errors pyroflows raises for bad input; the CLI prints them without a traceback."""


class DataError(PyroflowsError, ValueError):
    """Input data is missing, unreadable, of the wrong shape, or holds values it may not hold."""


class CheckpointError(PyroflowsError, ValueError):
    """A saved model file is missing, corrupt, or of another kind than expected."""


class NumericalError(PyroflowsError, ArithmeticError):
    """A computation produced NaN or infinity (a diverged training, a non-finite result); nothing is written."""


class PyroflowsWarning(UserWarning):
    """Base class of the warnings pyroflows issues.

    A header row skipped, an under-fitted flow, a model that cannot be split, a trusted pickle: the CLI always shows
    them, one line each, whatever the warning filters say.
    """
