"""``pyroflows evaluate``: the IBA paper's evaluation protocol for many attribution methods, as a table and plots."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from pyroflows import distributed
from pyroflows.cli._common import add_parser, print_json, seed_everything
from pyroflows.errors import DataError

#: Files ``pyroflows evaluate`` writes into ``--out`` (the sensitivity plots follow ``--sensitivity-tiles``).
_FIXED_OUTPUTS = ("table.md", "table.csv", "degradation_8.png", "degradation_14.png", "sanity_check.png", "maps.png")


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
        example="pyroflows evaluate --methods saliency,grad-cam,per-sample --n-images 20 --out evaluation",
    )
    parser.add_argument(
        "--model",
        default="bundled",
        help="'bundled' (default) or a model saved with torch.save(model, PATH) taking 1 x 56 x 56 digits "
        "(loading runs code from the file: only use files you trust)",
    )
    parser.add_argument("--layer", default=None, help="bottleneck layer (default: the bundled model's features.6)")
    parser.add_argument(
        "--methods", default=",".join(DEFAULT_METHODS), help="comma-separated method names (default: all)"
    )
    parser.add_argument("--n-images", type=int, default=24, help="held-out images to evaluate on (default 24)")
    parser.add_argument("--n-masks", type=int, default=20, help="Sensitivity-N masks per n (default 20)")
    parser.add_argument(
        "--sensitivity-steps", type=int, default=6, help="log-spaced n per Sensitivity-N tile size (default 6)"
    )
    parser.add_argument("--sanity-images", type=int, default=8, help="images for the sanity check (default 8)")
    parser.add_argument(
        "--estimation-images", type=int, default=1000, help="training images to estimate the bottleneck on"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--force", action="store_true", help="replace existing output files")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--json", action="store_true", help="print the table as one JSON object")
    parser.set_defaults(handler=run, splits_work=True)


def _load_model(spec: str):
    from pyroflows.attribution import load_bundled_model
    from pyroflows.cli.attribute import _load_user_model

    return load_bundled_model() if spec == "bundled" else _load_user_model(Path(spec))


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
):
    """Run the protocol on held-out cluttered digits and write the table and plots; returns the table."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from pyroflows.attribution import BUNDLED_LAYER
    from pyroflows.datasets import make_cluttered_digits
    from pyroflows.evaluation import MethodContext, available_methods, evaluate_methods
    from pyroflows.io import check_output_path

    unknown = [m for m in methods if m not in available_methods()]
    if unknown:
        raise DataError(f"--methods: unknown {unknown}; choose from {', '.join(available_methods())}")
    if n_images < 1:
        raise DataError(f"--n-images must be at least 1, got {n_images}")
    outputs = [*_FIXED_OUTPUTS, "sensitivity_n_1.png", "sensitivity_n_8.png"]
    for name in outputs:
        check_output_path(out / name, overwrite=force)
    model = _load_model(model_spec)
    if layer is None and model_spec != "bundled" and {"per-sample", "readout"} & set(methods):
        raise DataError("--layer NAME is needed to put the bottleneck into a model given by --model PATH")
    layer = layer or BUNDLED_LAYER
    # Draw a few more test images than needed and keep the correctly classified ones.
    pool = make_cluttered_digits(max(2 * n_images, n_images + 20), split="test", seed=seed)
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
        (out / "table.md").write_text(table.to_markdown())
        table.to_csv(out / "table.csv")
        table.save_plots(out)
        _plot_maps(table, inputs, out / "maps.png", plt)
    return table, len(correct)


def _plot_maps(table, inputs, path: Path, plt) -> None:
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
    figure.savefig(path, dpi=100)
    plt.close(figure)


def run(args: argparse.Namespace) -> int:
    seed_everything(args.seed)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    start = time.perf_counter()
    table, n = evaluate_bundled(
        args.out, model_spec=args.model, layer=args.layer, methods=methods, n_images=args.n_images,
        n_masks=args.n_masks, sensitivity_steps=args.sensitivity_steps,
        sanity_images=args.sanity_images, estimation_images=args.estimation_images,
        seed=args.seed, force=args.force, progress=not args.no_progress and distributed.is_main(),
    )  # fmt: skip
    seconds = time.perf_counter() - start
    if not distributed.is_main():
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
