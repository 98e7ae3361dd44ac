"""The attribution part of ``pyroflows demo``: both bottlenecks on held-out cluttered digits with the bundled CNN.

Example:
    >>> import tempfile
    >>> lines = run_demo(Path(tempfile.mkdtemp()), fast=True)  # doctest: +SKIP
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from pyroflows.io import check_output_dir, save_array, save_figure

__all__ = ["run_demo", "DEMO_OUTPUTS"]

#: What :func:`run_demo` writes into its folder (checked before any work).
DEMO_OUTPUTS = ("per_sample_maps.npy", "attribution.png")


def run_demo(out_dir: Path, fast: bool, *, overwrite: bool = False) -> list[str]:
    """Attribute held-out cluttered digits with the bundled CNN.

    Bounding-box scores of both bottlenecks, Captum's Saliency and a random map, the maps in ``per_sample_maps.npy`` and
    a figure ``attribution.png``.

    Args:
        out_dir: Folder for the outputs (made when the first file is written).
        fast: Tiny sizes (4 images, 200 estimation images) instead of 100 and 2,000.
        overwrite: Replace earlier outputs.

    Returns:
        Summary lines.

    Raises:
        DataError: an output exists and ``overwrite`` is false.
    """
    from captum.attr import Saliency

    from pyroflows.attribution import PerSampleBottleneck
    from pyroflows.attribution.plots import digit_maps_figure
    from pyroflows.datasets import make_cluttered_digits
    from pyroflows.evaluation import bounding_box_score
    from pyroflows.zoo import BUNDLED_LAYER, load_bundled_model, load_bundled_readout

    check_output_dir(out_dir, DEMO_OUTPUTS, overwrite=overwrite)
    n, n_estimate = (4, 200) if fast else (100, 2000)
    model = load_bundled_model()
    test = make_cluttered_digits(n, split="test", seed=0)
    start = time.perf_counter()
    bottleneck = PerSampleBottleneck(model, BUNDLED_LAYER)
    bottleneck.estimate(make_cluttered_digits(n_estimate, split="train", seed=1).loader(500))
    per_sample = bottleneck.attribute(test.images, test.labels).detach()
    per_sample_s = time.perf_counter() - start
    start = time.perf_counter()
    readout = load_bundled_readout(model).attribute(test.images).detach()
    readout_s = time.perf_counter() - start
    saliency = Saliency(model).attribute(test.images.clone().requires_grad_(), target=test.labels).abs()[:, 0]
    random = torch.rand(test.images.shape[0], 56, 56)
    maps = {"per-sample": per_sample, "readout": readout, "saliency": saliency, "random": random}
    scores = {name: bounding_box_score(m, test.boxes).mean().item() for name, m in maps.items()}
    save_array(out_dir / "per_sample_maps.npy", per_sample.numpy(), overwrite=overwrite)
    figure = digit_maps_figure(test.images, test.labels, test.boxes, {"per-sample": per_sample, "readout": readout})
    save_figure(figure, out_dir / "attribution.png", overwrite=overwrite, dpi=90)
    line = ", ".join(f"{k} {v:.3f}" for k, v in scores.items())
    count = test.images.shape[0]
    return [
        f"bounding-box score on {count} held-out cluttered digits: {line}",
        f"per-sample {per_sample_s / count:.2f} s/image (estimate included), "
        f"readout {readout_s / count * 1000:.1f} ms/image",
        f"maps and figure in {out_dir}",
    ]
