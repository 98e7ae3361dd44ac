"""Reading and writing arrays (``.npy`` / ``.csv``) with errors that say what is wrong.

Example:
    >>> import numpy as np, tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "x.csv"
    >>> save_array(path, np.array([[1.0, 2.0], [3.0, 4.0]]))
    >>> load_array(path, ndim=2).shape
    (2, 2)
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from pyroflows.errors import DataError

__all__ = ["load_array", "save_array", "check_output_path", "check_finite", "parse_bounds"]

_SUFFIXES = (".npy", ".csv")


def _read_csv(path: Path) -> np.ndarray:
    with open(path, encoding="utf-8") as handle:
        lines = [line.strip() for line in handle if line.strip()]
    if not lines:
        raise DataError(f"{path}: the file is empty")
    delimiter = "," if "," in lines[0] else None
    rows = []
    start = 0
    try:
        [float(v) for v in lines[0].split(delimiter)]
    except ValueError:
        start = 1  # a header line
    for lineno, line in enumerate(lines[start:], start=start + 1):
        try:
            rows.append([float(v) for v in line.split(delimiter)])
        except ValueError as exc:
            raise DataError(f"{path}: line {lineno} is not numeric ({line[:60]!r})") from exc
    if not rows:
        raise DataError(f"{path}: the file has a header but no data rows")
    widths = {len(r) for r in rows}
    if len(widths) > 1:
        raise DataError(f"{path}: rows have different numbers of columns ({sorted(widths)})")
    array = np.asarray(rows, dtype=np.float64)
    return array[:, 0] if array.shape[1] == 1 else array


def load_array(path: str | os.PathLike, *, ndim: int | None = None, allow_1d: bool = True) -> np.ndarray:
    """Load a numeric array from ``.npy`` or ``.csv``, checking that it is finite and well shaped.

    Args:
        path: A ``.npy`` file (any numeric dtype) or a ``.csv`` file (comma or whitespace separated, an optional
            header line).
        ndim: If 2, the result is always ``(N, D)``: a 1-D array becomes ``(N, 1)`` when ``allow_1d`` is true.
            If 1, a ``(N, 1)`` array becomes ``(N,)``. ``None`` keeps the stored shape.
        allow_1d: With ``ndim=2``, whether a 1-D input is accepted (as one column) or rejected.

    Returns:
        A float64 array.

    Raises:
        DataError: the file is missing, unreadable, empty, non-numeric, ragged, not finite, or of the wrong rank.

    Example:
        >>> import numpy as np, tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "x.npy"
        >>> np.save(path, np.arange(3.0))
        >>> load_array(path, ndim=2).shape
        (3, 1)
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a .npy or .csv file")
    suffix = path.suffix.lower()
    if suffix not in _SUFFIXES:
        raise DataError(f"{path}: unsupported file type {suffix!r}; expected one of {', '.join(_SUFFIXES)}")
    if suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except Exception as exc:  # numpy raises ValueError/OSError/EOFError/UnpicklingError for bad files
            raise DataError(f"{path}: not a readable .npy file ({exc})") from exc
        if not np.issubdtype(array.dtype, np.number) and array.dtype != np.bool_:
            raise DataError(f"{path}: expected a numeric array, got dtype {array.dtype}")
        array = np.asarray(array, dtype=np.float64)
    else:
        try:
            array = _read_csv(path)
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}: not a text .csv file") from exc
    if array.size == 0:
        raise DataError(f"{path}: the array is empty (shape {array.shape})")
    if ndim == 2:
        if array.ndim == 1:
            if not allow_1d:
                raise DataError(f"{path}: expected a 2-D array of shape (N, D), got a 1-D array of shape {array.shape}")
            array = array[:, None]
        if array.ndim != 2:
            raise DataError(f"{path}: expected shape (N, D), got {array.shape}")
    elif ndim == 1:
        if array.ndim == 2 and array.shape[1] == 1:
            array = array[:, 0]
        if array.ndim != 1:
            raise DataError(f"{path}: expected shape (N,), got {array.shape}")
    elif array.ndim not in (1, 2):
        raise DataError(f"{path}: expected shape (N,) or (N, D), got {array.shape}")
    check_finite(array, name=str(path))
    return array


def check_finite(array: np.ndarray, *, name: str = "data") -> None:
    """Raise :class:`DataError` naming the rows that hold NaN or inf.

    Example:
        >>> check_finite(np.array([1.0, np.nan]), name="x")
        Traceback (most recent call last):
        ...
        pyroflows.errors.DataError: x: 1 row(s) hold NaN or inf, e.g. rows [1]
    """
    array = np.asarray(array)
    bad = ~np.isfinite(array)
    if bad.any():
        rows = np.flatnonzero(bad.reshape(bad.shape[0], -1).any(axis=1) if bad.ndim > 1 else bad)
        raise DataError(f"{name}: {rows.size} row(s) hold NaN or inf, e.g. rows {rows[:5].tolist()}")


def check_output_path(path: str | os.PathLike, *, overwrite: bool = False, make_parents: bool = True) -> Path:
    """Check that ``path`` may be written: refuse to replace an existing file unless ``overwrite``.

    Creates missing parent directories unless ``make_parents`` is false (for checks made before work that may
    still fail, so that a failed command leaves nothing behind).

    Raises:
        DataError: ``path`` exists (and ``overwrite`` is false) or is a directory.

    Example:
        >>> import tempfile, pathlib
        >>> check_output_path(pathlib.Path(tempfile.mkdtemp()) / "sub" / "model.pt").name
        'model.pt'
    """
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a file path")
    if path.exists() and not overwrite:
        raise DataError(f"{path}: already exists; pass --force (overwrite=True) to replace it")
    if make_parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    return path


def save_array(path: str | os.PathLike, array: np.ndarray, *, overwrite: bool = False) -> None:
    """Save ``array`` as ``.npy`` or ``.csv`` (by suffix), never replacing a file unless ``overwrite``.

    Example:
        >>> import tempfile, pathlib
        >>> save_array(pathlib.Path(tempfile.mkdtemp()) / "s.npy", np.zeros(3))
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _SUFFIXES:
        raise DataError(f"{path}: unsupported output type {suffix!r}; expected one of {', '.join(_SUFFIXES)}")
    check_output_path(path, overwrite=overwrite)
    array = np.asarray(array)
    if suffix == ".npy":
        with open(path, "wb") as handle:
            np.save(handle, array)
    else:
        np.savetxt(path, array if array.ndim > 0 else array[None], delimiter=",", fmt="%.10g")


def parse_bounds(text: str | float, *, name: str, allow_infinite: bool = False) -> list[float]:
    """Parse ``"1.5"`` or ``"0,0,-1"`` into a list of floats, naming the option when it fails.

    ``allow_infinite`` also accepts ``inf`` / ``-inf`` (one-sided supports); NaN is always an error.

    Example:
        >>> parse_bounds("0, 1.5", name="--low")
        [0.0, 1.5]
        >>> parse_bounds("inf", name="--high", allow_infinite=True)
        [inf]
    """
    if isinstance(text, (int, float)):
        return [float(text)]
    try:
        values = [float(v) for v in str(text).split(",") if v.strip()]
    except ValueError as exc:
        raise DataError(f"{name}: expected a number or comma-separated numbers, got {text!r}") from exc
    if not values:
        raise DataError(f"{name}: expected a number or comma-separated numbers, got {text!r}")
    if allow_infinite and not any(np.isnan(values)):
        return values
    if not all(np.isfinite(values)):
        raise DataError(f"{name}: bounds must be finite, got {text!r}")
    return values
