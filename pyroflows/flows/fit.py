"""Maximum-likelihood fitting of a :class:`~pyroflows.flows.CompactFlow` with Pyro SVI.

The data are observed in a Pyro model and the guide is empty, so the ELBO is the log-likelihood and SVI is maximum
likelihood. Minibatches come from ``pyro.plate(subsample_size=...)``; a held-out split drives early stopping and the
parameters with the best held-out NLL are restored at the end.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
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
from pyroflows.flows.segment import SegmentFlow
from pyroflows.flows.squash import to_bounds_dtype

__all__ = ["fit", "FitResult", "check_data", "ConvergenceWarning", "DEFAULT_STEPS"]


DEFAULT_STEPS = 2000


class ConvergenceWarning(UserWarning):
    """:func:`fit` ran out of steps while the held-out NLL was still improving."""


@dataclass
class FitResult:
    """What :func:`fit` measured.

    Attributes:
        train_nll: Mean training NLL (nats per point) over each block of ``eval_every`` steps, from the SVI losses.
        heldout_nll: Held-out NLL after each block (empty without a held-out split).
        eval_every: Optimiser steps per block.
        steps: Optimiser steps taken.
        best_eval: Index (in ``heldout_nll``) of the block whose parameters were kept.
        best_heldout_nll: Held-out NLL of the kept parameters (``nan`` without a held-out split).
        seconds: Wall-clock fitting time.
        stopped_early: Whether early stopping ended the run.
        converged: False when the step budget ran out while the held-out NLL was still improving significantly
            (a :class:`ConvergenceWarning` is issued then); True otherwise, and without a held-out split.
    """

    train_nll: list[float] = field(default_factory=list)
    heldout_nll: list[float] = field(default_factory=list)
    eval_every: int = 1
    steps: int = 0
    best_eval: int = -1
    best_heldout_nll: float = math.nan
    seconds: float = 0.0
    stopped_early: bool = False
    converged: bool = True

    @property
    def best_step(self) -> int:
        """Number of optimiser steps behind the kept parameters."""
        return min(self.steps, (self.best_eval + 1) * self.eval_every)


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
    x = x.to(device=flow.low.device)
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
    # Compared at the data's own precision: a float32 row equal to a bound rounded to float32 is on the bound.
    x = to_bounds_dtype(x, flow.low, flow.high)
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


def _log_probs(
    flow: CompactFlow, x: torch.Tensor, batch: int = 65536, context: torch.Tensor | None = None
) -> torch.Tensor:
    with torch.no_grad():
        if context is not None:  # a ConditionalCompactFlow: one distribution per chunk of context rows
            return torch.cat(
                [flow(context[i : i + batch]).log_prob(x[i : i + batch]) for i in range(0, x.shape[0], batch)]
            )
        d = flow()
        return torch.cat([d.log_prob(x[i : i + batch]) for i in range(0, x.shape[0], batch)])


def fit(
    flow: CompactFlow | SegmentFlow,
    data: torch.Tensor | np.ndarray,
    *,
    steps: int = DEFAULT_STEPS,
    batch_size: int = 1024,
    lr: float = 3e-2,
    final_lr_fraction: float = 0.01,
    heldout_fraction: float = 0.1,
    eval_every: int = 20,
    patience: int = DEFAULT_STEPS,
    seed: int | None = None,
    progress: bool = True,
    context: torch.Tensor | np.ndarray | None = None,
) -> FitResult:
    """Fit ``flow`` to ``data`` by maximum likelihood with Pyro SVI (an empty guide), in place.

    The budget is ``steps`` optimiser steps whatever the data size, so 1,000 points are fitted as well as 100,000.
    The learning rate decays geometrically from ``lr`` to ``lr * final_lr_fraction`` over the budget (Pyro's
    ``ClippedAdam``). Every ``eval_every`` steps the held-out NLL is computed; training stops when its smoothed value
    has not improved for ``patience`` steps, and the parameters of the best evaluation are then restored if they beat
    the last ones on the held-out points by more than two standard errors (a small held-out split cannot tell apart
    evaluations closer than that, and picking the luckiest of many would overfit the split). When the budget runs out
    while the held-out NLL is still improving (the last parameters beat those of a quarter of the budget earlier by
    more than two standard errors), a :class:`ConvergenceWarning` says so and ``converged`` is False. By default
    ``patience`` is the whole budget: the learning rate has decayed by the end, and the last parameters are kept unless
    an earlier evaluation was significantly better.

    Args:
        flow: The flow to train (its bounds must contain every point); a :class:`~pyroflows.flows.SegmentFlow`
            is fitted through its arc-length flow.
        data: Shape ``(N,)`` for an interval or ``(N, dim)`` (``(N, n)`` points for a segment in :math:`R^n`).
        steps: Maximum number of optimiser steps.
        batch_size: Minibatch size (the whole training split if larger).
        lr: Initial Adam learning rate.
        final_lr_fraction: Learning rate at the last step as a fraction of ``lr``.
        heldout_fraction: Share of the points held out for early stopping (0 disables it: the last step is kept).
        eval_every: Steps between held-out evaluations.
        patience: Steps without held-out improvement before stopping.
        seed: Seeds Pyro's RNG (split, minibatches) when given.
        progress: Show a tqdm progress bar.
        context: For a :class:`~pyroflows.flows.ConditionalCompactFlow`: the features of each data row, shape
            ``(N, context_dim)`` (rows aligned with ``data``); the same split, minibatches and early stopping then
            fit :math:`p(y \\mid x)`. A flow whose context scaling is not yet set gets it from the training rows.

    Returns:
        A :class:`FitResult` with the loss history.

    Raises:
        DataError: bad data (see :func:`check_data`), fewer than 2 points, or a bad ``context`` (see
            :func:`~pyroflows.flows.conditional.check_context`; also a conditional flow without one or a context for
            an unconditional flow).
        ValueError: a bad argument, or a frozen flow (:meth:`CompactFlow.freeze`).

    Example:
        >>> flow = CompactFlow(0.0, 1.0, num_layers=2)
        >>> result = fit(flow, torch.rand(200), steps=60, eval_every=20, progress=False, seed=0)
        >>> result.steps, len(result.heldout_nll)
        (60, 3)
    """
    if isinstance(flow, SegmentFlow):
        return fit(
            flow.arc,
            flow.to_arc_length(data),
            steps=steps,
            batch_size=batch_size,
            lr=lr,
            final_lr_fraction=final_lr_fraction,
            heldout_fraction=heldout_fraction,
            eval_every=eval_every,
            patience=patience,
            seed=seed,
            progress=progress,
        )
    for arg, value in (
        ("steps", steps),
        ("batch_size", batch_size),
        ("eval_every", eval_every),
        ("patience", patience),
    ):
        if not (isinstance(value, int) and value >= 1):
            raise ValueError(f"{arg} must be a positive integer, got {value!r}")
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be positive and finite, got {lr}")
    if not 0 < final_lr_fraction <= 1:
        raise ValueError(f"final_lr_fraction must lie in (0, 1], got {final_lr_fraction}")
    if not 0 <= heldout_fraction < 1:
        raise ValueError(f"heldout_fraction must lie in [0, 1), got {heldout_fraction}")
    if getattr(flow, "frozen", False):
        raise ValueError("the flow is frozen (CompactFlow.freeze): it has no parameters to fit")
    x = check_data(flow, data)
    c = _fit_context(flow, context, x.shape[0])
    if x.shape[0] < 2:
        raise DataError(f"data: need at least 2 points to fit, got {x.shape[0]}")
    if seed is not None:
        pyro.set_rng_seed(seed)
    distributed.synchronize(flow)  # in a process group: rank 0's parameters and random state everywhere
    perm = torch.randperm(x.shape[0], device=x.device)
    n_heldout = int(round(heldout_fraction * x.shape[0]))
    heldout, train = x[perm[:n_heldout]], x[perm[n_heldout:]]
    c_heldout, c_train = (None, None) if c is None else (c[perm[:n_heldout]], c[perm[n_heldout:]])
    if c_train is not None and not bool(flow.context_scaling_set):
        flow.set_context_scaling(c_train)
    n = train.shape[0]
    batch = min(batch_size, n)
    eval_every = min(eval_every, steps)
    decay = final_lr_fraction ** (1.0 / steps)

    # In a process group the ranks' losses are summed: the global prior term is shared out between them.
    world = distributed.world_size() if distributed.active() else 1

    def model(points: torch.Tensor, ctx: torch.Tensor | None = None) -> None:
        d = flow() if ctx is None else None
        if ctx is None:
            # MAP: the flow's own prior on its tail slopes (0 by default)
            pyro.factor("tail_prior", flow.log_prior() / world)
        # In a process group each process observes its share of the (common) minibatch.
        with distributed.subsample_plate("data", points.shape[0], batch) as idx:
            pyro.sample("obs", d if ctx is None else flow(ctx[idx]), obs=points[idx])

    def guide(points: torch.Tensor, ctx: torch.Tensor | None = None) -> None:
        pass

    optim = distributed.synchronize_gradients(pyro.optim.ClippedAdam({"lr": lr, "lrd": decay, "clip_norm": 10.0}))
    svi = SVI(model, guide, optim, Trace_ELBO())
    result = FitResult(eval_every=eval_every)
    best_state, best_log_probs = None, None
    best = smoothed = math.inf
    since_best = 0
    history: list[torch.Tensor] = []  # held-out log-densities of the recent evaluations, for the convergence check
    lookback = max(1, steps // (4 * eval_every))  # the convergence check looks at the last quarter of the budget
    start = time.perf_counter()
    bar = tqdm(total=steps, desc="fit", disable=not progress, leave=False)
    while result.steps < steps:
        flow.train()
        block = min(eval_every, steps - result.steps)
        total = sum(distributed.all_sum(svi.step(train, c_train)) for _ in range(block))
        result.steps += block
        bar.update(block)
        result.train_nll.append(total / (block * n))
        if not n_heldout:
            bar.set_postfix(train=f"{result.train_nll[-1]:.4f}")
            continue
        flow.eval()
        log_probs = _log_probs(flow, heldout, context=c_heldout)
        history = [*history[-lookback:], log_probs]
        nll = -log_probs.mean().item()
        result.heldout_nll.append(nll)
        # Evaluation-to-evaluation jitter of the iterates is as large as the gains late in training; a smoothed curve
        # decides when to stop, so one lucky evaluation neither stops the run nor gets restored.
        smoothed = nll if len(result.heldout_nll) == 1 else 0.7 * smoothed + 0.3 * nll
        if smoothed < best - 1e-5:
            best, since_best = smoothed, 0
            best_state, best_log_probs = copy.deepcopy(flow.state_dict()), log_probs
            result.best_eval = len(result.heldout_nll) - 1
        else:
            since_best += block
        bar.set_postfix(train=f"{result.train_nll[-1]:.4f}", heldout=f"{nll:.4f}")
        if since_best >= patience:
            result.stopped_early = True
            break
    bar.close()
    if n_heldout:
        final_log_probs = history[-1]
        # Go back to the best evaluation only when the held-out data say it is better than the last parameters by
        # more than two standard errors (overfitting); otherwise the last, lowest-learning-rate parameters are kept.
        if best_log_probs is not None and _significantly_better(best_log_probs, final_log_probs):
            flow.load_state_dict(best_state)
        else:
            result.best_eval = len(result.heldout_nll) - 1
        result.best_heldout_nll = -_log_probs(flow, heldout, context=c_heldout).mean().item()
        if not result.stopped_early and len(history) > 1 and _significantly_better(final_log_probs, history[0]):
            result.converged = False
            warnings.warn(
                f"fit: the held-out NLL was still improving when the budget of {steps} steps ran out "
                f"({-history[0].mean().item():.4f} -> {-final_log_probs.mean().item():.4f} nats over the last "
                f"{(len(history) - 1) * eval_every} steps); the flow is probably under-fitted: raise steps",
                ConvergenceWarning,
                stacklevel=2,
            )
    else:
        result.best_eval = len(result.train_nll) - 1
    result.seconds = time.perf_counter() - start
    return result


def _fit_context(flow: CompactFlow, context: torch.Tensor | np.ndarray | None, rows: int) -> torch.Tensor | None:
    """The checked context of a conditional flow (``None`` for an unconditional one)."""
    from pyroflows.flows.conditional import ConditionalCompactFlow, check_context

    conditional = isinstance(flow, ConditionalCompactFlow)
    if conditional and context is None:
        raise DataError("context: a ConditionalCompactFlow needs the features of each data row (context=...)")
    if not conditional and context is not None:
        raise DataError(f"context: given, but {type(flow).__name__} is not conditional; use ConditionalCompactFlow")
    return check_context(flow, context, rows=rows) if conditional else None
