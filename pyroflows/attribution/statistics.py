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
from pyroflows.validation import bad_rows

__all__ = ["FeatureStatistics"]


class FeatureStatistics:
    """Running count, mean, sum of squared deviations and firing frequency of ``[N, *feature]`` batches."""

    def __init__(self) -> None:
        self.count = 0
        self.mean: torch.Tensor | None = None
        self.m2: torch.Tensor | None = None
        self.nonzero: torch.Tensor | None = None
        self.counts: torch.Tensor | None = None  # per element: how many samples counted it

    def update(self, batch: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        """Merge one batch ``[n, *feature]`` (``n >= 1``) into the totals.

        Args:
            batch: Feature maps.
            mask: Optional boolean mask broadcastable to ``batch``: only the ``True`` elements count (padded
                positions of a sequence are left out). Elements no sample has counted keep mean 0, get the
                minimal standard deviation and are inactive.

        Raises:
            DataError: the batch holds NaN or infinity, or its feature shape differs from earlier batches.
        """
        batch = batch.detach()
        if not torch.isfinite(batch).all():
            rows = bad_rows(batch)
            raise DataError(
                f"the layer's output holds NaN or infinity: {len(rows)} row(s) of the batch, e.g. rows {rows[:5]}; "
                "check the inputs given to estimate()"
            )
        if self.mean is not None and batch.shape[1:] != self.mean.shape:
            raise DataError(
                f"feature shape {list(batch.shape[1:])} differs from earlier batches' {list(self.mean.shape)}; "
                "estimate() needs inputs of one size"
            )
        x = batch.to(torch.float64)
        n_b = x.shape[0]
        if mask is None:
            counts_b = torch.full(x.shape[1:], float(n_b), dtype=torch.float64, device=x.device)
            mean_b = x.mean(0)
            m2_b = (x - mean_b).square().sum(0)
            nonzero_b = (x != 0).sum(0)
        else:
            weight = torch.as_tensor(mask, device=x.device).bool().expand_as(x).to(torch.float64)
            counts_b = weight.sum(0)
            mean_b = (x * weight).sum(0) / counts_b.clamp_min(1.0)
            m2_b = ((x - mean_b).square() * weight).sum(0)
            nonzero_b = ((x != 0) & weight.bool()).sum(0)
        if self.mean is None:
            self.count, self.mean, self.m2, self.nonzero, self.counts = n_b, mean_b, m2_b, nonzero_b, counts_b
            return
        # update() sets the five totals together, so a set mean means the others are set too
        assert self.m2 is not None and self.nonzero is not None and self.counts is not None
        n_a = self.counts
        n = n_a + counts_b
        share = torch.where(n > 0, counts_b / n.clamp_min(1.0), torch.zeros_like(n))
        delta = mean_b - self.mean
        self.mean = self.mean + delta * share
        self.m2 = self.m2 + m2_b + delta.square() * n_a * share
        self.nonzero = self.nonzero + nonzero_b
        self.counts = n
        self.count = self.count + n_b

    def _check(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The totals ``m2``, ``nonzero`` and ``counts``, once at least 2 samples are merged."""
        if self.count < 2:
            raise DataError(f"estimating a standard deviation needs at least 2 samples, got {self.count}")
        assert self.m2 is not None and self.nonzero is not None and self.counts is not None  # set with count
        return self.m2, self.nonzero, self.counts

    def std(self, min_std: float = 0.0) -> torch.Tensor:
        """Unbiased standard deviation per element, at least ``min_std``."""
        m2, _, counts = self._check()
        variance = m2 / (counts - 1).clamp_min(1.0)
        return torch.where(counts > 1, variance, torch.zeros_like(variance)).sqrt().clamp_min(min_std)

    def active(self, threshold: float = 0.01) -> torch.Tensor:
        """Boolean mask of units that were non-zero in more than ``threshold`` of the samples."""
        _, nonzero, counts = self._check()
        return (nonzero.to(torch.float64) / counts.clamp_min(1.0)) > threshold
