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
from typing import TYPE_CHECKING, Any

from pyroflows.errors import DataError

if TYPE_CHECKING:  # torch is imported where it is used, so the CLI's --help and --version stay fast
    import torch

__all__ = ["check_int", "check_float", "parse_int", "parse_float", "as_finite_2d", "as_targets", "bad_rows"]


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
        low: Lower bound (``None``: unbounded).
        high: Upper bound (``None``: unbounded).
        low_open: Exclude ``low`` itself (``low=0, low_open=True``: positive).
        high_open: Exclude ``high`` itself.

    Example:
        >>> check_float(0.0, "--lr", low=0, low_open=True)
        Traceback (most recent call last):
        ...
        pyroflows.errors.DataError: --lr: expected a finite number > 0, got 0
    """
    expected = _range_text("a finite number", low, high, low_open, high_open)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        try:  # 0-d tensors and arrays
            item = getattr(value, "item", None)
            if getattr(value, "ndim", None) == 0 and item is not None and not isinstance(item(), bool):
                value = item()
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
        number = int(float(value))
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


def bad_rows(x: Any) -> list[int]:
    """Indices of the rows of ``x`` (any shape ``(N, ...)``) holding NaN or infinity.

    Example:
        >>> import torch
        >>> bad_rows(torch.tensor([[0.0, 1.0], [float("nan"), 2.0], [3.0, float("inf")]]))
        [1, 2]
    """
    import torch

    x = torch.as_tensor(x)
    if not (x.is_floating_point() or x.is_complex()) or x.ndim == 0:
        return [] if x.ndim else ([] if bool(torch.isfinite(x)) else [0])
    return (~torch.isfinite(x.reshape(x.shape[0], -1)).all(-1)).nonzero().flatten().tolist()


def as_finite_2d(
    x: Any,
    name: str,
    *,
    dim: int | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    allow_1d: bool = True,
    allow_empty: bool = False,
    allow_nan: bool = False,
) -> torch.Tensor:
    """Check ``x`` is a real ``(N, D)`` array of finite values and return it as a tensor.

    Args:
        x: A tensor, array or nested list; a 1-D input is read as ``(N, 1)`` when ``allow_1d``.
        name: The argument's name, for the message.
        dim: The number of columns ``D`` required, if any.
        dtype: Target dtype (default: a floating dtype kept, otherwise torch's default).
        device: Target device (default: the input's).
        allow_1d: Read a 1-D input as one column.
        allow_empty: Accept ``N = 0``.
        allow_nan: Accept NaN (a missing entry) but never infinity.

    Raises:
        DataError: naming ``name``, the shape expected, or the first rows holding NaN / infinity.

    Example:
        >>> as_finite_2d([1.0, 2.0], "data").shape
        torch.Size([2, 1])
        >>> as_finite_2d([[1.0, float("inf")]], "data")
        Traceback (most recent call last):
        ...
        pyroflows.errors.DataError: data: 1 row(s) hold NaN or inf, e.g. rows [0]
    """
    import torch

    if isinstance(x, torch.Tensor):
        t = x
    else:
        try:
            t = torch.as_tensor(x)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise DataError(f"{name}: expected a numeric array, got {type(x).__name__} ({exc})") from None
    if t.is_complex():
        raise DataError(f"{name}: expected real numbers, got complex values")
    if t.dtype == torch.bool:
        raise DataError(f"{name}: expected numbers, got booleans")
    if t.ndim == 1 and allow_1d:
        t = t[:, None]
    if t.ndim != 2:
        raise DataError(f"{name}: expected shape (N, {dim if dim is not None else 'D'}), got {tuple(t.shape)}")
    if dim is not None and t.shape[1] != dim:
        raise DataError(f"{name}: expected shape (N, {dim}), got {tuple(t.shape)}")
    if t.shape[0] == 0 and not allow_empty:
        raise DataError(f"{name}: no rows")
    if dtype is None:
        dtype = t.dtype if t.is_floating_point() else torch.get_default_dtype()
    t = t.to(dtype=dtype, device=device if device is not None else t.device)
    bad = (torch.isinf(t) if allow_nan else ~torch.isfinite(t)).any(-1)
    rows = bad.nonzero().flatten()
    if rows.numel():
        what = "inf" if allow_nan else "NaN or inf"
        raise DataError(f"{name}: {rows.numel()} row(s) hold {what}, e.g. rows {rows[:5].tolist()}")
    return t


def as_targets(
    target: Any,
    n: int,
    *,
    num_classes: int | None = None,
    name: str = "target",
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Turn ``target`` (an int, or one class index per row) into a long tensor of shape ``(n,)``.

    Args:
        target: An int, or a sequence / tensor of ``n`` integers.
        n: The number of rows.
        num_classes: If given, every index must lie in ``0 .. num_classes - 1``.
        name: The argument's name, for the message.
        device: Where the result lives.

    Raises:
        DataError: not integers, the wrong count, or indices out of range (naming the rows).

    Example:
        >>> as_targets(1, 3).tolist()
        [1, 1, 1]
        >>> as_targets([0, 5], 2, num_classes=3)
        Traceback (most recent call last):
        ...
        pyroflows.errors.DataError: target: classes outside 0..2 in rows [1]: [5]
    """
    import torch

    if target is None:
        raise DataError(f"{name} is required: a class index (an int, or one per row)")
    if isinstance(target, bool):
        raise DataError(f"{name}: expected class indices (integers), got a bool")
    try:
        t = torch.as_tensor(target, device=device)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise DataError(f"{name}: expected class indices (integers), got {type(target).__name__} ({exc})") from None
    if t.is_floating_point():
        if not bool(torch.isfinite(t).all()) or not bool((t == t.round()).all()):
            raise DataError(f"{name}: expected class indices (integers), got non-integer values")
    elif t.is_complex() or t.dtype == torch.bool:
        raise DataError(f"{name}: expected class indices (integers), got {t.dtype}")
    t = t.long()
    if t.ndim == 0:
        t = t.expand(n)
    if t.shape != (n,):
        raise DataError(f"{name}: expected an int or {n} class indices (one per row), got shape {tuple(t.shape)}")
    if num_classes is not None:
        bad = ((t < 0) | (t >= num_classes)).nonzero().flatten().tolist()
        if bad:
            raise DataError(f"{name}: classes outside 0..{num_classes - 1} in rows {bad[:10]}: {t[bad[:10]].tolist()}")
    return t
