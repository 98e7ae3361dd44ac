r"""Sample-quality metrics: the energy distance and its ratio to the noise floor.

Example:
    >>> import torch
    >>> x = torch.tensor([[0.0], [1.0]])
    >>> float(energy_distance(x, x))
    0.0
    >>> float(energy_distance(x, x + 1))
    1.0
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch

from pyroflows.errors import DataError

__all__ = ["energy_distance", "noise_floor", "energy_distance_ratio", "QualityRatio"]


def _mean_distance(a: torch.Tensor, b: torch.Tensor, chunk: int) -> torch.Tensor:
    total = a.new_zeros(())
    for start in range(0, a.shape[0], chunk):
        total = total + torch.cdist(a[start : start + chunk], b).sum()
    return total / (a.shape[0] * b.shape[0])


def energy_distance(x: Any, y: Any, *, chunk: int = 2048) -> torch.Tensor:
    r"""The energy distance as the plain V-statistic over all pairs (self-pairs included).

    It is

    .. math::
        2\, \overline{\|x - y\|} - \overline{\|x - x'\|} - \overline{\|y - y'\|},

    computed in float64 with :func:`torch.cdist` in row chunks (memory ``chunk * N``).

    Args:
        x: Samples of shape ``(N, D)`` (array or tensor).
        y: Samples of shape ``(M, D)``.
        chunk: Rows per ``cdist`` call.

    Returns:
        A float64 scalar tensor, non-negative; 0 when the two samples are identical.

    Raises:
        DataError: not 2-D or different numbers of columns.
    """
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).detach().double()
    y = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y).detach().double().to(x.device)
    if x.dim() != 2 or y.dim() != 2 or x.shape[1] != y.shape[1]:
        raise DataError(f"x, y: expected shapes (N, D) and (M, D), got {tuple(x.shape)} and {tuple(y.shape)}")
    return 2 * _mean_distance(x, y, chunk) - _mean_distance(x, x, chunk) - _mean_distance(y, y, chunk)


def _mean_and_se(values: list[float]) -> tuple[float, float]:
    array = np.asarray(values, dtype=np.float64)
    return float(array.mean()), float(array.std(ddof=1) / math.sqrt(len(array)))


def _check_counts(n: int, **counts: int) -> None:
    if isinstance(n, bool) or int(n) != n or n < 2:
        raise DataError(f"n: expected an integer >= 2 points per sample, got {n!r}")
    for name, value in counts.items():
        if isinstance(value, bool) or int(value) != value or value < 2:
            raise DataError(f"{name}: expected an integer >= 2 (a standard error needs two values), got {value!r}")


def noise_floor(
    reference: Callable[[int, int], Any], n: int = 4000, *, pairs: int = 30, seed: int = 0
) -> tuple[float, float]:
    r"""The energy distance between two independent samples of ``n`` true points, averaged over ``pairs`` pairs.

    This is what a perfect model scores, on average, against ``n`` held-out points. One pair is a poor estimate:
    on two moons with ``n = 4000`` the statistic's standard deviation is about 70% of its mean (it is dominated by
    the chance balance between the moons), so 3 pairs can miss the floor by a factor of 2.

    Args:
        reference: ``reference(n, seed)`` returns ``n`` independent true points ``(n, D)`` drawn with that seed.
        n: Points per sample.
        pairs: Independent pairs averaged (seeds ``seed + 1000 + 2i`` and ``seed + 1001 + 2i``).
        seed: Base seed.

    Returns:
        ``(mean, standard error)`` over the pairs.

    Example:
        >>> from pyroflows.datasets import make_dataset
        >>> floor, se = noise_floor(lambda n, seed: make_dataset("moons", n, seed), n=200, pairs=5)
        >>> 0 < se < floor
        True
    """
    _check_counts(n, pairs=pairs)
    values = [
        float(energy_distance(reference(n, seed + 1000 + 2 * i), reference(n, seed + 1001 + 2 * i)))
        for i in range(int(pairs))
    ]
    return _mean_and_se(values)


class QualityRatio(NamedTuple):
    """Result of :func:`energy_distance_ratio`.

    Attributes:
        ratio: Mean energy distance (model vs held-out) over the noise floor; 1.0 is a perfect model.
        se: Its standard error (delta method over both means).
        distance: Mean energy distance between model samples and held-out points.
        floor: Mean energy distance between two independent true samples.
        pairs: Model/held-out pairs averaged.
        floor_pairs: True/true pairs averaged (0 when the floor was passed in).
    """

    ratio: float
    se: float
    distance: float
    floor: float
    pairs: int
    floor_pairs: int


def energy_distance_ratio(
    samples: Callable[[int], Any],
    reference: Callable[[int, int], Any],
    n: int = 4000,
    *,
    pairs: int = 10,
    floor_pairs: int = 30,
    seed: int = 0,
    floor: tuple[float, float] | None = None,
) -> QualityRatio:
    r"""Sample quality as the energy distance to held-out data divided by the noise floor.

    .. math::
        \mathrm{ratio} = \frac{\overline{\mathcal E(\text{model}_i, \text{held-out}_i)}}
        {\overline{\mathcal E(\text{true}_j, \text{true}'_j)}},

    each :math:`\mathcal E` the V-statistic of :func:`energy_distance` between two samples of ``n`` points, the
    numerator averaged over ``pairs`` fresh (model, held-out) pairs and the denominator over ``floor_pairs`` pairs
    (:func:`noise_floor`). A model that draws from the true distribution scores 1 on average; both averages are
    needed because a single energy distance between two samples of 4,000 points varies by about +-70%.

    Args:
        samples: ``samples(n)`` draws ``n`` model samples ``(n, D)`` (a fresh draw on each call).
        reference: ``reference(n, seed)`` draws ``n`` true points with that seed; held-out sets use seeds
            ``seed + i``, the floor seeds ``seed + 1000 + j``.
        n: Points per sample.
        pairs: Model / held-out pairs.
        floor_pairs: True / true pairs for the floor.
        seed: Base seed of the reference draws.
        floor: ``(mean, standard error)`` from an earlier :func:`noise_floor` call with the same ``reference``,
            ``n`` and ``seed``, to score several models against one floor; ``floor_pairs`` is then ignored.

    Returns:
        A :class:`QualityRatio`.

    Raises:
        DataError: ``n``, ``pairs`` or ``floor_pairs`` below 2, or ``pairs`` at least 1000 (the held-out seeds
            would run into the floor's).

    Example:
        >>> from pyroflows.datasets import make_dataset
        >>> moons = lambda n, seed: make_dataset("moons", n, seed)
        >>> shifted = lambda n: make_dataset("moons", n) + 0.5
        >>> energy_distance_ratio(shifted, moons, n=200, pairs=3, floor_pairs=5).ratio > 10
        True
    """
    _check_counts(n, pairs=pairs, floor_pairs=floor_pairs)
    if pairs >= 1000:
        raise DataError(f"pairs: expected fewer than 1000 pairs, got {pairs}")
    distances = [float(energy_distance(samples(n), reference(n, seed + i))) for i in range(int(pairs))]
    distance, distance_se = _mean_and_se(distances)
    if floor is None:
        floor = noise_floor(reference, n, pairs=floor_pairs, seed=seed)
    else:
        floor_pairs = 0
    floor_mean, floor_se = (float(v) for v in floor)
    if not floor_mean > 0:
        raise DataError(f"floor: expected a positive mean energy distance, got {floor_mean}")
    ratio = distance / floor_mean
    se = ratio * math.sqrt((distance_se / distance) ** 2 + (floor_se / floor_mean) ** 2) if distance > 0 else 0.0
    return QualityRatio(ratio, se, distance, floor_mean, int(pairs), int(floor_pairs))
