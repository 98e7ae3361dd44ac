"""Checks of numeric settings shared by the library and the command line, raising :class:`DataError`.

The CLI's argument types (``pyroflows.cli._common.int_arg`` / ``float_arg``) call these same functions, so an
option and the library argument behind it accept exactly the same values and name the problem the same way.

Example:
    >>> check_float(0.5, "beta", low=0)
    0.5
    >>> check_float(float("nan"), "beta", low=0)
    Traceback (most recent call last):
    ...
    pyroflows.errors.DataError: beta: expected a finite number >= 0, got nan
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from pyroflows.errors import DataError

__all__ = ["check_int", "check_float", "parse_int", "parse_float"]


def _number(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _range_text(kind: str, low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    parts = []
    if low is not None:
        parts.append(f"{'>' if low_open else '>='} {_number(low)}")
    if high is not None:
        parts.append(f"{'<' if high_open else '<='} {_number(high)}")
    return f"{kind} {' and '.join(parts)}".strip()


def check_float(
    value: Any,
    name: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """``value`` as a finite float within the given range, or a :class:`DataError` naming ``name``.

    Args:
        value: A real number (not a bool).
        name: The argument or option, for the message.
        low, high: Bounds (``None``: unbounded).
        low_open, high_open: Exclude the bound itself (``low=0, low_open=True``: positive).

    Example:
        >>> check_float(0.0, "--lr", low=0, low_open=True)
        Traceback (most recent call last):
        ...
        pyroflows.errors.DataError: --lr: expected a finite number > 0, got 0
    """
    expected = _range_text("a finite number", low, high, low_open, high_open)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        try:  # 0-d tensors and arrays
            if getattr(value, "ndim", None) == 0 and not isinstance(value.item(), bool):
                value = value.item()
        except Exception:  # noqa: BLE001 - anything unconvertible is reported below
            pass
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise DataError(f"{name}: expected {expected}, got {value!r}")
    number = float(value)
    if (
        not math.isfinite(number)
        or (low is not None and (number < low or (low_open and number == low)))
        or (high is not None and (number > high or (high_open and number == high)))
    ):
        raise DataError(f"{name}: expected {expected}, got {number:g}")
    return number


def check_int(value: Any, name: str, *, low: int | None = None, high: int | None = None) -> int:
    """``value`` as an int within ``[low, high]``, or a :class:`DataError` naming ``name``.

    Integral floats (``1e3``) are accepted; fractions, NaN, infinities and bools are not.

    Example:
        >>> check_int(1e3, "-n", low=1)
        1000
        >>> check_int(0, "--steps", low=1)
        Traceback (most recent call last):
        ...
        pyroflows.errors.DataError: --steps: expected an integer >= 1, got 0
    """
    expected = _range_text("an integer", low, high, False, False)
    if isinstance(value, bool):
        raise DataError(f"{name}: expected {expected}, got {value!r}")
    if isinstance(value, numbers.Integral):
        number = int(value)
    elif isinstance(value, numbers.Real) and math.isfinite(float(value)) and float(value).is_integer():
        number = int(value)
    else:
        raise DataError(f"{name}: expected {expected}, got {value!r}")
    if (low is not None and number < low) or (high is not None and number > high):
        raise DataError(f"{name}: expected {expected}, got {number}")
    return number


def parse_float(text: str, name: str, **limits: Any) -> float:
    """Parse ``text`` as a number and check it with :func:`check_float`.

    Example:
        >>> parse_float("1e-3", "--lr", low=0, low_open=True)
        0.001
    """
    try:
        value = float(str(text).strip())
    except ValueError:
        expected = _range_text(
            "a finite number", limits.get("low"), limits.get("high"), limits.get("low_open", False),
            limits.get("high_open", False),
        )  # fmt: skip
        raise DataError(f"{name}: expected {expected}, got {text!r}") from None
    return check_float(value, name, **limits)


def parse_int(text: str, name: str, **limits: Any) -> int:
    """Parse ``text`` as an integer (``"1000"`` or ``"1e3"``) and check it with :func:`check_int`.

    Example:
        >>> parse_int("2e3", "-n", low=1)
        2000
    """
    text = str(text).strip()
    try:
        value: int | float = int(text)
    except ValueError:
        try:
            value = float(text)
        except ValueError:
            expected = _range_text("an integer", limits.get("low"), limits.get("high"), False, False)
            raise DataError(f"{name}: expected {expected}, got {text!r}") from None
    return check_int(value, name, **limits)
