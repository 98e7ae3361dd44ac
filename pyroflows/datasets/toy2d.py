"""Two-dimensional toy data sets drawn i.i.d. (for diffusion models and density estimation).

Unlike :func:`sklearn.datasets.make_moons`, which places points on a fixed grid along the arcs, every point here
is an independent draw: two calls with different seeds give independent samples, so the energy distance between
them is a fair noise floor.

Example:
    >>> x = make_dataset("moons", 5, seed=0)
    >>> x.shape, x.dtype
    ((5, 2), dtype('float64'))
    >>> sorted(DATASETS)
    ['checkerboard', 'circles', 'gaussians', 'moons', 'rings', 'square']
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from pyroflows.errors import DataError

__all__ = ["make_dataset", "DATASETS"]


def _moons(n: int, rng: np.random.Generator, noise: float = 0.1) -> np.ndarray:
    # sklearn's two moons, but with uniformly random arc positions and a random moon per point.
    angle = rng.uniform(0.0, np.pi, n)
    upper = rng.random(n) < 0.5
    x = np.where(upper, np.cos(angle), 1.0 - np.cos(angle))
    y = np.where(upper, np.sin(angle), 0.5 - np.sin(angle))
    return np.stack([x, y], axis=1) + noise * rng.standard_normal((n, 2))


def _circles(n: int, rng: np.random.Generator, noise: float = 0.05, factor: float = 0.5) -> np.ndarray:
    angle = rng.uniform(0.0, 2 * np.pi, n)
    radius = np.where(rng.random(n) < 0.5, 1.0, factor)
    return radius[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=1) + noise * rng.standard_normal((n, 2))


def _rings(n: int, rng: np.random.Generator, noise: float = 0.04) -> np.ndarray:
    # Four concentric rings; points split in proportion to circumference, so the density along each ring is equal.
    radii = np.array([0.25, 0.5, 0.75, 1.0])
    radius = rng.choice(radii, size=n, p=radii / radii.sum())
    angle = rng.uniform(0.0, 2 * np.pi, n)
    return radius[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=1) + noise * rng.standard_normal((n, 2))


def _gaussians(n: int, rng: np.random.Generator, std: float = 0.05) -> np.ndarray:
    # A 5 x 5 grid of equal-weight Gaussians on [-1, 1]^2.
    centres = np.linspace(-1.0, 1.0, 5)
    grid = np.stack(np.meshgrid(centres, centres), axis=-1).reshape(-1, 2)
    return grid[rng.integers(0, len(grid), n)] + std * rng.standard_normal((n, 2))


def _square(n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(-1.0, 1.0, (n, 2))


def _checkerboard(n: int, rng: np.random.Generator) -> np.ndarray:
    # Uniform on the 8 "black" cells of a 4 x 4 board on [-2, 2]^2: sharp edges everywhere.
    x = rng.uniform(-2.0, 2.0, n)
    y = rng.uniform(0.0, 1.0, n) + rng.integers(0, 2, n) * 2.0 - 2.0
    y = y + (np.floor(x) % 2)
    return np.stack([x, y], axis=1)


DATASETS: dict[str, Callable[[int, np.random.Generator], np.ndarray]] = {
    "moons": _moons,
    "circles": _circles,
    "rings": _rings,
    "gaussians": _gaussians,
    "square": _square,
    "checkerboard": _checkerboard,
}


def make_dataset(name: str, n: int, seed: int | None = None) -> np.ndarray:
    """Draw ``n`` i.i.d. points of a 2-D toy distribution.

    Args:
        name: One of ``moons`` (two interleaved half circles, noise 0.1), ``circles`` (two concentric circles of
            radius 1 and 0.5, noise 0.05), ``rings`` (four concentric rings), ``gaussians`` (a 5 x 5 grid of
            Gaussians, std 0.05), ``square`` (uniform on [-1, 1]^2) or ``checkerboard`` (uniform on 8 cells of a
            4 x 4 board).
        n: Number of points (at least 1).
        seed: Seed of the NumPy generator; ``None`` draws fresh randomness.

    Returns:
        A float64 array of shape ``(n, 2)``.

    Raises:
        DataError: unknown ``name`` or ``n < 1``.

    Example:
        >>> make_dataset("square", 3, seed=1).round(2)
        array([[ 0.02,  0.9 ],
               [-0.71,  0.9 ],
               [-0.38, -0.15]])
    """
    if name not in DATASETS:
        raise DataError(f"unknown data set {name!r}; expected one of {', '.join(sorted(DATASETS))}")
    if int(n) < 1:
        raise DataError(f"n: expected at least 1 point, got {n}")
    return DATASETS[name](int(n), np.random.default_rng(seed)).astype(np.float64)
