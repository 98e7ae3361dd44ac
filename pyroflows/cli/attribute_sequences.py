"""``pyroflows attribute DATA.npy`` for sequences: per-position bottleneck maps of ``[N, C, L]`` or ``[N, L]`` inputs.

Sequence mode is chosen when ``--model`` is ``motifs`` or ``keywords`` (the shipped sequence models), or a model
file is given with ``--data`` holding ``[N, C, L]`` floats or ``[N, L]`` integer token ids. DATA.npy then holds a
batch of sequences of that form; the maps (bits per input position, float32 ``[N, L]``) are written to
``DIR/<name>.npy`` and a plot of them over the sequence to ``DIR/<name>.png``.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pyroflows import distributed
from pyroflows.cli._common import print_json, seed_everything
from pyroflows.errors import DataError, NumericalError
from pyroflows.io import atomic_outputs, check_output_dir, save_array

__all__ = ["is_sequence_request", "run_sequences", "load_sequences"]

SHIPPED = ("motifs", "keywords")


def load_sequences(path: Path) -> torch.Tensor:
    """``[N, C, L]`` float sequences or ``[N, L]`` integer token ids from a ``.npy`` file.

    Raises:
        DataError: missing or unreadable file, another shape, NaN, negative token ids.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such data file")
    try:
        array = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise DataError(f"{path}: not a readable numeric .npy file ({type(exc).__name__})") from exc
    if np.issubdtype(array.dtype, np.integer) and array.ndim == 2:
        if (array < 0).any():
            raise DataError(f"{path}: token ids must be non-negative")
        return torch.from_numpy(array.astype(np.int64))
    if np.issubdtype(array.dtype, np.floating) and array.ndim == 3:
        if not np.isfinite(array).all():
            raise DataError(f"{path}: the sequences hold NaN or infinity")
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    raise DataError(
        f"{path}: expected float sequences [N, C, L] or integer token ids [N, L], got {array.dtype} {list(array.shape)}"
    )


def is_sequence_request(args: argparse.Namespace) -> bool:
    """Whether ``pyroflows attribute`` was asked for sequences (see the module docstring)."""
    if args.model in SHIPPED:
        return True
    if args.model == "bundled" or args.data is None:
        return False
    try:
        load_sequences(args.data)
    except DataError:
        return False
    return True


def _setup(args: argparse.Namespace):
    from pyroflows.attribution import PerSampleBottleneck

    if args.method != "per-sample":
        raise DataError("sequences are attributed with --method per-sample (a readout must be trained first)")
    pad_id = args.pad_id
    if args.model in SHIPPED:
        from pyroflows.evaluation.sequence_tasks import sequence_task

        setup = sequence_task(args.model, n=1, estimation=2000, seed=args.seed)
        model, data = setup.model, setup.train_inputs if args.data is None else load_sequences(args.data)
        layer = args.layer or setup.context.layer
        channel_dim = setup.context.channel_dim if args.channel_dim is None else args.channel_dim
        if args.model == "keywords" and pad_id is None:
            pad_id = 0
    else:
        from pyroflows.cli.attribute import _load_user_model

        if args.layer is None:
            raise DataError("a user model needs --layer NAME (and --data FILE.npy to estimate statistics on)")
        trust = getattr(args, "trust_model_file", None)  # where the CLI has --trust-model-file, it is honoured
        path = Path(args.model)
        model = _load_user_model(path) if trust is None else _load_user_model(path, trust)
        data, layer = load_sequences(args.data), args.layer
        channel_dim = 1 if args.channel_dim is None else args.channel_dim
    assert layer is not None  # a shipped task names its layer; a user model needs --layer (checked above)
    padding = None if pad_id is None else (lambda tokens, _args, pad=pad_id: tokens == pad)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*cannot be split at.*")
        bottleneck = PerSampleBottleneck(
            model, layer, beta=args.beta, steps=args.steps, channel_dim=channel_dim, padding_mask=padding
        )
        bottleneck.estimate(data)
    return model, bottleneck, data


def __getattr__(name: str) -> Any:
    # ``plot_sequence_maps`` moved to the library (:mod:`pyroflows.attribution.plots`); still importable from here.
    if name == "plot_sequence_maps":
        from pyroflows.attribution.plots import plot_sequence_maps

        return plot_sequence_maps
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def run_sequences(args: argparse.Namespace) -> int:
    """Handler of ``pyroflows attribute`` in sequence mode."""
    if args.steps < 1 or args.beta < 0:
        raise DataError("--steps must be at least 1 and --beta non-negative")
    stems = [p.stem for p in args.images]
    if len(set(stems)) != len(stems):
        raise DataError("several data files share a name; their outputs would collide")
    check_output_dir(args.out, [f"{stem}{suffix}" for stem in stems for suffix in (".npy", ".png")],
                     overwrite=args.force)  # fmt: skip
    outputs = [(args.out / f"{s}.npy", args.out / f"{s}.png") for s in stems]
    batches = [load_sequences(p) for p in args.images]
    seed_everything(args.seed)
    start = time.perf_counter()
    model, bottleneck, data = _setup(args)
    results = []
    for path, x in zip(args.images, batches, strict=True):
        if x.shape[1:] != data.shape[1:] or x.dtype.is_floating_point != data.dtype.is_floating_point:
            raise DataError(f"{path}: sequences {list(x.shape)} do not match the model's inputs {list(data.shape)}")
        with torch.no_grad():
            predicted = model(x).argmax(-1)
        target = predicted if args.target is None else torch.full_like(predicted, args.target)
        maps = bottleneck.attribute(x, target).detach()
        if not bool(torch.isfinite(maps).all()):
            raise NumericalError(f"the attribution maps of {path} hold NaN or infinity; nothing was written")
        results.append(maps)
    if not distributed.is_main():  # under torchrun: the maps are gathered on every rank; rank 0 alone writes
        return 0
    summary: list[dict[str, Any]] = []
    from pyroflows.attribution.plots import plot_sequence_maps

    with atomic_outputs(overwrite=args.force) as group:  # every map and plot, or none
        for path, x, maps, (npy, png) in zip(args.images, batches, results, outputs, strict=True):
            save_array(npy, maps.numpy().astype(np.float32), outputs=group)
            plot_sequence_maps(png, x, {"per-sample": maps}, outputs=group)
            summary.append({"data": str(path), "sequences": int(x.shape[0]), "npy": str(npy), "png": str(png),
                            "peak_positions": maps.argmax(1).tolist()[:10]})  # fmt: skip
    seconds = time.perf_counter() - start
    if args.json:
        print_json({"layer": bottleneck.layer_name, "seconds": seconds, "files": summary})
    else:
        for row in summary:
            print(f"{row['data']}: {row['sequences']} sequence(s), peaks at {row['peak_positions']} -> "
                  f"{row['npy']}, {row['png']}")  # fmt: skip
        print(f"per-sample bottleneck at {bottleneck.layer_name}: {seconds:.1f} s")
    return 0
