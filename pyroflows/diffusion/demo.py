"""The diffusion part of ``pyroflows demo``: the default DDPM (T = 10) on two moons, sampled both ways and scored.

Example:
    >>> import tempfile, pathlib
    >>> lines = run_demo(pathlib.Path(tempfile.mkdtemp()), fast=True)  # doctest: +SKIP
"""

from __future__ import annotations

import time
from pathlib import Path

__all__ = ["run_demo", "DEMO_OUTPUTS", "DEFAULT_POINTS"]

#: Points drawn from a built-in 2-D data set when none is given (``pyroflows diffusion train --dataset``, the demo
#: and ``benchmarks/diffusion.py``'s defaults part).
DEFAULT_POINTS = 10000
#: What :func:`run_demo` writes into its folder (``pyroflows demo`` checks them before any work).
DEMO_OUTPUTS = ("ddpm_moons.pt", "ddpm_moons.png")


def run_demo(out_dir: Path, fast: bool, *, overwrite: bool = False) -> list[str]:
    """Train the default DDPM (T = 10) on two moons, sample it both ways and score it; returns summary lines.

    Writes :data:`DEMO_OUTPUTS` into ``out_dir`` (the model and a figure of held-out data, ancestral and DDIM
    samples). The seeds are fixed (data 0, held-out 10); the caller seeds the training (``pyro.set_rng_seed``).

    Args:
        out_dir: The folder (made when the first file is written).
        fast: Tiny sizes (300 points, 40 epochs, 300 samples): seconds instead of minutes.
        overwrite: Replace the outputs of an earlier run. ``pyroflows demo`` checks the folder first and passes
            ``True``.

    Returns:
        One summary line per figure measured.
    """
    import torch
    from matplotlib.figure import Figure

    from pyroflows.datasets.toy2d import make_dataset
    from pyroflows.diffusion.ddpm import DDPM
    from pyroflows.diffusion.metrics import energy_distance_ratio, noise_floor
    from pyroflows.diffusion.plots import plot_samples
    from pyroflows.diffusion.sampling import ancestral_sample, ddim_sample
    from pyroflows.diffusion.training import train
    from pyroflows.io import save_figure

    n, epochs, n_eval, pairs, floor_pairs = (300, 40, 300, 3, 3) if fast else (DEFAULT_POINTS, None, 4000, 10, 30)
    data = torch.as_tensor(make_dataset("moons", n, seed=0), dtype=torch.get_default_dtype())
    held_out = make_dataset("moons", n_eval, seed=10)
    ddpm = DDPM(2, steps=10)
    start = time.perf_counter()
    epochs = len(train(ddpm, data, epochs=epochs, progress=False))
    seconds = time.perf_counter() - start
    ddpm.save(out_dir / "ddpm_moons.pt", overwrite=overwrite)
    # One energy distance between two samples of 4,000 varies by about +-70% (moon balance): average over pairs.
    moons = lambda size, seed: make_dataset("moons", size, seed)  # noqa: E731
    floor = noise_floor(moons, n_eval, pairs=floor_pairs, seed=10)
    quality_a = energy_distance_ratio(lambda size: ancestral_sample(ddpm, size), moons, n_eval, pairs=pairs,
                                      seed=10, floor=floor)  # fmt: skip
    quality_d = energy_distance_ratio(lambda size: ddim_sample(ddpm, size, sampling_steps=5), moons, n_eval,
                                      pairs=pairs, seed=10, floor=floor)  # fmt: skip
    ancestral, ddim = ancestral_sample(ddpm, n_eval), ddim_sample(ddpm, n_eval, sampling_steps=5)
    nll = ddpm.nll(held_out[:1000], num_particles=4)
    fig = Figure(figsize=(12, 4))
    axes = fig.subplots(1, 3)
    plot_samples(held_out, ax=axes[0], title="held-out data")
    plot_samples(ancestral, ax=axes[1], title="ancestral, 10 steps")
    plot_samples(ddim, ax=axes[2], title="DDIM, 5 steps")
    save_figure(fig, out_dir / "ddpm_moons.png", overwrite=overwrite, dpi=80)
    return [
        f"DDPM (T = 10, polynomial schedule) trained on {n} two-moons points, {epochs} epochs in {seconds:.1f} s",
        f"energy distance / noise floor ({n_eval} vs {n_eval} points, {pairs} pairs over a {floor_pairs}-pair "
        f"floor): ancestral {quality_a.ratio:.2f} +- {quality_a.se:.2f}, DDIM 5 steps {quality_d.ratio:.2f} +- "
        f"{quality_d.se:.2f} (1.0 is perfect)",
        f"negative ELBO on 1000 held-out points: {nll.nll:.3f} +- {nll.se:.3f} nats",
        f"model, samples figure: {out_dir / 'ddpm_moons.pt'}, {out_dir / 'ddpm_moons.png'}",
    ]
