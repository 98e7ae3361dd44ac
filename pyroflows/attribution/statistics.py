r"""Streaming per-element mean and standard deviation of a feature map, merged batch by batch.

Each batch's mean and sum of squared deviations are computed with tensor operations and merged into the running
totals with Chan et al.'s pairwise update, so the cost is one vectorised pass per batch (the official
implementation loops over samples in Python):

.. math::
    n = n_a + n_b,\quad \delta = \bar x_b - \bar x_a,\quad \bar x = \bar x_a + \delta \frac{n_b}{n},\quad
    M_2 = M_{2,a} + M_{2,b} + \delta^2 \frac{n_a n_b}{n}.

Totals are kept in float64. Units that never (or almost never) fire have zero variance; their standard
deviation is clamped to ``min_std`` and they are marked inactive, so nothing downstream divides by zero (the
cause of NaN in the official readout bottleneck, BioroboticsLab/IBA issue #41).

Example:
    >>> import torch
    >>> stats = FeatureStatistics()
    >>> for batch in torch.arange(12.0).view(4, 3, 1).split(2):
    ...     stats.update(batch)
    >>> stats.mean.flatten().tolist(), round(stats.std().flatten()[0].item(), 4)
    ([4.5, 5.5, 6.5], 3.873)
"""

from __future__ import annotations

import torch

from pyroflows.errors import DataError

__all__ = ["FeatureStatistics"]


class FeatureStatistics:
    """Running count, mean, sum of squared deviations and firing frequency of ``[N, *feature]`` batches."""

    def __init__(self) -> None:
        self.count = 0
        self.mean: torch.Tensor | None = None
        self.m2: torch.Tensor | None = None
        self.nonzero: torch.Tensor | None = None

    def update(self, batch: torch.Tensor) -> None:
        """Merge one batch ``[n, *feature]`` (``n >= 1``) into the totals.

        Raises:
            DataError: the batch holds NaN or infinity, or its feature shape differs from earlier batches.
        """
        batch = batch.detach()
        if not torch.isfinite(batch).all():
            raise DataError("the layer's output holds NaN or infinity; check the inputs given to estimate()")
        if self.mean is not None and batch.shape[1:] != self.mean.shape:
            raise DataError(
                f"feature shape {list(batch.shape[1:])} differs from earlier batches' {list(self.mean.shape)}; "
                "estimate() needs inputs of one size"
            )
        x = batch.to(torch.float64)
        n_b = x.shape[0]
        mean_b = x.mean(0)
        m2_b = (x - mean_b).square().sum(0)
        nonzero_b = (x != 0).sum(0)
        if self.mean is None:
            self.count, self.mean, self.m2, self.nonzero = n_b, mean_b, m2_b, nonzero_b
            return
        n_a = self.count
        n = n_a + n_b
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (n_b / n)
        self.m2 = self.m2 + m2_b + delta.square() * (n_a * n_b / n)
        self.nonzero = self.nonzero + nonzero_b
        self.count = n

    def _check(self) -> None:
        if self.count < 2:
            raise DataError(f"estimating a standard deviation needs at least 2 samples, got {self.count}")

    def std(self, min_std: float = 0.0) -> torch.Tensor:
        """Unbiased standard deviation per element, at least ``min_std``."""
        self._check()
        return (self.m2 / (self.count - 1)).sqrt().clamp_min(min_std)

    def active(self, threshold: float = 0.01) -> torch.Tensor:
        """Boolean mask of units that were non-zero in more than ``threshold`` of the samples."""
        self._check()
        return (self.nonzero.to(torch.float64) / self.count) > threshold
