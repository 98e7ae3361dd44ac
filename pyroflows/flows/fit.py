"""Maximum-likelihood fitting of a :class:`~pyroflows.flows.CompactFlow` with Pyro SVI.

The data are observed in a Pyro model and the guide is empty, so the ELBO is the log-likelihood and SVI is maximum
likelihood. Minibatches come from ``pyro.plate(subsample_size=...)``; a held-out split drives early stopping and the
parameters with the best held-out NLL are restored at the end.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field

import numpy as np
import pyro
import pyro.optim
import torch
from pyro.infer import SVI, Trace_ELBO
from tqdm.auto import tqdm

from pyroflows import distributed
from pyroflows.errors import DataError
from pyroflows.flows.compact import CompactFlow

__all__ = ["fit", "FitResult", "check_data"]


@dataclass
class FitResult:
    """What :func:`fit` measured.

    Attributes:
        train_nll: Mean training NLL (nats per point) of each epoch, from the SVI losses.
        heldout_nll: Held-out NLL after each epoch (empty without a held-out split).
        best_epoch: Epoch (0-based) whose parameters were kept.
        best_heldout_nll: Held-out NLL of the kept parameters (``nan`` without a held-out split).
        seconds: Wall-clock fitting time.
        stopped_early: Whether early stopping ended the run.
    """

    train_nll: list[float] = field(default_factory=list)
    heldout_nll: list[float] = field(default_factory=list)
    best_epoch: int = -1
    best_heldout_nll: float = math.nan
    seconds: float = 0.0
    stopped_early: bool = False


def check_data(flow: CompactFlow, data: torch.Tensor | np.ndarray, *, name: str = "data") -> torch.Tensor:
    """Validate data for ``flow``: shape ``(N,)`` (one dimension) or ``(N, dim)``, finite, inside the bounds.

    Returns:
        The data as a ``(N, dim)`` tensor in the flow's dtype and device.

    Raises:
        DataError: wrong shape, NaN/inf, or points outside :math:`[low, high]` (naming how many rows and the first).

    Example:
        >>> flow = CompactFlow(0.0, 1.0, num_layers=1)
        >>> check_data(flow, [0.5, 2.0, 3.0])
        Traceback (most recent call last):
        ...
        pyroflows.errors.DataError: data: 2 of 3 row(s) lie outside [0.0, 1.0], e.g. rows [1, 2] = [2.0, 3.0]
    """
    if not torch.is_tensor(data):
        array = np.asarray(data)
        if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
            raise DataError(f"{name}: expected numbers, got dtype {array.dtype}")
        data = torch.as_tensor(array)
    x = data
    if x.is_complex():
        raise DataError(f"{name}: expected real numbers, got dtype {x.dtype}")
    x = x.to(dtype=flow.low.dtype, device=flow.low.device)
    if x.dim() == 1 and flow.dim == 1:
        x = x[:, None]
    if x.dim() != 2 or x.shape[1] != flow.dim:
        raise DataError(
            f"{name}: expected shape (N, {flow.dim}){' or (N,)' if flow.dim == 1 else ''}, got {tuple(x.shape)}"
        )
    if x.shape[0] == 0:
        raise DataError(f"{name}: no rows")
    bad = (~torch.isfinite(x).all(-1)).nonzero().flatten()
    if bad.numel():
        raise DataError(f"{name}: {bad.numel()} row(s) hold NaN or inf, e.g. rows {bad[:5].tolist()}")
    outside = ((x < flow.low) | (x > flow.high)).any(-1).nonzero().flatten()
    if outside.numel():
        rows = outside[:5]
        shown = x[rows, 0].tolist() if flow.dim == 1 else x[rows].tolist()
        bounds = (
            f"[{flow.low.item()}, {flow.high.item()}]"
            if flow.dim == 1
            else f"the box low={flow.low.tolist()}, high={flow.high.tolist()}"
        )
        raise DataError(
            f"{name}: {outside.numel()} of {x.shape[0]} row(s) lie outside {bounds}, "
            f"e.g. rows {rows.tolist()} = {shown}"
        )
    return x


def _significantly_better(candidate: torch.Tensor, incumbent: torch.Tensor, z: float = 2.0) -> bool:
    """Whether per-point log-likelihoods ``candidate`` beat ``incumbent`` on the same points by > ``z`` std. errors."""
    diff = candidate - incumbent
    if diff.numel() < 2:
        return bool(diff.sum() > 0)
    return bool(diff.mean() > z * diff.std() / math.sqrt(diff.numel()))


def _log_probs(flow: CompactFlow, x: torch.Tensor, batch: int = 65536) -> torch.Tensor:
    with torch.no_grad():
        d = flow()
        return torch.cat([d.log_prob(x[i : i + batch]) for i in range(0, x.shape[0], batch)])


def fit(
    flow: CompactFlow,
    data: torch.Tensor | np.ndarray,
    *,
    epochs: int = 100,
    batch_size: int = 1024,
    lr: float = 3e-2,
    final_lr_fraction: float = 0.01,
    heldout_fraction: float = 0.1,
    patience: int = 50,
    seed: int | None = None,
    progress: bool = True,
) -> FitResult:
    """Fit ``flow`` to ``data`` by maximum likelihood with Pyro SVI (an empty guide), in place.

    The learning rate decays geometrically from ``lr`` to ``lr * final_lr_fraction`` over the run (Pyro's
    ``ClippedAdam``). Training stops when the (smoothed) held-out NLL has not improved for ``patience`` epochs; the
    parameters of the best epoch are then restored if they beat the last ones on the held-out points by more than
    two standard errors (a small held-out split cannot tell apart epochs closer than that, and picking the luckiest
    of many epochs would overfit the split).

    Args:
        flow: The flow to train (its bounds must contain every point).
        data: Shape ``(N,)`` for an interval or ``(N, dim)``.
        epochs: Maximum number of passes over the training split.
        batch_size: Minibatch size (the whole split if larger).
        lr: Initial Adam learning rate.
        final_lr_fraction: Learning rate at the last epoch as a fraction of ``lr``.
        heldout_fraction: Share of the points held out for early stopping (0 disables it: the last epoch is kept).
        patience: Epochs without held-out improvement before stopping.
        seed: Seeds Pyro's RNG (split, minibatches) when given.
        progress: Show a tqdm progress bar.

    Returns:
        A :class:`FitResult` with the loss history.

    Raises:
        DataError: bad data (see :func:`check_data`) or fewer than 2 points.
        ValueError: a bad argument.

    Example:
        >>> flow = CompactFlow(0.0, 1.0, num_layers=2)
        >>> result = fit(flow, torch.rand(200), epochs=3, progress=False, seed=0)
        >>> len(result.train_nll)
        3
    """
    if epochs < 1 or batch_size < 1 or lr <= 0 or patience < 1:
        raise ValueError(
            f"epochs, batch_size, patience and lr must be positive, got {epochs}, {batch_size}, {patience}, {lr}"
        )
    if not 0 <= heldout_fraction < 1:
        raise ValueError(f"heldout_fraction must lie in [0, 1), got {heldout_fraction}")
    x = check_data(flow, data)
    if x.shape[0] < 2:
        raise DataError(f"data: need at least 2 points to fit, got {x.shape[0]}")
    if seed is not None:
        pyro.set_rng_seed(seed)
    distributed.synchronize(flow)  # in a process group: rank 0's parameters and random state everywhere
    perm = torch.randperm(x.shape[0], device=x.device)
    n_heldout = int(round(heldout_fraction * x.shape[0]))
    heldout, train = x[perm[:n_heldout]], x[perm[n_heldout:]]
    n = train.shape[0]
    batch = min(batch_size, n)
    steps_per_epoch = math.ceil(n / batch)
    decay = final_lr_fraction ** (1.0 / max(1, epochs * steps_per_epoch))

    def model(points: torch.Tensor) -> None:
        d = flow()
        # In a process group each process observes its share of the (common) minibatch.
        with distributed.subsample_plate("data", points.shape[0], batch) as idx:
            pyro.sample("obs", d, obs=points[idx])

    def guide(points: torch.Tensor) -> None:
        pass

    optim = distributed.synchronize_gradients(pyro.optim.ClippedAdam({"lr": lr, "lrd": decay, "clip_norm": 10.0}))
    svi = SVI(model, guide, optim, Trace_ELBO())
    result = FitResult()
    best_state, best_log_probs = None, None
    best = smoothed = math.inf
    since_best = 0
    start = time.perf_counter()
    bar = tqdm(range(epochs), desc="fit", disable=not progress, leave=False)
    for epoch in bar:
        flow.train()
        total = sum(distributed.all_sum(svi.step(train)) for _ in range(steps_per_epoch))
        result.train_nll.append(total / (steps_per_epoch * n))
        if not n_heldout:
            bar.set_postfix(train=f"{result.train_nll[-1]:.4f}")
            continue
        flow.eval()
        log_probs = _log_probs(flow, heldout)
        nll = -log_probs.mean().item()
        result.heldout_nll.append(nll)
        # Epoch-to-epoch jitter of the iterates is as large as the gains late in training; a smoothed curve decides
        # when to stop, so one lucky epoch neither stops the run nor gets restored.
        smoothed = nll if epoch == 0 else 0.7 * smoothed + 0.3 * nll
        if smoothed < best - 1e-5:
            best, since_best = smoothed, 0
            best_state, best_log_probs = copy.deepcopy(flow.state_dict()), log_probs
            result.best_epoch = epoch
        else:
            since_best += 1
        bar.set_postfix(train=f"{result.train_nll[-1]:.4f}", heldout=f"{nll:.4f}")
        if since_best >= patience:
            result.stopped_early = True
            break
    bar.close()
    if n_heldout:
        final_log_probs = _log_probs(flow, heldout)
        # Go back to the best epoch only when the held-out data say it is better than the last parameters by more
        # than two standard errors (overfitting); otherwise the last, lowest-learning-rate parameters are kept.
        if best_log_probs is not None and _significantly_better(best_log_probs, final_log_probs):
            flow.load_state_dict(best_state)
        else:
            result.best_epoch = len(result.heldout_nll) - 1
        result.best_heldout_nll = -_log_probs(flow, heldout).mean().item()
    else:
        result.best_epoch = epochs - 1
    result.seconds = time.perf_counter() - start
    return result
