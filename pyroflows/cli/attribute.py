"""``pyroflows attribute``: information-bottleneck attribution maps for images, written as ``.npy`` and PNG."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pyroflows import distributed
from pyroflows.cli._common import SEED, add_parser, float_arg, int_arg, print_json, seed_everything
from pyroflows.cli._model_file import add_model_file_arguments, check_model_runs, load_model_file
from pyroflows.errors import DataError, NumericalError
from pyroflows.io import atomic_outputs, check_output_dir, check_real, save_array

__all__ = ["register", "run", "load_image"]

_DESCRIPTION = """\
Attribute each IMAGE to its input pixels with an information bottleneck (Schulz et al., ICLR 2020) and write
DIR/<name>.npy (the map, bits per pixel, float32 [H, W]) and DIR/<name>.png (the image with the map overlaid and a
colour bar in bits).

IMAGE is a .png (RGB or grey; converted to the model's channels) or a .npy array [H, W] or [C, H, W] in the
model's input scale (the bundled model takes 1 x 56 x 56 in [0, 1], e.g. from pyroflows.datasets.
make_cluttered_digits). Images of another size are refused, not resized.

--model bundled (default) is the shipped cluttered-digits CNN, with statistics estimated on built-in training
digits and the shipped readout. --model PATH loads a torch.export program (.pt2, from torch.export.save) or a
TorchScript file without running pickled code; a whole model saved with torch.save(model, PATH) is unpickled only
with --trust-model-file, because loading it runs code from the file (only use files you trust; the model's class
must be importable). TorchScript modules take no hooks, so the bottleneck cannot be put into them. A model given
by PATH needs --layer and --data (a .npy of inputs [N, ...] to estimate the layer's
statistics; the paper uses ~10,000) and, for --method readout, --readout (a file saved by ReadoutBottleneck.save).

Sequences: DATA.npy holding [N, C, L] float sequences or [N, L] integer token ids, with --model motifs or keywords
(the shipped sequence models) or a model file whose --data has that form; --channel-dim -1 for batch-first
transformer layers [N, L, C]. Writes DIR/<name>.npy (maps [N, L], bits per input position) and DIR/<name>.png (the
maps over the sequence). Example: pyroflows attribute seqs.npy --model motifs --out maps
"""


def register(subparsers: Any) -> None:
    """Add the ``attribute`` command to ``subparsers``."""
    parser = add_parser(
        subparsers,
        "attribute",
        description=_DESCRIPTION,
        example="pyroflows attribute digit.npy other.png --method per-sample --beta 10 --out maps",
    )
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help=".png or .npy images")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="output directory")
    parser.add_argument(
        "--model",
        default="bundled",
        help="'bundled' (default), a torch.export program (.pt2), or with --trust-model-file a whole-model pickle "
        "(loading a pickle runs code from the file: only use files you trust)",
    )
    add_model_file_arguments(parser)
    parser.add_argument("--layer", default=None, help="bottleneck layer, a dotted module name (bundled: features.6)")
    parser.add_argument("--method", choices=("per-sample", "readout"), default="per-sample", help="default per-sample")
    parser.add_argument(
        "--beta",
        type=float_arg(low=0),
        default=10.0,
        help="information-loss weight of the per-sample bottleneck (default 10; a readout keeps the beta it was "
        "trained with)",
    )
    parser.add_argument("--steps", type=int_arg(low=1, high=100_000), default=10,
                        help="optimisation steps, per-sample only (default 10)")  # fmt: skip
    parser.add_argument("--target", type=int_arg(low=0, high=10**9), default=None,
                        help="class to explain, per-sample only (default: the predicted class)")  # fmt: skip
    parser.add_argument("--data", type=Path, default=None, help=".npy inputs [N, ...] to estimate statistics on")
    parser.add_argument("--readout", type=Path, default=None, help="saved readout bottleneck (user models)")
    parser.add_argument("--seed", type=SEED, default=0, help="random seed (default 0)")
    parser.add_argument("--force", action="store_true", help="replace existing output files")
    parser.add_argument("--json", action="store_true", help="print a JSON summary instead of text")
    parser.add_argument(
        "--channel-dim", type=int, default=None,
        help="sequences: axis of the layer's channels (1 for [N, C, L]; -1 for batch-first transformer features)",
    )  # fmt: skip
    parser.add_argument("--pad-id", type=int, default=None, help="token inputs: padding id, left out of the maps")
    parser.set_defaults(handler=run, splits_work=True)


def load_image(path: Path, shape: tuple[int, ...]) -> torch.Tensor:
    """Read one ``.png`` or ``.npy`` image as a float32 tensor of ``shape`` ``(C, H, W)``.

    Raises:
        DataError: missing or unreadable file, unsupported suffix, NaN, or a size other than ``shape``'s.
    """
    if not path.exists():
        raise DataError(f"{path}: no such image file")
    suffix = path.suffix.lower()
    if suffix == ".png":
        import matplotlib.image

        try:
            array = np.asarray(matplotlib.image.imread(path), dtype=np.float32)
        except Exception as exc:
            raise DataError(f"{path}: not a readable PNG ({type(exc).__name__})") from exc
        if array.ndim == 3:
            array = array[..., :3] if array.shape[-1] == 4 else array  # drop alpha
            array = np.moveaxis(array, -1, 0)
    elif suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
            check_real(array, name=str(path))
            array = np.asarray(array, dtype=np.float32)
        except DataError:
            raise
        except Exception as exc:
            raise DataError(f"{path}: not a readable numeric .npy file ({type(exc).__name__})") from exc
    else:
        raise DataError(f"{path}: unsupported image type {suffix!r}; use .png or .npy")
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise DataError(f"{path}: expected an image [H, W] or [C, H, W], got shape {list(array.shape)}")
    if not np.isfinite(array).all():
        raise DataError(f"{path}: the image holds NaN or infinity")
    channels = shape[0]
    if array.shape[0] != channels:
        if channels == 1 and array.shape[0] == 3:
            array = array.mean(0, keepdims=True)  # grey from RGB
        elif channels == 3 and array.shape[0] == 1:
            array = np.repeat(array, 3, axis=0)
        else:
            raise DataError(f"{path}: has {array.shape[0]} channels; the model takes {channels}")
    if tuple(array.shape[1:]) != tuple(shape[1:]):
        size = " x ".join(map(str, shape[1:]))
        raise DataError(f"{path}: is {' x '.join(map(str, array.shape[1:]))} pixels; the model takes {size}")
    return torch.from_numpy(np.ascontiguousarray(array))


def _load_data(path: Path) -> torch.Tensor:
    """The ``--data`` inputs ``[N, ...]`` from a ``.npy`` file, with the CLI's one-line errors."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such data file")
    try:
        array = np.load(path, allow_pickle=False)
        check_real(array, name=str(path))
        data = torch.from_numpy(array.astype(np.float32))
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{path}: not a readable numeric .npy file ({type(exc).__name__})") from exc
    if data.ndim < 2 or not torch.isfinite(data).all():
        raise DataError(f"{path}: expected finite inputs [N, ...], got shape {list(data.shape)}")
    return data


def _load_user_model(path: Path, trust: bool = False) -> torch.nn.Module:
    return load_model_file(path, trust=trust)


def _bottleneck(args: argparse.Namespace):
    from pyroflows.attribution import PerSampleBottleneck, ReadoutBottleneck
    from pyroflows.datasets import make_cluttered_digits
    from pyroflows.zoo import BUNDLED_LAYER, load_bundled_model, load_bundled_readout

    model: torch.nn.Module
    if args.model == "bundled":
        model = load_bundled_model()
        layer = args.layer or BUNDLED_LAYER
        shape: tuple[int, ...] = (1, 56, 56)
        data = None if args.data is None else _load_data(args.data)
        if data is not None and tuple(data.shape[1:]) != shape:
            raise DataError(f"{args.data}: inputs of shape {list(data.shape[1:])}; the bundled model takes "
                            f"{list(shape)}")  # fmt: skip
        if args.method == "readout":
            if args.layer not in (None, BUNDLED_LAYER):
                raise DataError(f"the bundled readout sits at {BUNDLED_LAYER}; --layer {args.layer} needs per-sample")
            readout = (
                load_bundled_readout(model) if args.readout is None else ReadoutBottleneck.load(args.readout, model)
            )
            return model, readout, shape
        if data is None and layer == BUNDLED_LAYER:
            # The shipped readout holds this layer's statistics over 5,000 training digits: no estimation needed.
            bottleneck = PerSampleBottleneck(model, layer, beta=args.beta, steps=args.steps)
            stats = load_bundled_readout(model)
            assert stats.mean is not None and stats.std is not None and stats.active is not None  # loaded with them
            bottleneck.set_statistics(stats.mean, stats.std, stats.active, stats.n_samples)
            return model, bottleneck, shape
        if data is None:
            data = make_cluttered_digits(2000, split="train", seed=1).images
    else:
        model = _load_user_model(Path(args.model), getattr(args, "trust_model_file", False))
        if isinstance(model, torch.jit.ScriptModule):
            raise DataError(
                f"{args.model}: a TorchScript model takes no hooks, so the bottleneck cannot be put into it; save a "
                "torch.export program (.pt2) instead"
            )
        if args.method == "readout":
            if args.readout is None:
                raise DataError("--method readout with a user model needs --readout FILE (ReadoutBottleneck.save)")
            if args.data is None:
                raise DataError("--data is needed to know the input shape of a user model")
            data = _load_data(args.data)
            check_model_runs(model, data, what=f"--data {args.data}")
            readout = ReadoutBottleneck.load(args.readout, model)
            return model, readout, tuple(data.shape[1:])
        if args.layer is None or args.data is None:
            raise DataError("a user model needs --layer NAME and --data FILE.npy (inputs to estimate statistics on)")
        data = _load_data(args.data)
        check_model_runs(model, data, what=f"--data {args.data}")
        shape = tuple(data.shape[1:])
        layer = args.layer
    bottleneck = PerSampleBottleneck(model, layer, beta=args.beta, steps=args.steps)  # LayerNotFoundError: a DataError
    return model, bottleneck.estimate(data), shape


def run(args: argparse.Namespace) -> int:
    """Handler of ``pyroflows attribute``."""
    from pyroflows.cli.attribute_sequences import is_sequence_request, run_sequences

    if is_sequence_request(args):
        return run_sequences(args)
    stems = [p.stem for p in args.images]
    duplicates = sorted({s for s in stems if stems.count(s) > 1})
    if duplicates:
        raise DataError(f"several images share the name {duplicates[0]!r}; their outputs would collide")
    if args.method == "readout" and args.target is not None:
        raise DataError("--target applies to --method per-sample; the readout's map does not depend on the target")
    if args.layer is not None and not args.layer.strip():
        raise DataError("--layer: expected a dotted module name, got an empty string")
    # Refuse before computing anything; the directory is made only once the maps exist.
    check_output_dir(args.out, [f"{stem}{suffix}" for stem in stems for suffix in (".npy", ".png")],
                     overwrite=args.force)  # fmt: skip
    outputs = [(args.out / f"{stem}.npy", args.out / f"{stem}.png") for stem in stems]
    seed_everything(args.seed)
    start = time.perf_counter()
    if args.model == "bundled":  # check the images before the (seconds-long) estimation
        [load_image(p, (1, 56, 56)) for p in args.images]
    model, bottleneck, shape = _bottleneck(args)
    images = torch.stack([load_image(p, shape) for p in args.images])
    logits = check_model_runs(model, images, what=", ".join(map(str, args.images[:3])))
    with torch.no_grad():
        predicted = model(images).argmax(-1)
    n_classes = int(logits.shape[-1])
    if args.target is not None and not 0 <= args.target < n_classes:
        raise DataError(f"--target must be a class index in [0, {n_classes}), got {args.target}")
    target = predicted if args.target is None else torch.full_like(predicted, args.target)
    maps = bottleneck.attribute(images, target).detach()  # under torchrun: sharded, gathered on every rank
    if not bool(torch.isfinite(maps).all()):
        bad = [str(p) for p, m in zip(args.images, maps, strict=True) if not bool(torch.isfinite(m).all())]
        raise NumericalError(f"the attribution maps of {', '.join(bad[:3])} hold NaN or infinity; nothing was written")
    if not distributed.is_main():  # rank 0 alone writes, once every rank's maps have arrived
        return 0
    summary = _write(args, images, maps, outputs, predicted, target)
    _report(args, summary, bottleneck.layer_name, time.perf_counter() - start)
    return 0


def _write(
    args: argparse.Namespace, images: torch.Tensor, maps: torch.Tensor, outputs: list[tuple[Path, Path]],
    predicted: torch.Tensor, target: torch.Tensor,
) -> list[dict[str, Any]]:  # fmt: skip
    """Each image's map (``.npy``) and overlay (``.png``), all or none; one summary row per image."""
    from pyroflows.attribution.plots import save_overlay

    summary = []
    with atomic_outputs(overwrite=args.force) as group:  # all maps and figures, or none
        for image, heatmap, (npy, png), path, pred, tgt in zip(
            images, maps, outputs, args.images, predicted.tolist(), target.tolist(), strict=True
        ):
            array = heatmap.numpy().astype(np.float32)
            save_array(npy, array, outputs=group)
            row = {"image": str(path), "predicted": pred, "max_bits": float(array.max())}
            title = f"{path.name}: predicted {pred}, {args.method}"
            if args.method == "per-sample":
                row["target"] = tgt
                title = f"{path.name}: target {tgt} (predicted {pred}), {args.method}"
            save_overlay(png, image, array, title, outputs=group)
            summary.append({**row, "npy": str(npy), "png": str(png)})
    return summary


def _report(args: argparse.Namespace, summary: list[dict[str, Any]], layer: str, seconds: float) -> None:
    if args.json:
        print_json({"method": args.method, "layer": layer, "seconds": seconds, "images": summary})
        return
    for row in summary:
        explained = f"target {row['target']} (predicted {row['predicted']})" if "target" in row else (
            f"predicted {row['predicted']}")  # fmt: skip
        print(f"{row['image']}: {explained}, max {row['max_bits']:.3f} bits/pixel -> {row['npy']}, {row['png']}")
    print(f"{args.method} bottleneck at {layer}: {len(summary)} image(s) in {seconds:.1f} s")
