"""The evaluation part of ``pyroflows demo``: a few methods on a few digits through :func:`evaluate_bundled`.

Example:
    >>> import tempfile
    >>> lines = run_demo(Path(tempfile.mkdtemp()), fast=True)  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

from pyroflows.evaluation.bundled import BUNDLED_OUTPUTS, evaluate_bundled

__all__ = ["run_demo", "DEMO_OUTPUTS"]

#: What :func:`run_demo` writes into its folder (checked before any work).
DEMO_OUTPUTS = BUNDLED_OUTPUTS


def run_demo(out_dir: Path, fast: bool, *, overwrite: bool = False) -> list[str]:
    """Evaluate random maps, Saliency and Grad-CAM on a few held-out digits.

    The per-sample bottleneck too without ``fast``; returns the table's headline numbers.

    Args:
        out_dir: Folder for the table and plots.
        fast: 3 images and tiny metric settings instead of 12.
        overwrite: Replace earlier outputs.

    Returns:
        Summary lines: the image count, then degradation_8 / bbox / sanity SSIM per method.
    """
    methods = ["random", "saliency", "grad-cam"] + ([] if fast else ["per-sample"])
    table, n = evaluate_bundled(
        out_dir, methods=methods, n_images=3 if fast else 12, n_masks=5 if fast else 20,
        sensitivity_steps=2 if fast else 6, sanity_images=1 if fast else 4, estimation_images=100 if fast else 500,
        force=overwrite, progress=False,
    )  # fmt: skip
    lines = [f"{n} digits; degradation_8 / bbox / sanity SSIM per method:"]
    for row in table.rows():
        lines.append(f"{row['method']:>12}: {row['degradation_8']:.3f} / {row['bbox']:.3f} / {row['sanity_ssim']:.2f}")
    return lines
