"""The compact-flow part of ``pyroflows demo``: fit the default flow to the source post's target and draw it.

Example:
    >>> import tempfile, pathlib
    >>> lines = run_demo(pathlib.Path(tempfile.mkdtemp()) / "flow", fast=True)  # doctest: +SKIP
    >>> any("KL estimate" in line for line in lines)  # doctest: +SKIP
    True
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pyroflows.datasets.bounded import BoundedTarget, piecewise_uniform
from pyroflows.flows.compact import CompactFlow
from pyroflows.flows.fit import ConvergenceWarning, fit
from pyroflows.io import save_array, save_figure

__all__ = ["run_demo", "DEMO_OUTPUTS", "density_figure"]

#: What :func:`run_demo` writes into its folder (``pyroflows demo`` checks them before any work).
DEMO_OUTPUTS = ("data.npy", "flow.pt", "samples.npy", "density.png")


def run_demo(out_dir: Path, fast: bool, *, overwrite: bool = False) -> list[str]:
    """Fit the default flow to 5,000 points of the piecewise-uniform target on [1, 2.5] and score 50,000 more.

    Writes :data:`DEMO_OUTPUTS` (``data.npy``, ``flow.pt``, ``samples.npy``, ``density.png``) to ``out_dir``.

    Args:
        out_dir: The folder (made when the first file is written).
        fast: 1,000 / 5,000 points and 60 optimiser steps instead of 5,000 / 50,000 and ``fit``'s default budget.
        overwrite: Replace files of an earlier run.

    Returns:
        Summary lines (the held-out KL estimate among them).
    """
    target = piecewise_uniform()
    n_train, n_test, steps = (1000, 5000, 60) if fast else (5000, 50000, None)
    train = target.sample(n_train, seed=1)
    test = target.sample(n_test, seed=2)
    save_array(out_dir / "data.npy", train[:, 0], overwrite=overwrite)
    start = time.perf_counter()
    flow = CompactFlow(1.0, 2.5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # --fast trains for a few steps on purpose
        budget: dict[str, Any] = {} if steps is None else {"steps": steps}  # None: fit's default budget
        result = fit(flow, train, **budget, seed=0, progress=False)
    seconds = time.perf_counter() - start
    flow.save(out_dir / "flow.pt", overwrite=overwrite)
    with torch.no_grad():
        nll = -flow().log_prob(torch.as_tensor(test)).mean().item()
        samples = flow.sample((n_test,)).numpy()
    save_array(out_dir / "samples.npy", samples[:, 0], overwrite=overwrite)
    truth = -target.log_prob(test).mean()
    lines = [
        f"piecewise-uniform target on [1, 2.5], {n_train} training points, default flow ({flow.config['transform']})",
        f"fit: {result.steps} optimiser steps in {seconds:.1f} s",
        f"held-out NLL {nll:.4f} nats vs the true density's {truth:.4f} on the same {n_test} points: "
        f"KL estimate {nll - truth:.4f} nats",
    ]
    try:
        figure = density_figure(flow, target)
    except ImportError:  # pragma: no cover - matplotlib is a dependency, but the figure is optional
        return lines
    save_figure(figure, out_dir / "density.png", overwrite=overwrite, dpi=100)
    return [*lines, f"figure: {out_dir / 'density.png'}"]


def density_figure(flow: CompactFlow, target: BoundedTarget) -> object:
    """The learned and true densities on the interval, and near each bound on a log scale of the distance.

    Built as a :class:`matplotlib.figure.Figure` (no pyplot, no backend switch).

    Raises:
        ImportError: matplotlib is not installed.
    """
    from matplotlib.figure import Figure

    (low,), (high,) = target.low, target.high
    width = high - low
    # Fine everywhere, and geometrically finer towards each bound (down to 1e-7 of the width), so neither the jumps
    # nor the behaviour at the bounds are drawn as straight segments between distant grid points.
    near = width * np.geomspace(1e-7, 0.05, 200)
    grid_np = np.unique(np.concatenate([np.linspace(low, high, 4001)[1:-1], low + near, high - near]))
    grid = torch.as_tensor(grid_np, dtype=torch.float64)[:, None]
    with torch.no_grad():
        density = flow().log_prob(grid).exp().numpy()
    truth_density = np.exp(target.log_prob(grid_np[:, None]))
    fig = Figure(figsize=(7, 5.5))
    ax = fig.add_subplot(2, 1, 1)
    ax.plot(grid_np, truth_density, label="true density", color="k")
    ax.plot(grid_np, density, label="learned flow", color="C1")
    ax.set_xlabel("y")
    ax.set_ylabel("density")
    ax.legend()
    for i, (side, distance) in enumerate((("lower", grid_np - low), ("upper", high - grid_np))):
        edge = fig.add_subplot(2, 2, 3 + i)
        keep = (distance > 0) & (distance < 0.05 * width)
        edge.semilogx(distance[keep] / width, truth_density[keep], color="k")
        edge.semilogx(distance[keep] / width, density[keep], color="C1")
        edge.set_xlabel(f"distance from the {side} bound / width")
        edge.set_ylabel("density")
        edge.set_ylim(bottom=0)
    fig.tight_layout()
    return fig
