"""Loading a user's model file (``--model PATH``) without running code from the file unless told to.

Three kinds of file are read:

- a ``torch.export`` program (``torch.export.save(torch.export.export(model, (x,)), "model.pt2")``): loaded with
  ``torch.export.load``, which runs no pickled code; its module hierarchy is restored with
  ``torch.export.unflatten``, so ``--layer`` names the same modules as in the original model;
- a TorchScript file (``torch.jit.save(torch.jit.script(model), "model.ts")``): loaded with ``torch.jit.load``,
  which runs TorchScript, not Python; TorchScript modules take no hooks, so the bottleneck methods cannot be
  inserted into one (the gradient baselines of ``evaluate`` can run it);
- a whole-model pickle (``torch.save(model, PATH)``): unpickling runs code from the file, so it is refused unless
  ``--trust-model-file`` is given, and then loaded with a warning.

Example:
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "model.pt2"
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    >>> torch.export.save(torch.export.export(model, (torch.zeros(2, 1, 2, 2),)), path)
    >>> check_model_runs(load_model_file(path), torch.zeros(3, 1, 2, 2), what="model.pt2").shape
    torch.Size([2, 2])

The command line: ``pyroflows attribute x.npy --model model.pt2 --layer features.3 --data train.npy --out maps``.
"""

from __future__ import annotations

import warnings
import zipfile
from pathlib import Path

import torch

from pyroflows.errors import CheckpointError, DataError, PyroflowsWarning

__all__ = ["load_model_file", "check_model_runs", "TrustedPickleWarning"]


class TrustedPickleWarning(PyroflowsWarning):
    """A whole-model pickle is loaded because the caller trusts it (``trust=True``, ``--trust-model-file``).

    Unpickling runs code from the file, so this is said on every load.
    """


def _zip_names(path: Path) -> list[str]:
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return []


def load_model_file(path: str | Path, *, trust: bool = False) -> torch.nn.Module:
    """The model in ``path`` (a ``.pt2`` program, TorchScript, or with ``trust`` a pickle), in eval mode.

    Raises:
        CheckpointError: missing or unreadable file, not a model, or a pickle without ``trust``.

    Warns:
        TrustedPickleWarning: on every load of a pickle with ``trust``.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such model file")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, expected a model file")
    names = _zip_names(path)
    if (
        path.suffix.lower() == ".pt2"
        or any(n.endswith("serialized_exported_program.json") for n in names)
        or any(n.split("/", 1)[-1].startswith("models/") and n.endswith(".json") for n in names)
    ):
        try:
            with warnings.catch_warnings():  # torch's own deprecation notices from its pytree internals
                warnings.simplefilter("ignore", FutureWarning)
                warnings.simplefilter("ignore", DeprecationWarning)
                program = torch.export.load(path)
                model: torch.nn.Module = torch.export.unflatten(program)
        except Exception as exc:
            message = " ".join(str(exc).split())[:200]
            raise CheckpointError(
                f"{path}: not a readable torch.export program ({type(exc).__name__}: {message})"
            ) from exc
        return model.eval()
    if any(n.split("/", 1)[-1].startswith("code/") for n in names) or any(n.endswith("constants.pkl") for n in names):
        try:
            with warnings.catch_warnings():  # torch 2.13 deprecates TorchScript; reading a user's file still works
                warnings.filterwarnings("ignore", "`torch.jit.load` is deprecated", DeprecationWarning)
                model = torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:
            raise CheckpointError(
                f"{path}: not a readable TorchScript file ({type(exc).__name__}: {' '.join(str(exc).split())[:200]})"
            ) from exc
        return model.eval()
    if not trust:
        raise CheckpointError(
            f"{path}: is not a torch.export program (.pt2) or TorchScript file; a whole-model pickle "
            "(torch.save(model, PATH)) runs code from the file when loaded, so it needs --trust-model-file"
        )
    warnings.warn(
        f"{path}: loading a whole-model pickle runs code from the file (--trust-model-file); only use files you trust",
        TrustedPickleWarning,
        stacklevel=2,
    )
    try:
        model = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise CheckpointError(
            f"{path}: could not load a model saved with torch.save(model, PATH) ({type(exc).__name__}: "
            f"{' '.join(str(exc).split())[:200]})"
        ) from exc
    if not isinstance(model, torch.nn.Module):
        raise CheckpointError(f"{path}: holds a {type(model).__name__}, not a torch.nn.Module")
    return model.eval()


def check_model_runs(model: torch.nn.Module, inputs: torch.Tensor, *, what: str) -> torch.Tensor:
    """Run ``model`` on a couple of ``inputs`` rows, turning a failure into a one-line :class:`DataError`.

    Returns:
        The logits ``[n, classes]``.
    """
    try:
        with torch.no_grad():
            logits = model(inputs[:2])
    except Exception as exc:  # a raw conv / matmul shape error deep inside the user's model
        raise DataError(
            f"{what}: the model cannot run on inputs of shape {list(inputs.shape[1:])} ({type(exc).__name__}: "
            f"{' '.join(str(exc).split())[:160]})"
        ) from exc
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
        shape = list(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise DataError(f"{what}: the model must return logits [N, classes], got {shape}")
    return logits
