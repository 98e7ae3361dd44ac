"""Maximum-likelihood fitting of a :class:`~pyroflows.flows.CompactFlow` with Pyro SVI.

The data are observed in a Pyro model and the guide is empty, so the ELBO is the log-likelihood and SVI is maximum
likelihood. Minibatches come from ``pyro.plate(subsample_size=...)``; a held-out split drives early stopping and the
parameters with the best held-out NLL are restored at the end.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pyro
import pyro.optim
import pyro.util
import torch
from pyro.infer import SVI, Trace_ELBO
from tqdm.auto import tqdm

from pyroflows import distributed
from pyroflows.errors import DataError, PyroflowsWarning
from pyroflows.flows.bound_exponent import BoundExponent
from pyroflows.flows.compact import CompactFlow
from pyroflows.flows.families import SPLINE_ENDS
from pyroflows.flows.segment import SegmentFlow
from pyroflows.flows.squash import to_bounds_dtype
from pyroflows.validation import as_finite_2d, check_float, check_int

if TYPE_CHECKING:  # imported where used: conditional.py imports this package's compact flows
    from pyroflows.flows.conditional import ConditionalCompactFlow

__all__ = [
    "fit",
    "FitResult",
    "check_data",
    "log_prob_chunked",
    "ConvergenceWarning",
    "DEFAULT_STEPS",
    "default_steps",
]


#: The unconditional default budget, :attr:`CompactFlow.default_fit_steps`
#: (each flow class holds its own; :func:`fit` reads the flow's).
DEFAULT_STEPS = CompactFlow.default_fit_steps


class ConvergenceWarning(PyroflowsWarning):
    """:func:`fit` ran out of steps while the held-out NLL was still improving.

    A :class:`~pyroflows.errors.PyroflowsWarning`, so a :class:`UserWarning`.
    """


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
        ends: For a flow whose ``ends`` :func:`fit` chooses (``"auto"``): the ends it kept; None otherwise.
        ends_heldout_nll: Then the held-out NLL of each candidate's fit (the kept one's is ``best_heldout_nll``).
        bound_exponents: For a flow whose ends :func:`fit` chooses per bound (``"data"``): each dimension's
            ``(lower, upper)`` exponent estimates from the training split that chose them (the chosen ends are the
            flow's ``config["bound_ends"]``); None otherwise.
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
    ends: str | None = None
    ends_heldout_nll: dict[str, float] = field(default_factory=dict)
    bound_exponents: list[tuple[BoundExponent, BoundExponent]] | None = None

    @property
    def best_step(self) -> int:
        """Number of optimiser steps behind the kept parameters."""
        return min(self.steps, (self.best_eval + 1) * self.eval_every)


def check_data(
    flow: CompactFlow | ConditionalCompactFlow, data: torch.Tensor | np.ndarray, *, name: str = "data"
) -> torch.Tensor:
    """Validate data for ``flow``: shape ``(N,)`` (one dimension) or ``(N, dim)``, finite, inside the bounds.

    The shape and finiteness checks are :func:`pyroflows.validation.as_finite_2d`'s; the bounds are compared at the
    data's own precision (see :func:`~pyroflows.flows.to_bounds_dtype`).

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
    x = _as_numbers(data, name)
    if not (x.dim() == 2 and x.shape[1] == flow.dim or x.dim() == 1 and flow.dim == 1):
        raise DataError(
            f"{name}: expected shape (N, {flow.dim}){' or (N,)' if flow.dim == 1 else ''}, got {tuple(x.shape)}"
        )
    x = as_finite_2d(x, name, dim=flow.dim, dtype=x.dtype if x.is_floating_point() else flow.low.dtype,
                     device=flow.low.device)  # fmt: skip
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


def _as_numbers(data: Any, name: str) -> torch.Tensor:
    """``data`` as a tensor of real numbers (bools as 0/1), or a :class:`DataError` naming ``name``."""
    if not torch.is_tensor(data):
        array = np.asarray(data)
        if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
            raise DataError(f"{name}: expected numbers, got dtype {array.dtype}")
        data = torch.as_tensor(array)
    if data.is_complex():
        raise DataError(f"{name}: expected real numbers, got dtype {data.dtype}")
    return data.to(torch.get_default_dtype()) if data.dtype == torch.bool else data


def _significantly_better(candidate: torch.Tensor, incumbent: torch.Tensor, z: float = 2.0) -> bool:
    """Whether per-point log-likelihoods ``candidate`` beat ``incumbent`` on the same points by > ``z`` std. errors."""
    diff = candidate - incumbent
    if diff.numel() < 2:
        return bool(diff.sum() > 0)
    return bool(diff.mean() > z * diff.std() / math.sqrt(diff.numel()))


def log_prob_chunked(
    flow: CompactFlow | Any, x: torch.Tensor, *, context: torch.Tensor | None = None, chunk: int = 65536
) -> torch.Tensor:
    """``log p(x_i)`` (or ``log p(y_i | c_i)`` for a conditional flow) of every row, ``chunk`` rows at a time.

    Scoring a million points at once would hold every layer's intermediate values for all of them; chunks keep the
    memory bounded. No gradient is recorded. ``pyroflows flow score`` and :func:`fit`'s held-out evaluations use it.

    Args:
        flow: A :class:`~pyroflows.flows.CompactFlow` (or any module whose call returns a distribution), or a
            :class:`~pyroflows.flows.ConditionalCompactFlow` with ``context``.
        x: Checked points, shape ``(N, dim)`` (see :func:`check_data`).
        context: The conditional flow's checked context rows, aligned with ``x``.
        chunk: Rows per chunk.

    Example:
        >>> flow = CompactFlow(0.0, 1.0, num_layers=1)
        >>> x = torch.rand(10, 1, dtype=torch.float64)
        >>> torch.equal(log_prob_chunked(flow, x, chunk=3), flow().log_prob(x))
        True
    """
    with torch.no_grad():
        if context is not None:  # a ConditionalCompactFlow: one distribution per chunk of context rows
            return torch.cat(
                [flow(context[i : i + chunk]).log_prob(x[i : i + chunk]) for i in range(0, x.shape[0], chunk)]
            )
        d = flow()
        return torch.cat([d.log_prob(x[i : i + chunk]) for i in range(0, x.shape[0], chunk)])


def fit(
    flow: CompactFlow | ConditionalCompactFlow | SegmentFlow,
    data: torch.Tensor | np.ndarray,
    *,
    steps: int | None = None,
    batch_size: int = 1024,
    lr: float = 3e-2,
    final_lr_fraction: float = 0.01,
    heldout_fraction: float = 0.1,
    eval_every: int = 20,
    patience: int | None = None,
    seed: int | None = None,
    progress: bool = True,
    context: torch.Tensor | np.ndarray | None = None,
) -> FitResult:
    r"""Fit ``flow`` to ``data`` by maximum likelihood with Pyro SVI (an empty guide), in place.

    The budget is ``steps`` optimiser steps whatever the data size, so 1,000 points are fitted as well as 100,000.
    The learning rate decays geometrically from ``lr`` to ``lr * final_lr_fraction`` over the budget (Pyro's
    ``ClippedAdam``). Every ``eval_every`` steps the held-out NLL is computed; training stops when its smoothed value
    has not improved for ``patience`` steps, and the parameters of the best evaluation are then restored if they beat
    the last ones on the held-out points by more than two standard errors (a small held-out split cannot tell apart
    evaluations closer than that, and picking the luckiest of many would overfit the split). By default ``patience``
    is the whole budget: the learning rate has decayed by the end, and the last parameters are kept unless an earlier
    evaluation was significantly better.

    When the budget runs out while the held-out NLL is still improving, a :class:`ConvergenceWarning` says so and
    ``converged`` is False. "Still improving" is measured over the last quarter of the schedule's total step length
    :math:`\tau = \sum_s \mathrm{lr}_s` (gradient-flow time, the distance the optimiser can travel), not of its
    steps: the last parameters must beat those of the first evaluation after which at most a quarter of
    :math:`\tau` remained by more than two standard errors on the held-out points. With the geometric decay to
    ``final_lr_fraction`` = 1% the last quarter of the steps holds only 2% of :math:`\tau`, so the held-out curve
    flattens by the end of any budget, however small, and a check over the last quarter of the steps would call an
    under-fitted run converged; the last quarter of :math:`\tau` starts at 29.5% of the steps. A constant learning
    rate (``final_lr_fraction=1``) makes both the same. The held-out split bounds what the check can see: gains
    smaller than about two standard errors of the held-out NLL difference (0.02-0.04 nats on 500 held-out rows of a
    heavy-tailed target) go unreported, which is why the default budget, not the warning, is what makes a default fit
    good.

    A :class:`~pyroflows.flows.CompactFlow` built with ``ends="auto"`` (a choice in
    :data:`~pyroflows.flows.families.SPLINE_ENDS`) is fitted once per candidate ends (free, then secant), each from
    the flow's current parameters on the same split and minibatches; the flow keeps the fit with the lower held-out NLL
    (``result.ends``), and its ``config["ends"]`` then names the kept ends, so a saved flow reloads as fitted.
    One built with ``ends="data"`` has each bound's ends chosen from the training split before the first step
    (:meth:`CompactFlow.choose_bound_ends <pyroflows.flows.CompactFlow.choose_bound_ends>`: secant ends where the
    density's exponent at the bound is consistent with 1, free ends elsewhere; ``result.bound_exponents``), kept in
    its ``config["bound_ends"]``.

    Args:
        flow: The flow to train (its bounds must contain every point); a :class:`~pyroflows.flows.SegmentFlow`
            is fitted through its arc-length flow.
        data: Shape ``(N,)`` for an interval or ``(N, dim)`` (``(N, n)`` points for a segment in :math:`R^n`).
        steps: Maximum number of optimiser steps; by default the flow's ``default_budget()``
            (:attr:`CompactFlow.default_fit_steps` = 2000; a :class:`~pyroflows.flows.ConditionalCompactFlow` 2000,
            or 4000 on a half-line).
        batch_size: Minibatch size (the whole training split if larger).
        lr: Initial Adam learning rate.
        final_lr_fraction: Learning rate at the last step as a fraction of ``lr``.
        heldout_fraction: Share of the points held out for early stopping (0 disables it: the last step is kept).
        eval_every: Steps between held-out evaluations.
        patience: Steps without held-out improvement before stopping (default: the whole budget).
        seed: Seeds Pyro's RNG (split, minibatches) when given.
        progress: Show a tqdm progress bar.
        context: For a :class:`~pyroflows.flows.ConditionalCompactFlow`: the features of each data row, shape
            ``(N, context_dim)`` (rows aligned with ``data``); the same split, minibatches and early stopping then
            fit :math:`p(y \mid x)`. A flow whose context scaling is not yet set gets it from the training rows.

    Returns:
        A :class:`FitResult` with the loss history.

    Raises:
        DataError: bad data (see :func:`check_data`), fewer than 2 points, or a bad ``context`` (see
            :func:`~pyroflows.flows.conditional.check_context`; also a conditional flow without one or a context for
            an unconditional flow).
        DataError: also a bad argument (:func:`pyroflows.validation.check_int` / ``check_float``), a frozen flow
            (:meth:`CompactFlow.freeze`), or ``ends="auto"`` without a held-out split (``heldout_fraction=0``);
            :class:`~pyroflows.errors.DataError` is a ``ValueError``.

    Example:
        >>> import warnings
        >>> pyro.set_rng_seed(0)  # the flow's start and the data
        >>> flow = CompactFlow(0.0, 1.0, num_layers=2)
        >>> with warnings.catch_warnings(record=True) as caught:  # 30 steps are too few: fit says so
        ...     warnings.simplefilter("always")
        ...     result = fit(flow, torch.rand(200), steps=30, eval_every=10, progress=False, seed=0)
        >>> result.steps, len(result.heldout_nll), [w.category.__name__ for w in caught]
        (30, 3, ['ConvergenceWarning'])
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
    steps = default_steps(flow) if steps is None else steps
    patience = steps if patience is None else patience
    steps, batch_size, eval_every, patience = (
        check_int(value, name, low=1)
        for name, value in (("steps", steps), ("batch_size", batch_size), ("eval_every", eval_every),
                            ("patience", patience))
    )  # fmt: skip
    lr = check_float(lr, "lr", low=0, low_open=True)
    final_lr_fraction = check_float(final_lr_fraction, "final_lr_fraction", low=0, high=1, low_open=True)
    heldout_fraction = check_float(heldout_fraction, "heldout_fraction", low=0, high=1, high_open=True)
    if getattr(flow, "frozen", False):
        raise DataError("the flow is frozen (CompactFlow.freeze): it has no parameters to fit")
    x = check_data(flow, data)
    c = _fit_context(flow, context, x.shape[0])
    if x.shape[0] < 2:
        raise DataError(f"data: need at least 2 points to fit, got {x.shape[0]}")
    if seed is not None:
        pyro.set_rng_seed(seed)
    distributed.synchronize(flow)  # in a process group: rank 0's parameters and random state everywhere
    split = _Split.draw(flow, x, c, heldout_fraction)
    eval_every = min(eval_every, steps)
    batch = min(batch_size, split.train.shape[0])
    settings: dict[str, Any] = dict(steps=steps, batch=batch, lr=lr, final_lr_fraction=final_lr_fraction,
                                    eval_every=eval_every, patience=patience, progress=progress)  # fmt: skip
    rule = SPLINE_ENDS.get(flow.config["ends"]).factory if isinstance(flow, CompactFlow) else None
    exponents = None
    if isinstance(flow, CompactFlow) and rule is not None and rule.per_bound:
        # Chosen from the training split alone, so the held-out split still judges the fit that follows.
        exponents = flow.choose_bound_ends(split.train)
    if isinstance(flow, CompactFlow) and rule is not None and rule.candidates:
        result, unconverged = _fit_choosing_ends(flow, split, **settings)
    else:
        result, unconverged = _fit_split(flow, split, **settings)
    result.bound_exponents = exponents
    if unconverged is not None:
        warnings.warn(unconverged, ConvergenceWarning, stacklevel=2)
    return result


def _fit_split(flow: Any, split: _Split, *, steps: int, batch: int, lr: float, final_lr_fraction: float,
               eval_every: int, patience: int, progress: bool) -> tuple[FitResult, str | None]:  # fmt: skip
    """SVI on a drawn split: train and keep the best parameters; the convergence warning's message, if any."""
    svi = _make_svi(flow, split, batch, lr, final_lr_fraction ** (1.0 / steps))
    result = FitResult(eval_every=eval_every)
    start = time.perf_counter()
    tracker = _train(flow, svi, split, result, steps=steps, patience=patience, progress=progress,
                     window=_convergence_window(steps, final_lr_fraction, eval_every))  # fmt: skip
    unconverged = _finish(flow, split, result, tracker, steps)
    result.seconds = time.perf_counter() - start
    return result, unconverged


def _fit_choosing_ends(flow: CompactFlow, split: _Split, **settings: Any) -> tuple[FitResult, str | None]:
    """Fit each candidate ends of ``flow.config["ends"]`` on the same split and minibatches; keep the best.

    Every candidate starts from the flow's current parameters (those it has) and sees the same random numbers, so
    the choice depends only on the seed. The winner has the lowest held-out NLL (ties go to the first candidate);
    ``flow`` takes its ends and parameters, and only its convergence warning is returned.
    """
    if not split.heldout.shape[0]:
        raise DataError(
            f"ends={flow.config['ends']!r} chooses the spline ends on the held-out split: heldout_fraction must be "
            "above 0 (or give the ends)"
        )
    start, state, rng = time.perf_counter(), flow.state_dict(), pyro.util.get_rng_state()
    fitted: dict[str, tuple[CompactFlow, FitResult, str | None]] = {}
    for ends in SPLINE_ENDS.get(flow.config["ends"]).factory.candidates:
        candidate = CompactFlow.from_config({**flow.config, "ends": ends}).to(flow.low.device)
        candidate.load_state_dict({k: v for k, v in state.items() if k in candidate.state_dict()})
        pyro.util.set_rng_state(rng)
        fitted[ends] = (candidate, *_fit_split(candidate, split, **settings))
    best = min(fitted, key=lambda e: fitted[e][1].best_heldout_nll)
    winner, result, unconverged = fitted[best]
    flow._adopt_ends(winner)
    store = pyro.get_param_store()
    for candidate, _, _ in fitted.values():
        for key in [k for k in store.keys() if k.startswith(f"{candidate._pyro_name}.")]:
            del store[key]
    result.ends = best
    result.ends_heldout_nll = {e: r.best_heldout_nll for e, (_, r, _) in fitted.items()}
    result.seconds = time.perf_counter() - start
    return result, unconverged


def default_steps(flow: Any) -> int:
    """:func:`fit`'s default budget for ``flow``: its ``default_budget()`` (a segment flow's arc flow's).

    Example:
        >>> from pyroflows.flows import ConditionalCompactFlow
        >>> default_steps(CompactFlow(0.0, 1.0)), default_steps(ConditionalCompactFlow(0.0, 1.0, context_dim=2))
        (2000, 2000)
        >>> default_steps(ConditionalCompactFlow(0.0, float("inf"), context_dim=2))
        4000
    """
    if isinstance(flow, SegmentFlow):
        flow = flow.arc
    budget = getattr(flow, "default_budget", None)
    return int(budget()) if callable(budget) else DEFAULT_STEPS


@dataclass
class _Split:
    """The training and held-out rows (and their context rows for a conditional flow)."""

    train: torch.Tensor
    heldout: torch.Tensor
    c_train: torch.Tensor | None
    c_heldout: torch.Tensor | None

    @classmethod
    def draw(cls, flow: Any, x: torch.Tensor, c: torch.Tensor | None, heldout_fraction: float) -> _Split:
        """A random split from Pyro's RNG; a conditional flow without context scaling gets the training rows'."""
        perm = torch.randperm(x.shape[0], device=x.device)
        n_heldout = int(round(heldout_fraction * x.shape[0]))
        split = cls(x[perm[n_heldout:]], x[perm[:n_heldout]], None, None)
        if c is not None:
            split.c_heldout, split.c_train = c[perm[:n_heldout]], c[perm[n_heldout:]]
            if not bool(flow.context_scaling_set):
                flow.set_context_scaling(split.c_train)
        return split


def _make_svi(flow: Any, split: _Split, batch: int, lr: float, decay: float) -> SVI:
    """SVI on the observed flow with an empty guide (maximum likelihood, MAP with the flow's ``log_prior``).

    A :class:`~pyroflows.flows.CompactFlow`'s prior is a ``pyro.factor``; a conditional flow's Normal prior on its
    weights is applied as their weight decay (:meth:`ConditionalCompactFlow.weight_decays
    <pyroflows.flows.ConditionalCompactFlow.weight_decays>`).
    """
    # In a process group the ranks' losses are summed: the global prior term is shared out between them.
    world = distributed.world_size() if distributed.active() else 1

    def model(points: torch.Tensor, ctx: torch.Tensor | None = None) -> None:
        if ctx is None:
            d = flow()  # outside the data plate
            # MAP: the flow's own prior on its tail slopes (0 by default)
            pyro.factor("tail_prior", flow.log_prior() / world)
        # In a process group each process observes its share of the (common) minibatch.
        with distributed.subsample_plate("data", points.shape[0], batch) as idx:
            pyro.sample("obs", d if ctx is None else flow(ctx[idx]), obs=points[idx])

    def guide(points: torch.Tensor, ctx: torch.Tensor | None = None) -> None:
        pass

    args: dict[str, float] = {"lr": lr, "lrd": decay, "clip_norm": 10.0}
    # MAP for a conditional flow: its weight prior's gradient, as each parameter's weight decay (after clipping).
    decays: dict[str, float] = getattr(flow, "weight_decays", dict)()
    prefix = f"{getattr(flow, '_pyro_name', '')}."
    optim_args: Any = (
        (lambda name: {**args, "weight_decay": decays.get(name.removeprefix(prefix), 0.0)}) if decays else args
    )
    optim = distributed.synchronize_gradients(pyro.optim.ClippedAdam(optim_args))
    return SVI(model, guide, optim, Trace_ELBO())


@dataclass
class _Tracker:
    """Early-stopping state: the smoothed held-out NLL, the best evaluation, and the convergence window's anchor.

    The convergence window is the last ``window`` steps of the budget; its anchor is the first evaluation inside it
    (held-out log-densities and parameters), which :func:`_finish` compares with the end of the run.
    """

    window: int
    best: float = math.inf
    smoothed: float = math.inf
    since_best: int = 0
    best_state: dict[str, torch.Tensor] | None = None
    best_log_probs: torch.Tensor | None = None
    last_log_probs: torch.Tensor | None = None
    anchor_log_probs: torch.Tensor | None = None
    anchor_parameters: dict[str, torch.Tensor] | None = None
    anchor_step: int = 0
    evaluations_in_window: int = 0

    def update(self, flow: Any, log_probs: torch.Tensor, result: FitResult, block: int, remaining: int) -> None:
        """Record one evaluation's held-out log-densities (``remaining``: steps left in the budget after it)."""
        self.last_log_probs = log_probs
        if remaining <= self.window:
            if self.anchor_log_probs is None:
                self.anchor_log_probs = log_probs
                self.anchor_parameters = {n: p.detach().clone() for n, p in flow.named_parameters()}
                self.anchor_step = result.steps
            else:
                self.evaluations_in_window += 1
        nll = -log_probs.mean().item()
        result.heldout_nll.append(nll)
        # Evaluation-to-evaluation jitter of the iterates is as large as the gains late in training; a smoothed curve
        # decides when to stop, so one lucky evaluation neither stops the run nor gets restored.
        self.smoothed = nll if len(result.heldout_nll) == 1 else 0.7 * self.smoothed + 0.3 * nll
        if self.smoothed < self.best - 1e-5:
            self.best, self.since_best = self.smoothed, 0
            self.best_state, self.best_log_probs = copy.deepcopy(flow.state_dict()), log_probs
            result.best_eval = len(result.heldout_nll) - 1
        else:
            self.since_best += block


def _train(flow: Any, svi: SVI, split: _Split, result: FitResult, *, steps: int, patience: int, progress: bool,
           window: int) -> _Tracker:  # fmt: skip
    """SVI steps in blocks of ``result.eval_every``, a held-out evaluation after each.

    They run until the budget or the patience runs out.
    """
    n, eval_every = split.train.shape[0], result.eval_every
    tracker = _Tracker(window=window)
    bar = tqdm(total=steps, desc="fit", disable=not progress, leave=False)
    while result.steps < steps:
        flow.train()
        block = min(eval_every, steps - result.steps)
        # A conditional flow's trunk drops features during the steps only (ConditionalCompactFlow.fit_dropout).
        with flow.fit_dropout() if hasattr(flow, "fit_dropout") else contextlib.nullcontext():
            total = sum(distributed.all_sum(svi.step(split.train, split.c_train)) for _ in range(block))
        result.steps += block
        bar.update(block)
        result.train_nll.append(total / (block * n))
        if not split.heldout.shape[0]:
            bar.set_postfix(train=f"{result.train_nll[-1]:.4f}")
            continue
        flow.eval()
        log_probs = log_prob_chunked(flow, split.heldout, context=split.c_heldout)
        tracker.update(flow, log_probs, result, block, remaining=steps - result.steps)
        bar.set_postfix(train=f"{result.train_nll[-1]:.4f}", heldout=f"{result.heldout_nll[-1]:.4f}")
        if tracker.since_best >= patience:
            result.stopped_early = True
            break
    bar.close()
    return tracker


def _convergence_window(steps: int, final_lr_fraction: float, eval_every: int) -> int:
    r"""Steps at the end of the budget that hold the last quarter of the schedule's total step length.

    The learning rate after :math:`t` of :math:`S` steps is :math:`\mathrm{lr}\, f^{t/S}`, so the share of
    :math:`\tau = \sum_s \mathrm{lr}_s` still to come is :math:`(f^{t/S} - f) / (1 - f)` (:math:`1 - t/S` for
    :math:`f = 1`); it falls to 1/4 at :math:`t^* = S \ln\big((1 - f)/4 + f\big) / \ln f`. At least one
    evaluation interval.

    Example:
        >>> _convergence_window(2000, 0.01, 20), _convergence_window(2000, 1.0, 20), _convergence_window(40, 1.0, 20)
        (1411, 500, 20)
    """
    f = final_lr_fraction
    start = 0.75 * steps if f >= 1 else steps * math.log((1 - f) / 4 + f) / math.log(f)
    return max(eval_every, math.ceil(steps - start - 1e-9))


def _finish(flow: Any, split: _Split, result: FitResult, tracker: _Tracker, steps: int) -> str | None:
    """Keep the last parameters unless an earlier evaluation was significantly better.

    Returns:
        The :class:`ConvergenceWarning`'s message when the held-out NLL was still improving (``fit`` issues it).
    """
    if not split.heldout.shape[0]:
        result.best_eval = len(result.train_nll) - 1
        return None
    final_log_probs = tracker.last_log_probs
    assert final_log_probs is not None  # at least one evaluation ran
    # Go back to the best evaluation only when the held-out data say it is better than the last parameters by
    # more than two standard errors (overfitting); otherwise the last, lowest-learning-rate parameters are kept.
    restored = tracker.best_log_probs is not None and _significantly_better(tracker.best_log_probs, final_log_probs)
    if restored:
        flow.load_state_dict(tracker.best_state)
    else:
        result.best_eval = len(result.heldout_nll) - 1
    result.best_heldout_nll = -log_prob_chunked(flow, split.heldout, context=split.c_heldout).mean().item()
    anchor = tracker.anchor_log_probs
    if result.stopped_early or restored or anchor is None or tracker.evaluations_in_window == 0:
        return None
    if not _significantly_better(final_log_probs, anchor):
        return None
    result.converged = False
    return (
        f"fit: the held-out NLL was still improving when the budget of {steps} steps ran out "
        f"({-anchor.mean().item():.4f} -> {-final_log_probs.mean().item():.4f} nats over the last "
        f"{result.steps - tracker.anchor_step} steps, the last quarter of the schedule's total step length); "
        "the flow is probably under-fitted: raise steps"
    )


def _fit_context(
    flow: CompactFlow | ConditionalCompactFlow | SegmentFlow, context: torch.Tensor | np.ndarray | None, rows: int
) -> torch.Tensor | None:
    """The checked context of a conditional flow (``None`` for an unconditional one)."""
    from pyroflows.flows.conditional import ConditionalCompactFlow, check_context

    if not isinstance(flow, ConditionalCompactFlow):
        if context is not None:
            raise DataError(f"context: given, but {type(flow).__name__} is not conditional; use ConditionalCompactFlow")
        return None
    if context is None:
        raise DataError("context: a ConditionalCompactFlow needs the features of each data row (context=...)")
    return check_context(flow, context, rows=rows)
