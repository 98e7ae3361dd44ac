"""One file format for every saved pyroflows model.

A checkpoint is a ``torch.save`` dictionary holding a ``kind`` tag (``"CompactFlow"``, ``"DDPM"``, ...), the
constructor ``config`` (plain Python values only) and the module's ``state_dict``. It is read back with
``weights_only=True``, so loading a file runs no code from it.

Example:
    >>> import tempfile, pathlib, torch
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "m.pt"
    >>> _ = save_checkpoint(path, kind="Linear", config={"n": 2}, state_dict=torch.nn.Linear(2, 1).state_dict())
    >>> sorted(load_checkpoint(path, kind="Linear"))
    ['config', 'extra', 'format', 'kind', 'state_dict', 'version']
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch

from pyroflows.errors import CheckpointError, PyroflowsError
from pyroflows.io import atomic_write, check_output_path

__all__ = [
    "Checkpointable",
    "save_checkpoint",
    "load_checkpoint",
    "restore_module",
    "check_config",
    "FORMAT_VERSION",
    "CONFIG_LIMITS",
]

T = TypeVar("T", bound=torch.nn.Module)

#: Ranges of the size-like settings a checkpoint's ``config`` may hold, checked before anything is built (a file
#: with ``num_layers=10**9`` would otherwise build a billion layers). Keys appear at any depth of the config.
CONFIG_LIMITS: dict[str, tuple[int, int]] = {
    "num_layers": (0, 1000),
    "steps": (1, 100_000),
    "data_dim": (1, 1_000_000),
    "dim": (1, 1_000_000),
    "hidden": (1, 1_000_000),
    "hidden_dim": (1, 1_000_000),
    "hidden_features": (1, 1_000_000),
    "depth": (0, 1000),
    "count_bins": (1, 10_000),
    "bins": (1, 10_000),
}
#: Any other integer in a config must stay below this in absolute value.
MAX_CONFIG_INT = 10_000_000

FORMAT = "pyroflows-checkpoint"
FORMAT_VERSION = 1


def save_checkpoint(
    path: str | os.PathLike,
    *,
    kind: str,
    config: dict[str, Any],
    state_dict: dict[str, torch.Tensor],
    extra: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a checkpoint; refuses to replace an existing file unless ``overwrite``.

    Tensors are moved to the CPU so a file written on a GPU loads anywhere.

    Args:
        path: Output file (``.pt`` by convention).
        kind: Class name of the saved object, checked on load.
        config: Constructor arguments (numbers, strings, lists, dicts, tensors).
        state_dict: The module's ``state_dict()``.
        extra: Anything else to keep (training history, metrics), same value types as ``config``.
        overwrite: Replace an existing file.

    Returns:
        The path written.
    """
    path = Path(path)
    check_output_path(path, overwrite=overwrite)
    payload = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "kind": kind,
        "config": config,
        "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
        "extra": extra or {},
    }
    # A unique temporary file beside ``path``, fsync'd and renamed: an interrupted save never leaves a
    # half-written model behind, nor replaces the old one, nor touches a user's file of any other name.
    return atomic_write(path, lambda tmp: torch.save(payload, tmp), overwrite=overwrite)


def load_checkpoint(path: str | os.PathLike, *, kind: str | None = None) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`, checking its format and kind.

    Args:
        path: The file.
        kind: If given, the ``kind`` the file must hold.

    Returns:
        The checkpoint dictionary (``kind``, ``config``, ``state_dict``, ``extra``, ...), tensors on the CPU.

    Raises:
        CheckpointError: the file is missing, not a pyroflows checkpoint, corrupt, or of another kind.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such model file")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, expected a model file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated/foreign files
        raise CheckpointError(f"{path}: not a readable pyroflows model file ({type(exc).__name__})") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a pyroflows model file")
    if payload.get("version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{path}: written by a newer pyroflows (format {payload['version']} > {FORMAT_VERSION})")
    for key in ("kind", "config", "state_dict"):
        if key not in payload:
            raise CheckpointError(f"{path}: corrupt model file (no {key!r} entry)")
    if kind is not None and payload["kind"] != kind:
        raise CheckpointError(f"{path}: holds a {payload['kind']} model, expected a {kind}")
    payload.setdefault("extra", {})
    return payload


def check_config(
    path: str | os.PathLike, config: Any, limits: Mapping[str, tuple[int, int]] | None = None, *, kind: str = ""
) -> None:
    """Reject a checkpoint ``config`` whose size-like settings are out of range, before anything is built.

    Args:
        path: The file, for the message.
        config: The saved constructor arguments.
        limits: Allowed ``(low, high)`` per key (default :data:`CONFIG_LIMITS`); any other integer must be
            below :data:`MAX_CONFIG_INT` in absolute value.
        kind: The model's kind, for the message.

    Raises:
        CheckpointError: naming the setting, its value and the allowed range.

    Example:
        >>> check_config("m.pt", {"num_layers": 10**9})
        Traceback (most recent call last):
        ...
        pyroflows.errors.CheckpointError: m.pt: corrupt model file: num_layers = 1000000000 is outside [0, 1000]
    """
    limits = CONFIG_LIMITS if limits is None else limits
    what = f"{path}: corrupt {kind + ' ' if kind else ''}model file"

    def visit(value: Any, key: str) -> None:
        if isinstance(value, Mapping):
            for k, v in value.items():
                visit(v, str(k))
        elif isinstance(value, (list, tuple)):
            for v in value:
                visit(v, key)
        elif isinstance(value, float) and key in limits and not value.is_integer():
            raise CheckpointError(f"{what}: {key} = {value!r} is not an integer")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            if key in limits:
                low, high = limits[key]
                if not low <= value <= high:
                    raise CheckpointError(f"{what}: {key} = {value!r} is outside [{low}, {high}]")
            elif isinstance(value, int) and abs(value) > MAX_CONFIG_INT:
                raise CheckpointError(f"{what}: {key} = {value!r} is implausibly large")

    if not isinstance(config, Mapping):
        raise CheckpointError(f"{what} (config is a {type(config).__name__}, not a dict)")
    visit(config, "config")


def restore_module(
    path: str | os.PathLike,
    *,
    kind: str,
    build: Callable[[dict[str, Any]], T],
    limits: Mapping[str, tuple[int, int]] | None = None,
    restore: Callable[[T, Mapping[str, torch.Tensor], Mapping[str, Any]], None] | None = None,
) -> tuple[T, dict[str, Any]]:
    """Load a checkpoint and rebuild its module, every failure a one-line :class:`CheckpointError`.

    The config is checked with :func:`check_config` first; then ``build(config)`` makes the module and its
    ``state_dict`` is loaded strictly (missing, unexpected or mis-shaped tensors are errors), or handed to
    ``restore(module, state_dict, extra)`` when given.

    Returns:
        The module and the checkpoint dictionary.

    Raises:
        CheckpointError: the file is missing, corrupt, of another kind, or its config or weights do not fit.

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "lin.pt"
        >>> _ = save_checkpoint(path, kind="Linear", config={"n": 2}, state_dict=torch.nn.Linear(2, 1).state_dict())
        >>> module, _ = restore_module(path, kind="Linear", build=lambda c: torch.nn.Linear(c["n"], 1))
        >>> module.weight.shape
        torch.Size([1, 2])
    """
    checkpoint = load_checkpoint(path, kind=kind)
    check_config(path, checkpoint["config"], limits, kind=kind)
    state = checkpoint["state_dict"]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: corrupt {kind} model file (its state_dict is not a dict of tensors)")
    try:
        module = build(dict(checkpoint["config"]))
        if restore is None:
            module.load_state_dict(state)
        else:
            restore(module, state, checkpoint.get("extra") or {})
    except PyroflowsError as exc:
        raise CheckpointError(f"{path}: corrupt {kind} model file ({exc})") from exc
    except (TypeError, ValueError, KeyError, RuntimeError, AttributeError, IndexError) as exc:
        message = " ".join(str(exc).split())[:300]  # load_state_dict's message spans many lines
        raise CheckpointError(f"{path}: corrupt {kind} model file ({type(exc).__name__}: {message})") from exc
    for name, tensor in module.state_dict().items():
        # A one-sided flow keeps its infinite bound in the ``low``/``high`` buffers; nothing else may be infinite.
        finite = ~torch.isnan(tensor) if name.rsplit(".", 1)[-1] in ("low", "high") else torch.isfinite(tensor)
        if tensor.is_floating_point() and not finite.all():
            raise CheckpointError(f"{path}: corrupt {kind} model file ({name} holds NaN or infinity)")
    return module, checkpoint


C = TypeVar("C", bound="Checkpointable")


class Checkpointable:
    """The one persistence protocol of every saved pyroflows object (flows, DDPMs, bottlenecks, bundled models).

    A subclass is a ``torch.nn.Module`` that provides

    * ``config``: a **property** (or attribute) holding its constructor arguments as plain values;
    * ``from_config(config, **kwargs)``: a classmethod rebuilding an untrained object (the default calls
      ``cls(**config, **kwargs)``; override it to convert values such as dtypes or to read older files);

    and gets :meth:`save` (``save(path, overwrite=False, extra=None) -> Path``, atomic, refusing to replace a file)
    and :meth:`load` (``load(path, **kwargs)``, every failure a one-line :class:`~pyroflows.errors.CheckpointError`,
    the state_dict loaded strictly) with the same behaviour everywhere. ``checkpoint_kind`` (default: the class name)
    is the tag written into the file and checked on load; ``checkpoint_limits`` overrides :data:`CONFIG_LIMITS`.
    Objects whose state is not a plain ``state_dict`` override :meth:`checkpoint_state` / :meth:`restore_state`.

    Example:
        >>> import tempfile, pathlib
        >>> class Line(Checkpointable, torch.nn.Linear):
        ...     def __init__(self, n: int):
        ...         super().__init__(n, 1)
        ...         self.n = n
        ...     @property
        ...     def config(self):
        ...         return {"n": self.n}
        >>> path = Line(3).save(pathlib.Path(tempfile.mkdtemp()) / "line.pt")
        >>> Line.load(path).weight.shape
        torch.Size([1, 3])
    """

    checkpoint_kind: ClassVar[str | None] = None
    checkpoint_limits: ClassVar[Mapping[str, tuple[int, int]] | None] = None

    @classmethod
    def _kind(cls) -> str:
        return cls.checkpoint_kind or cls.__name__

    @classmethod
    def from_config(cls: type[C], config: dict[str, Any], **kwargs: Any) -> C:
        """Rebuild an untrained object from :attr:`config` (plus non-saved arguments such as a model to explain)."""
        return cls(**config, **kwargs)

    def checkpoint_state(self) -> dict[str, torch.Tensor]:
        """The tensors to save (default: ``state_dict()``)."""
        return self.state_dict()  # type: ignore[attr-defined]  # a mixin: the subclass is an nn.Module

    def restore_state(self, state: Mapping[str, torch.Tensor], extra: Mapping[str, Any]) -> None:
        """Load what :meth:`checkpoint_state` saved (default: a strict ``load_state_dict``)."""
        self.load_state_dict(state)  # type: ignore[attr-defined]  # a mixin: the subclass is an nn.Module

    def checkpoint_extra(self) -> dict[str, Any]:
        """Non-tensor values kept beside the weights (training history, counts); default none."""
        return {}

    def save(self, path: str | os.PathLike, *, overwrite: bool = False, extra: dict[str, Any] | None = None) -> Path:
        """Write the object atomically with :func:`save_checkpoint`; refuses to replace a file unless ``overwrite``.

        Returns:
            The path written.
        """
        return save_checkpoint(
            path,
            kind=self._kind(),
            config=dict(self.config),  # type: ignore[attr-defined]  # each subclass defines its config
            state_dict=self.checkpoint_state(),
            extra={**self.checkpoint_extra(), **(extra or {})},
            overwrite=overwrite,
        )

    @classmethod
    def load(cls: type[C], path: str | os.PathLike, **kwargs: Any) -> C:
        """Read an object written by :meth:`save`; it equals the saved one exactly.

        Args:
            path: The file.
            **kwargs: Passed to :meth:`from_config` (arguments that are not saved, such as the model explained).

        Raises:
            pyroflows.errors.CheckpointError: the file is missing, corrupt, of another kind, or does not fit.
        """
        module, _ = restore_module(  # type: ignore[type-var]  # every Checkpointable is an nn.Module; C cannot say so
            path,
            kind=cls._kind(),
            build=lambda config: cls.from_config(config, **kwargs),
            limits=cls.checkpoint_limits,
            restore=lambda obj, state, extra: obj.restore_state(state, extra),
        )
        return module
