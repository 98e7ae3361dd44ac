r"""Figures of the post: the reverse dynamics as a vector field of :math:`-\epsilon_\theta` with a trajectory.

Example:
    >>> import torch
    >>> from pyroflows.diffusion.ddpm import DDPM
    >>> ddpm = DDPM(data_dim=2, steps=5)
    >>> _ = ddpm.scaler.fit(torch.randn(20, 2))
    >>> ax = plot_vector_field(ddpm, t=3, grid_size=5)
    >>> ax.get_title()
    't = 3'
"""

from __future__ import annotations

from typing import Any

import torch

from pyroflows.diffusion.ddpm import DDPM
from pyroflows.errors import DataError

__all__ = ["plot_vector_field", "plot_samples"]


def _new_axis(figsize: tuple[float, float] = (4, 4)) -> Any:
    """An axis on a fresh ``matplotlib.figure.Figure`` (no pyplot: no global state, no backend)."""
    from matplotlib.figure import Figure

    return Figure(figsize=figsize).add_subplot()


@torch.no_grad()
def plot_vector_field(
    ddpm: DDPM,
    t: int,
    *,
    ax: Any = None,
    grid_size: int = 20,
    trajectory: torch.Tensor | None = None,
    margin: float = 0.5,
) -> Any:
    r"""Arrows of :math:`-\epsilon_\theta(x, t)` on a grid (the direction the reverse step pushes a point).

    Drawn in data units, with an optional trajectory on top.

    Args:
        ddpm: A trained 2-D model.
        t: The step ``1..T``.
        ax: A matplotlib axis (default: one on a new ``matplotlib.figure.Figure``, no pyplot or backend needed;
            ``ax.figure`` is the figure to save).
        grid_size: Arrows per side.
        trajectory: States ``(K, D)`` of one sample in data units (e.g. ``ancestral_sample(...,
            return_trajectory=True)[:, 0]``).
        margin: Extra room around the data range, as a fraction of the scaled range (which is [-1, 1]).

    Returns:
        The axis.

    Raises:
        DataError: the model is not 2-D, or ``t`` is outside ``[1, T]``.
    """
    if ddpm.data_dim != 2:
        raise DataError(f"plot_vector_field draws 2-D models only; this one has data_dim = {ddpm.data_dim}")
    if not 1 <= int(t) <= ddpm.steps:
        raise DataError(f"t: expected a step in [1, {ddpm.steps}], got {t}")
    ddpm._check_fitted()
    ax = _new_axis() if ax is None else ax
    ticks = torch.linspace(-1 - margin, 1 + margin, grid_size, dtype=ddpm.betas.dtype, device=ddpm.betas.device)
    grid = torch.stack(torch.meshgrid(ticks, ticks, indexing="xy"), dim=-1).reshape(-1, 2)
    direction = -ddpm.predict_noise(grid, int(t))
    # The scaler is a per-axis affine map: directions scale by (high - low) / 2.
    direction = direction * (ddpm.scaler.high - ddpm.scaler.low) / 2
    points = ddpm.scaler.inverse(grid)
    ax.quiver(*points.T.cpu().numpy(), *direction.T.cpu().numpy(), color="0.4", angles="xy")
    if trajectory is not None:
        path = torch.as_tensor(trajectory).cpu().numpy()
        ax.plot(path[:, 0], path[:, 1], "-o", color="tab:blue", markersize=3, label="trajectory")
        ax.plot(path[-1:, 0], path[-1:, 1], "*", color="tab:red", markersize=10)
    ax.set_title(f"t = {int(t)}")
    ax.set_aspect("equal")
    return ax


def plot_samples(samples: Any, *, ax: Any = None, title: str | None = None, **kwargs: Any) -> Any:
    """Scatter plot of 2-D samples ``(N, 2)`` with small markers.

    Example:
        >>> plot_samples(torch.randn(10, 2), title="noise").get_title()
        'noise'
    """
    ax = _new_axis() if ax is None else ax
    values = torch.as_tensor(samples).detach().cpu().numpy()
    ax.scatter(values[:, 0], values[:, 1], s=kwargs.pop("s", 2), alpha=kwargs.pop("alpha", 0.5), **kwargs)
    if title:
        ax.set_title(title)
    ax.set_aspect("equal")
    return ax
