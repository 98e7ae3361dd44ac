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
from pathlib import Path
from typing import Any

import torch

from pyroflows.errors import CheckpointError
from pyroflows.io import check_output_path

__all__ = ["save_checkpoint", "load_checkpoint", "FORMAT_VERSION"]

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
    path = check_output_path(path, overwrite=overwrite)
    payload = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "kind": kind,
        "config": config,
        "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
        "extra": extra or {},
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)  # atomic: an interrupted save never leaves a half-written model behind
    return path


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
