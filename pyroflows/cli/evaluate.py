"""``pyroflows evaluate``: the IBA paper's evaluation protocol for many attribution methods, as a table and plots."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from pyroflows import distributed
from pyroflows.cli._common import SEED, add_parser, int_arg, print_json, seed_everything
from pyroflows.cli._model_file import TRUST_HELP, check_model_runs
from pyroflows.errors import DataError
from pyroflows.io import save_figure

#: Files ``pyroflows evaluate`` writes into ``--out`` (the sensitivity plots follow ``--sensitivity-tiles``).
_FIXED_OUTPUTS = ("table.md", "table.csv", "degradation_8.png", "degradation_14.png", "sanity_check.png", "maps.png")
#: Everything ``evaluate`` writes (``pyroflows demo`` checks them before any work).
DEMO_OUTPUTS = (*_FIXED_OUTPUTS, "sensitivity_n_1.png", "sensitivity_n_8.png")
_COUNT = int_arg(low=1, high=100_000)


def register(subparsers: Any) -> None:
    from pyroflows.evaluation import DEFAULT_METHODS

    parser = add_parser(
        subparsers,
        "evaluate",
        help="compare attribution methods with the IBA paper's metrics (a Table-1-style table and plots)",
        description=(
            "Attribute held-out cluttered digits with each method and score the maps with the paper's protocol: "
            "degradation (area between the normalised LeRF and MoRF curves, 8x8 and 14x14 tiles), the "
            "bounding-box score, Sensitivity-N (1x1 and 8x8 tiles) and the cascading-randomisation sanity check. "
            "Writes table.md, table.csv and PNG plots to --out. Only images the model classifies correctly are "
            "used, and the target is their label. Methods: " + ", ".join(DEFAULT_METHODS) + "."
        ),
        example="pyroflows evaluate --methods saliency,grad-cam,per-sample --n-images 20 --out evaluation\n"
        "  pyroflows evaluate --task motifs --n-images 50 --out motifs",
    )
    parser.add_argument(
        "--task",
        choices=("digits", "motifs", "keywords"),
        default="digits",
        help="digits (default: cluttered digits and the bundled CNN), motifs (planted DNA motifs and the shipped 1-D "
        "CNN) or keywords (keyword tokens and the shipped transformer): the sequence tasks report the span score "
        "and the top-1 hit rate instead of the bounding box, with the sequence methods by default",
    )
    parser.add_argument(
        "--model",
        default="bundled",
        help="'bundled' (default), or a model taking 1 x 56 x 56 digits: a torch.export program (.pt2), a "
        "TorchScript file (gradient methods only: it takes no hooks), or with --trust-model-file a whole-model "
        "pickle (loading a pickle runs code from the file: only use files you trust)",
    )
    parser.add_argument("--trust-model-file", action="store_true", help=TRUST_HELP)
    parser.add_argument("--layer", default=None, help="bottleneck layer (default: the bundled model's features.6)")
    parser.add_argument(
        "--methods", default=None, help="comma-separated method names (default: all of the task's methods)"
    )
    parser.add_argument("--n-images", type=_COUNT, default=24, help="held-out images to evaluate on (default 24)")
    parser.add_argument("--n-masks", type=int_arg(low=3, high=100_000), default=20,
                        help="Sensitivity-N masks per n, at least 3 for a correlation (default 20)")  # fmt: skip
    parser.add_argument(
        "--sensitivity-steps", type=_COUNT, default=6, help="log-spaced n per Sensitivity-N tile size (default 6)"
    )
    parser.add_argument("--sanity-images", type=_COUNT, default=8, help="images for the sanity check (default 8)")
    parser.add_argument(
        "--estimation-images", type=_COUNT, default=1000, help="training images to estimate the bottleneck on"
    )
    parser.add_argument("--seed", type=SEED, default=0, help="random seed (default 0)")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--force", action="store_true", help="replace existing output files")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--json", action="store_true", help="print the table as one JSON object")
    parser.set_defaults(handler=run, splits_work=True)


def _load_model(spec: str, trust: bool = False):
    from pyroflows.attribution import load_bundled_model
    from pyroflows.cli._model_file import load_model_file

    return load_bundled_model() if spec == "bundled" else load_model_file(Path(spec), trust=trust)


def evaluate_bundled(
    out: Path,
    *,
    model_spec: str = "bundled",
    layer: str | None = None,
    methods: list[str],
    n_images: int,
    n_masks: int = 20,
    sensitivity_steps: int = 6,
    sanity_images: int = 8,
    estimation_images: int = 1000,
    seed: int = 0,
    force: bool = False,
    progress: bool = True,
    trust_model_file: bool = False,
):
    """Run the protocol on held-out cluttered digits and write the table and plots; returns the table."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from pyroflows.attribution import BUNDLED_LAYER
    from pyroflows.attribution.hooks import resolve_layer
    from pyroflows.datasets import make_cluttered_digits
    from pyroflows.evaluation import MethodContext, evaluate_methods
    from pyroflows.io import atomic_outputs, check_output_dir

    _check_methods(methods, n_images)
    check_output_dir(out, DEMO_OUTPUTS, overwrite=force)
    model = _load_model(model_spec, trust_model_file)
    if layer is None and model_spec != "bundled" and {"per-sample", "readout"} & set(methods):
        raise DataError("--layer NAME is needed to put the bottleneck into a model given by --model PATH")
    if layer is not None and not layer.strip():
        raise DataError("--layer: expected a dotted module name, got an empty string")
    given_layer = layer is not None
    layer = layer or BUNDLED_LAYER
    if given_layer or {"per-sample", "readout"} & set(methods):
        try:
            resolve_layer(model, layer)
        except ValueError as exc:
            raise DataError(f"--layer: {exc}") from exc
        if isinstance(model, torch.jit.ScriptModule):
            raise DataError(f"{model_spec}: a TorchScript model takes no hooks, so layer methods cannot run on it; "
                            "save a torch.export program (.pt2)")  # fmt: skip
    # Draw a few more test images than needed and keep the correctly classified ones.
    pool = make_cluttered_digits(max(2 * n_images, n_images + 20), split="test", seed=seed)
    check_model_runs(model, pool.images, what=f"--model {model_spec}")
    with torch.no_grad():
        correct = (model(pool.images).argmax(1) == pool.labels).nonzero().flatten()[:n_images]
    if len(correct) == 0:
        raise DataError("the model classifies none of the test images correctly; nothing to evaluate")
    inputs, labels, boxes = pool.images[correct], pool.labels[correct], pool.boxes[correct]
    data = make_cluttered_digits(estimation_images, split="train", seed=seed).images
    context = MethodContext(layer=layer, data=data, seed=seed)
    table = evaluate_methods(
        model, inputs, labels, methods, boxes=boxes, context=context, n_masks=n_masks,
        sensitivity_steps=sensitivity_steps, sanity_images=sanity_images, seed=seed, progress=progress,
    )  # fmt: skip
    if distributed.is_main():  # under torchrun the table is complete on every rank; rank 0 writes it
        with atomic_outputs(overwrite=force) as outputs:  # the table and every plot, or nothing
            outputs.write(out / "table.md", lambda tmp: tmp.write_text(table.to_markdown(), encoding="utf-8"))
            table.to_csv(out / "table.csv", outputs=outputs)
            table.save_plots(out, outputs=outputs)
            _plot_maps(table, inputs, out / "maps.png", plt, outputs)
    return table, len(correct)


def _plot_maps(table, inputs, path: Path, plt, outputs) -> None:
    shown = [r for r in table.results.values() if r.maps is not None]
    columns = min(4, inputs.shape[0])
    figure, axes = plt.subplots(columns, len(shown) + 1, figsize=(1.6 * (len(shown) + 1), 1.7 * columns))
    axes = axes.reshape(columns, -1)
    for row in range(columns):
        axes[row, 0].imshow(inputs[row, 0].cpu().numpy(), cmap="gray")
        for col, result in enumerate(shown, 1):
            axes[row, col].imshow(result.maps[row].cpu().numpy(), cmap="magma")
            if row == 0:
                axes[row, col].set_title(result.method, fontsize=7)
    for ax in axes.flat:
        ax.set_axis_off()
    figure.tight_layout()
    try:
        save_figure(figure, path, outputs=outputs, dpi=100)
    finally:
        plt.close(figure)


def _check_methods(methods: list[str], n_images: int) -> None:
    """Refuse, before any work, an empty or unknown ``--methods`` and a non-positive ``--n-images``."""
    from pyroflows.evaluation import available_methods

    if not methods:
        raise DataError("--methods: no method given; choose from " + ", ".join(available_methods()))
    unknown = [m for m in methods if m not in available_methods()]
    if unknown:
        raise DataError(f"--methods: unknown {unknown}; choose from {', '.join(available_methods())}")
    if n_images < 1:
        raise DataError(f"--n-images must be at least 1, got {n_images}")


def evaluate_sequences(
    out: Path, *, task: str, methods: list[str], n_images: int, n_masks: int, sensitivity_steps: int,
    sanity_images: int, estimation_images: int, seed: int, force: bool, progress: bool,
):  # fmt: skip
    """Run the protocol on a shipped sequence task and write the table, the plots and ``maps.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pyroflows.evaluation.sequence_tasks import evaluate_sequence_task
    from pyroflows.io import atomic_outputs, check_output_dir

    _check_methods(methods, n_images)
    check_output_dir(out, ["table.md", "table.csv", "maps.png", "sanity_check.png"], overwrite=force)
    table, setup = evaluate_sequence_task(
        task, methods, n=n_images, estimation=estimation_images, seed=seed, n_masks=n_masks,
        sensitivity_steps=sensitivity_steps, sanity_images=sanity_images, progress=progress,
    )  # fmt: skip
    from pyroflows.cli.attribute_sequences import plot_sequence_maps

    shown = {r.method: r.maps for r in table.results.values() if r.maps is not None}
    if not distributed.is_main():  # under torchrun the table is complete on every rank; rank 0 writes it
        return table, len(setup.target)
    with atomic_outputs(overwrite=force) as outputs:  # the table and every plot, or nothing
        outputs.write(out / "table.md", lambda tmp: tmp.write_text(table.to_markdown(), encoding="utf-8"))
        table.to_csv(out / "table.csv", outputs=outputs)
        table.save_plots(out, tile_sizes=setup.degradation_tiles, outputs=outputs)
        plot_sequence_maps(out / "maps.png", setup.inputs[:4], shown, spans=setup.spans[:4], plt=plt,
                           outputs=outputs)  # fmt: skip
    return table, len(setup.target)


def run(args: argparse.Namespace) -> int:
    from pyroflows.evaluation import DEFAULT_METHODS, SEQUENCE_METHODS

    seed_everything(args.seed)
    default = DEFAULT_METHODS if args.task == "digits" else SEQUENCE_METHODS
    methods = [m.strip() for m in (",".join(default) if args.methods is None else args.methods).split(",") if m.strip()]
    start = time.perf_counter()
    if args.task != "digits":
        if args.model != "bundled" or args.layer is not None:
            raise DataError("--model and --layer apply to --task digits; the sequence tasks use their shipped models")
        table, n = evaluate_sequences(
            args.out, task=args.task, methods=methods, n_images=args.n_images, n_masks=args.n_masks,
            sensitivity_steps=args.sensitivity_steps, sanity_images=args.sanity_images,
            estimation_images=args.estimation_images, seed=args.seed, force=args.force,
            progress=not args.no_progress and distributed.is_main(),
        )  # fmt: skip
        return _report(args, table, n, time.perf_counter() - start)
    table, n = evaluate_bundled(
        args.out, model_spec=args.model, layer=args.layer, methods=methods, n_images=args.n_images,
        n_masks=args.n_masks, sensitivity_steps=args.sensitivity_steps,
        sanity_images=args.sanity_images, estimation_images=args.estimation_images,
        seed=args.seed, force=args.force, progress=not args.no_progress and distributed.is_main(),
        trust_model_file=args.trust_model_file,
    )  # fmt: skip
    return _report(args, table, n, time.perf_counter() - start)


def _report(args: argparse.Namespace, table: Any, n: int, seconds: float) -> int:
    if not distributed.is_main():  # under torchrun rank 0 alone prints
        return 0
    if args.json:
        print_json({"images": n, "seconds": seconds, "rows": table.rows(), "out": str(args.out)})
    else:
        print(table.to_markdown(), end="")
        print(f"{n} images, {seconds:.1f} s; wrote {args.out}/table.md, table.csv and plots")
    return 0


def run_demo(out_dir: Path, fast: bool) -> list[str]:
    """Evaluate a few methods on a few digits: the table's headline numbers (the bottleneck only without ``fast``)."""
    methods = ["random", "saliency", "grad-cam"] + ([] if fast else ["per-sample"])
    table, n = evaluate_bundled(
        out_dir, methods=methods, n_images=3 if fast else 12, n_masks=5 if fast else 20,
        sensitivity_steps=2 if fast else 6, sanity_images=1 if fast else 4, estimation_images=100 if fast else 500,
        force=True, progress=False,
    )  # fmt: skip
    lines = [f"{n} digits; degradation_8 / bbox / sanity SSIM per method:"]
    for row in table.rows():
        lines.append(f"{row['method']:>12}: {row['degradation_8']:.3f} / {row['bbox']:.3f} / {row['sanity_ssim']:.2f}")
    return lines
