"""Reading and writing arrays (``.npy`` / ``.csv``) with errors that say what is wrong.

Example:
    >>> import numpy as np, tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "x.csv"
    >>> save_array(path, np.array([[1.0, 2.0], [3.0, 4.0]]))
    >>> load_array(path, ndim=2).shape
    (2, 2)
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from pyroflows.errors import DataError, PyroflowsWarning

__all__ = [
    "load_array",
    "save_array",
    "check_output_path",
    "check_output_dir",
    "check_output_suffix",
    "check_finite",
    "check_real",
    "parse_bounds",
    "atomic_write",
    "atomic_outputs",
    "AtomicOutputs",
    "write_text",
    "save_figure",
    "HeaderWarning",
]

_SUFFIXES = (".npy", ".csv")


def _cell(value: str, allow_missing: bool) -> float:
    if allow_missing and not value.strip():
        return float("nan")
    return float(value)


class HeaderWarning(PyroflowsWarning):
    """A ``.csv`` file's first line was taken as a header (the warning names the line), not as data."""


# A field that starts like a number ("1.5x", "-3,") is a corrupt value, never a column name.
_NUMBER_LIKE = re.compile(r"^\s*[+-]?(\d|\.\d)")


def _is_header(line: str, delimiter: str | None) -> bool:
    fields = [f.strip().strip("\"'") for f in line.split(delimiter)]
    for field in fields:
        try:
            float(field)
            return False
        except ValueError:
            if _NUMBER_LIKE.match(field) or field.lower() in ("nan", "inf", "-inf", "+inf"):
                return False
    return True


def _read_csv(path: Path, header: bool | None = None, allow_missing: bool = False) -> np.ndarray:
    with open(path, encoding="utf-8") as handle:
        lines = [line.strip() for line in handle if line.strip()]
    if not lines:
        raise DataError(f"{path}: the file is empty")
    delimiter = "," if "," in lines[0] else None
    rows = []
    if header is None:
        start = 0
        try:
            [_cell(v, allow_missing) for v in lines[0].split(delimiter)]
        except ValueError:
            if not _is_header(lines[0], delimiter):
                raise DataError(
                    f"{path}: line 1 is not numeric ({lines[0][:60]!r}) and does not look like a header of column names"
                ) from None
            start = 1
            warnings.warn(f"{path}: line 1 ({lines[0][:60]!r}) was taken as a header, not data", HeaderWarning,
                          stacklevel=3)  # fmt: skip
    else:
        start = int(bool(header))
    for lineno, line in enumerate(lines[start:], start=start + 1):
        try:
            rows.append([_cell(v, allow_missing) for v in line.split(delimiter)])
        except ValueError as exc:
            raise DataError(f"{path}: line {lineno} is not numeric ({line[:60]!r})") from exc
    if not rows:
        raise DataError(f"{path}: the file has a header but no data rows")
    widths = {len(r) for r in rows}
    if len(widths) > 1:
        raise DataError(f"{path}: rows have different numbers of columns ({sorted(widths)})")
    array = np.asarray(rows, dtype=np.float64)
    return array[:, 0] if array.shape[1] == 1 else array


def load_array(
    path: str | os.PathLike,
    *,
    ndim: int | None = None,
    allow_1d: bool = True,
    header: bool | None = None,
    allow_missing: bool = False,
) -> np.ndarray:
    """Load a numeric array from ``.npy`` or ``.csv``, checking that it is finite and well shaped.

    Args:
        path: A ``.npy`` file (any numeric dtype) or a ``.csv`` file (comma or whitespace separated, an optional
            header line).
        ndim: If 2, the result is always ``(N, D)``: a 1-D array becomes ``(N, 1)`` when ``allow_1d`` is true.
            If 1, a ``(N, 1)`` array becomes ``(N,)``. ``None`` keeps the stored shape.
        allow_1d: With ``ndim=2``, whether a 1-D input is accepted (as one column) or rejected.
        header: For ``.csv``: ``True`` skips the first line, ``False`` reads it as data, ``None`` (default) skips it
            only if it looks like column names (no field starts like a number), with a :class:`HeaderWarning`
            naming the line; a corrupt first row such as ``1.5x`` is an error, never a silent header.
        allow_missing: Accept NaN (and, in a ``.csv`` file, empty cells, read as NaN) as missing entries; inf is
            still an error.

    Returns:
        A float64 array.

    Raises:
        DataError: the file is missing, unreadable, empty, non-numeric, complex, ragged, not finite, or of the
            wrong rank.

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
        check_real(array, name=str(path))
        array = np.asarray(array, dtype=np.float64)
    else:
        try:
            array = _read_csv(path, header, allow_missing)
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
    if allow_missing:
        check_finite(np.nan_to_num(array, nan=0.0, posinf=np.inf, neginf=-np.inf), name=str(path))
    else:
        check_finite(array, name=str(path))
    return array


def check_real(array: np.ndarray, *, name: str = "data") -> None:
    """Raise :class:`DataError` unless ``array`` holds real numbers (not complex, strings or objects).

    Example:
        >>> check_real(np.array([1 + 2j]), name="x")
        Traceback (most recent call last):
        ...
        pyroflows.errors.DataError: x: holds complex numbers (dtype complex128); expected real numbers
    """
    dtype = np.asarray(array).dtype
    if np.issubdtype(dtype, np.complexfloating):
        raise DataError(f"{name}: holds complex numbers (dtype {dtype}); expected real numbers")
    if not np.issubdtype(dtype, np.number) and dtype != np.bool_:
        raise DataError(f"{name}: expected a numeric array, got dtype {dtype}")


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


def _first_existing(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _check_folder_writable(path: Path, *, what: str) -> None:
    """The folder that would hold ``path`` can be created and written.

    Its nearest existing ancestor is a writable directory (not a file, not read-only).
    """
    parent = Path(os.path.abspath(path)).parent
    existing = _first_existing(parent)
    if not existing.is_dir():
        raise DataError(f"{what}: cannot be created, {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise DataError(f"{what}: cannot be written, the folder {existing} is read-only")
    try:  # root passes os.access even on a read-only file system
        read_only = bool(os.statvfs(existing).f_flag & os.ST_RDONLY)
    except (AttributeError, OSError):  # pragma: no cover - platforms without statvfs
        read_only = False
    if read_only:
        raise DataError(f"{what}: cannot be written, {existing} is on a read-only file system")


def check_output_path(path: str | os.PathLike, *, overwrite: bool = False, make_parents: bool = False) -> Path:
    """Check, before any work, that ``path`` may be written; creates nothing unless ``make_parents``.

    Refuses to replace an existing file unless ``overwrite``, and refuses a path that is a folder, lies under a
    file, or lies in a read-only folder. The writers (:func:`atomic_write`) create missing parent folders only
    once the result exists, so a command that fails leaves no empty folder behind.

    Raises:
        DataError: ``path`` exists (and ``overwrite`` is false), is a directory, or cannot be created.

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
    _check_folder_writable(path, what=str(path))
    if make_parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    return path


def check_output_dir(path: str | os.PathLike, files: tuple[str, ...] | list[str] = (), *, overwrite: bool = False
                     ) -> Path:  # fmt: skip
    """Check, before any work, that the folder ``path`` may hold ``files``; creates nothing.

    Raises:
        DataError: ``path`` is a file, lies under a file or in a read-only folder, or one of ``files`` exists in it
            (and ``overwrite`` is false).

    Example:
        >>> import tempfile, pathlib
        >>> check_output_dir(pathlib.Path(tempfile.mkdtemp()) / "maps", ["a.npy"]).name
        'maps'
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise DataError(f"{path}: is a file, expected a folder for the outputs")
    _check_folder_writable(path / "x", what=str(path))
    for name in files:
        check_output_path(path / name, overwrite=overwrite)
    return path


class AtomicOutputs:
    """Several output files written together: each to a temporary file beside it, all renamed at the end.

    A temporary file has a unique name in the destination's folder (``.<name>.<random>.partial<suffix>``), is
    flushed to disk (``fsync``) and only then renamed over the destination (``os.replace``, atomic on one file
    system). If anything fails before :meth:`commit` (an error, Ctrl-C, a full disk, a file-size limit), every
    temporary file is removed, every folder this object created is removed again, and the destinations keep
    their old contents. Use it through :func:`atomic_outputs` or :func:`atomic_write`.
    """

    def __init__(self, *, overwrite: bool = False) -> None:
        self.overwrite = overwrite
        self._staged: list[tuple[Path, Path]] = []
        self._created: list[Path] = []

    def _make_parents(self, folder: Path) -> None:
        missing = []
        while not folder.exists():
            missing.append(folder)
            folder = folder.parent
        for sub in reversed(missing):
            sub.mkdir()
            self._created.append(sub)

    def write(self, path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
        """Stage ``path``: ``write(tmp)`` writes the content to ``tmp`` (a path with ``path``'s suffix)."""
        path = Path(path)
        check_output_path(path, overwrite=self.overwrite)
        try:
            self._make_parents(path.parent)
            fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".partial{path.suffix}", dir=path.parent)
        except OSError as exc:
            raise DataError(f"{path}: cannot be written ({exc.strerror or exc})") from exc
        os.close(fd)
        tmp = Path(name)
        self._staged.append((tmp, path))
        try:
            write(tmp)
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
        except OSError as exc:
            raise DataError(f"{path}: writing failed ({exc.strerror or exc}); nothing was replaced") from exc
        return path

    def commit(self) -> None:
        """Rename every staged file onto its destination."""
        for _tmp, path in self._staged:
            if path.exists() and not self.overwrite:  # appeared while we worked
                raise DataError(f"{path}: already exists; pass --force (overwrite=True) to replace it")
        for tmp, path in self._staged:
            os.replace(tmp, path)
        for folder in {path.parent for _, path in self._staged}:
            with contextlib.suppress(OSError):  # make the renames durable where the platform allows it
                fd = os.open(folder, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        self._staged.clear()
        self._created.clear()

    def abort(self) -> None:
        """Remove the temporary files and the folders created for them."""
        for tmp, _ in self._staged:
            with contextlib.suppress(OSError):
                tmp.unlink()
        for folder in reversed(self._created):
            with contextlib.suppress(OSError):
                folder.rmdir()
        self._staged.clear()
        self._created.clear()


@contextlib.contextmanager
def atomic_outputs(*, overwrite: bool = False) -> Iterator[AtomicOutputs]:
    """Write several files all-or-nothing: staged in the block, renamed into place when it ends without error.

    Example:
        >>> import tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp()) / "out"
        >>> with atomic_outputs() as out:
        ...     _ = out.write(folder / "a.txt", lambda tmp: tmp.write_text("a"))
        ...     _ = out.write(folder / "b.txt", lambda tmp: tmp.write_text("b"))
        >>> sorted(p.name for p in folder.iterdir())
        ['a.txt', 'b.txt']
    """
    outputs = AtomicOutputs(overwrite=overwrite)
    try:
        yield outputs
        outputs.commit()
    except BaseException:
        outputs.abort()
        raise


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object], *, overwrite: bool = False) -> Path:
    """Write one file atomically: ``write(tmp)`` fills a temporary file beside ``path``, which then replaces it.

    Every output of pyroflows goes through here (arrays, checkpoints, tables, figures, maps): a failed or
    interrupted write leaves the old file untouched, no partial file and no new folder.

    Args:
        path: The destination. Missing parent folders are created now (removed again if the write fails).
        write: Called with the temporary path (same folder, same suffix, unique name); writes the content.
        overwrite: Replace an existing file; otherwise an existing ``path`` is an error.

    Returns:
        ``path``.

    Raises:
        DataError: ``path`` exists (without ``overwrite``), cannot be created, or the write failed.

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "note.txt"
        >>> atomic_write(path, lambda tmp: tmp.write_text("hello")).read_text()
        'hello'
    """
    with atomic_outputs(overwrite=overwrite) as outputs:
        outputs.write(path, write)
    return Path(path)


def write_text(path: str | os.PathLike, text: str, *, overwrite: bool = False) -> Path:
    """Write ``text`` (UTF-8) atomically with :func:`atomic_write`."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), overwrite=overwrite)


def save_figure(figure, path: str | os.PathLike, *, overwrite: bool = False, outputs: AtomicOutputs | None = None,
                **kwargs) -> Path:  # fmt: skip
    """Save a matplotlib ``figure`` atomically (format from ``path``'s suffix); ``kwargs`` go to ``savefig``."""
    path = Path(path)
    kwargs.setdefault("format", path.suffix.lstrip(".") or "png")

    def write(tmp: Path) -> None:
        figure.savefig(tmp, **kwargs)

    return outputs.write(path, write) if outputs is not None else atomic_write(path, write, overwrite=overwrite)


def check_output_suffix(path: str | os.PathLike, suffixes: tuple[str, ...] = _SUFFIXES) -> Path:
    """Raise :class:`DataError` unless ``path`` ends in one of ``suffixes`` (default ``.npy``, ``.csv``).

    Example:
        >>> check_output_suffix("s.txt")
        Traceback (most recent call last):
        ...
        pyroflows.errors.DataError: s.txt: unsupported output type '.txt'; expected one of .npy, .csv
    """
    path = Path(path)
    if path.suffix.lower() not in suffixes:
        raise DataError(f"{path}: unsupported output type {path.suffix!r}; expected one of {', '.join(suffixes)}")
    return path


def _array_writer(path: Path, array: np.ndarray) -> Callable[[Path], None]:
    suffix = check_output_suffix(path).suffix.lower()
    array = np.asarray(array)

    def write(tmp: Path) -> None:
        if suffix == ".npy":
            with open(tmp, "wb") as handle:
                np.save(handle, array)
        else:
            np.savetxt(tmp, array if array.ndim > 0 else array[None], delimiter=",", fmt="%.10g")

    return write


def save_array(path: str | os.PathLike, array: np.ndarray, *, overwrite: bool = False,
               outputs: AtomicOutputs | None = None) -> None:  # fmt: skip
    """Save ``array`` as ``.npy`` or ``.csv`` (by suffix) atomically, never replacing a file unless ``overwrite``.

    Args:
        path: Destination; ``.npy`` or ``.csv``.
        array: The values.
        overwrite: Replace an existing file.
        outputs: Stage the file in this group of outputs (:func:`atomic_outputs`) instead of writing it now.

    Example:
        >>> import tempfile, pathlib
        >>> save_array(pathlib.Path(tempfile.mkdtemp()) / "s.npy", np.zeros(3))
    """
    path = Path(path)
    write = _array_writer(path, array)
    if outputs is not None:
        outputs.write(path, write)
    else:
        atomic_write(path, write, overwrite=overwrite)


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
