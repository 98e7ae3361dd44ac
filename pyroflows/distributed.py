r"""Running pyroflows on several processes with ``torch.distributed`` (``torchrun``, SLURM, ``mp.spawn``).

Everything here is a no-op without an initialised process group of more than one process, so single-process code
runs exactly as before. Inside a process group the package follows one rule, *same call on every rank, same result
on every rank, work split between them*:

* **Attribution** (``PerSampleBottleneck.attribute``, ``ReadoutBottleneck.attribute``): each rank attributes a
  contiguous shard of the inputs (:func:`shard_range`, global order kept) and the maps are gathered back in order
  (:func:`map_shards`). The per-sample bottleneck draws the same noise for every image of a batch, so with the
  random state broadcast from rank 0 before the call an image's map does not depend on the rank that computed it.
* **Statistics** (``estimate``): each rank runs its shard of the data (:func:`shard_batches`) and the moments are
  merged across ranks (:func:`reduce_statistics`): counts, :math:`\sum_r n_r \bar x_r`, and
  :math:`M_2 = \sum_r M_{2,r} + n_r (\bar x_r - \bar x)^2` by all-reduce, in float64.
* **Evaluation** (``evaluate_methods``): per-image metrics run on shards and are gathered.
* **Training** (the readout, the DDPM, the flows): every rank sees the same global minibatch (the random state is
  kept identical on all ranks), takes its contiguous slice of rows (:func:`global_batch`), draws per-row noise for
  the whole global batch and keeps its rows (:func:`draw_rows`), so its loss is its exact share of the one-process
  loss; gradients are summed across ranks before every optimiser step (:func:`synchronize_gradients`), so every
  rank applies the one-process update. Held-out evaluation and early stopping then agree on every rank.
* **Failures**: code between two synchronisation points runs under :func:`fail_together`: an exception on one rank
  is announced to all at the next collective and every rank raises (:class:`RankFailedError` on the others), so no
  rank waits forever and nothing is written. Files are written by rank 0 only (:func:`is_main`), after the last
  collective succeeded.

The command line initialises the process group itself from ``torchrun``'s variables (:func:`launched`):

.. code-block:: bash

    torchrun --nproc-per-node 2 -m pyroflows attribute digits/*.npy --out maps

Example:
    >>> world_size(), rank(), is_main(), active()   # no process group: one process
    (1, 0, True, False)
    >>> [list(shard_range(10, r, 3)) for r in range(3)]
    [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import torch

from pyroflows.errors import DataError, PyroflowsError

__all__ = [
    "RankFailedError",
    "GlobalBatch",
    "init_from_env",
    "launched",
    "active",
    "local",
    "rank",
    "world_size",
    "is_main",
    "shard_range",
    "shard",
    "shard_batches",
    "all_gather_concat",
    "all_sum",
    "barrier",
    "synchronize",
    "map_shards",
    "from_main",
    "fail_together",
    "reduce_statistics",
    "global_batch",
    "draw_rows",
    "subsample_plate",
    "synchronize_gradients",
]

T = TypeVar("T")


class _Rows(Protocol):
    """What :func:`shard` cuts: a tensor or a sequence (a length, and rows by a slice)."""

    def __len__(self) -> int: ...

    def __getitem__(self, rows: slice, /) -> Any: ...


R = TypeVar("R", bound=_Rows)

# Depth of nested ``local()`` blocks: inside one, this process ignores the process group.
_LOCAL: contextvars.ContextVar[int] = contextvars.ContextVar("pyroflows_distributed_local", default=0)
# The global minibatch the current training step belongs to (None outside ``global_batch``).
_BATCH: contextvars.ContextVar[GlobalBatch | None] = contextvars.ContextVar("pyroflows_global_batch", default=None)


class RankFailedError(PyroflowsError, RuntimeError):
    """Another process of the run raised; this one stops too (the message names the rank and its error)."""


# ------------------------------------------------------------------------------------------------- process group
def _dist() -> Any:
    import torch.distributed as dist

    return dist


def init_from_env(backend: str | None = None) -> bool:
    """Initialise the default process group from ``torchrun``'s environment, if there is one to join.

    Joins when ``WORLD_SIZE`` > 1 and ``MASTER_ADDR`` are set (``torchrun``, or a SLURM script that exports them)
    and no group exists yet. The backend is ``nccl`` when CUDA is available (the device is set from
    ``LOCAL_RANK``), ``gloo`` otherwise; ``PYROFLOWS_DIST_BACKEND`` or ``backend`` override it.

    Returns:
        Whether this call created the group (the caller then destroys it, see :func:`launched`).

    Example:
        >>> init_from_env()  # no torchrun variables: nothing to do
        False
    """
    dist = _dist()
    if not dist.is_available() or dist.is_initialized():
        return False
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or "MASTER_ADDR" not in os.environ:
        return False
    backend = backend or os.environ.get("PYROFLOWS_DIST_BACKEND") or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend)
    return True


@contextlib.contextmanager
def launched(backend: str | None = None) -> Iterator[None]:
    """Run the block inside the process group ``torchrun`` describes (or as one process without it).

    Example:
        >>> with launched():
        ...     world_size()
        1
    """
    created = init_from_env(backend)
    try:
        yield
        if created and world_size() > 1:
            # Every rank reaches the teardown before any destroys the group: a rank that tore gloo down while rank 0
            # was still writing its outputs was seen to abort ("terminate called without an active exception").
            _dist().barrier()
    finally:
        if created:
            _dist().destroy_process_group()


def _initialised() -> bool:
    dist = _dist()
    return dist.is_available() and dist.is_initialized()


def active() -> bool:
    """Whether work is split: a process group of more than one process, outside :func:`local`."""
    return _LOCAL.get() == 0 and _initialised() and _dist().get_world_size() > 1


@contextlib.contextmanager
def local() -> Iterator[None]:
    """Ignore the process group inside the block: this process works alone on whatever it is given.

    For code that shards its data itself (e.g. with ``DistributedSampler``) and wants per-rank results.
    """
    token = _LOCAL.set(_LOCAL.get() + 1)
    try:
        yield
    finally:
        _LOCAL.reset(token)


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return _dist().get_rank() if _initialised() else 0


def world_size() -> int:
    """Number of processes (1 without a process group)."""
    return _dist().get_world_size() if _initialised() else 1


def is_main() -> bool:
    """Whether this process is rank 0, the one that writes files and prints results."""
    return rank() == 0


def _device() -> torch.device:
    """Where collectives take their tensors: the current CUDA device under NCCL, the CPU otherwise."""
    if _initialised() and _dist().get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def barrier() -> None:
    """Wait for every rank (no-op without a process group)."""
    if active():
        _dist().barrier()


# ------------------------------------------------------------------------------------------------------ sharding
def shard_range(n: int, rank_: int | None = None, world: int | None = None) -> range:
    """The contiguous rows ``range(start, stop)`` of ``n`` that a rank handles; ranks in order cover ``0..n-1``.

    The first ``n % world`` ranks get one row more, so shards differ in size by at most one.

    Example:
        >>> shard_range(5, 1, 2), shard_range(1, 1, 2)
        (range(3, 5), range(1, 1))
    """
    r = rank() if rank_ is None else rank_
    w = (world_size() if active() else 1) if world is None else world
    base, extra = divmod(int(n), w)
    start = r * base + min(r, extra)
    return range(start, start + base + (1 if r < extra else 0))


def shard(x: R) -> R:
    """This rank's contiguous shard of a tensor or sequence along its first axis (``x`` itself when inactive)."""
    if not active():
        return x
    rows = shard_range(len(x))
    return x[rows.start : rows.stop]


def shard_batches(data: Any, max_samples: int | None = None) -> Any:
    """This rank's part of an estimation data set, the first ``max_samples`` samples of the whole set in all.

    A tensor ``[N, ...]`` gives its contiguous shard; an iterable of batches (a DataLoader, ``(x, y)`` tuples)
    gives every ``world``-th batch starting at this rank (every rank iterates the batches, so each knows the global
    count for ``max_samples``; a DataLoader must therefore yield the same batches in the same order on every rank:
    no unseeded shuffling). Inactive: ``data`` unchanged.
    """
    if not active():
        return data
    if isinstance(data, torch.Tensor):
        return shard(data if max_samples is None else data[:max_samples])
    return _round_robin(data, max_samples)


def _round_robin(data: Iterable[Any], max_samples: int | None) -> Iterator[Any]:
    seen, r, w = 0, rank(), world_size()
    for index, batch in enumerate(data):
        if max_samples is not None and seen >= max_samples:
            return
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        keep = len(x) if max_samples is None else min(len(x), max_samples - seen)
        if index % w == r:
            yield x[:keep]
        seen += keep


# ------------------------------------------------------------------------------------------------- collectives
def _all_gather_object(obj: Any) -> list[Any]:
    gathered: list[Any] = [None] * world_size()
    _dist().all_gather_object(gathered, obj)
    return gathered


def all_sum(value: float) -> float:
    """The sum of a number over ranks, the same float on every rank (``value`` when inactive)."""
    if not active():
        return value
    buffer = torch.tensor([float(value)], dtype=torch.float64, device=_device())
    _dist().all_reduce(buffer)
    return float(buffer.item())


def all_gather_concat(tensor: torch.Tensor | None, dim: int = 0) -> torch.Tensor:
    """Concatenate every rank's tensor along ``dim`` in rank order, on every rank; sizes along ``dim`` may differ.

    A rank with nothing to contribute passes ``None``. The tensors are padded to the largest size, gathered with
    one ``all_gather`` and trimmed.

    Raises:
        DataError: no rank contributed, or the ranks' tensors differ in other dimensions or dtype.
    """
    if not active():
        if tensor is None:
            raise DataError("all_gather_concat: nothing to gather")
        return tensor
    meta = _all_gather_object(None if tensor is None else (tuple(tensor.shape), str(tensor.dtype)))
    present = [m for m in meta if m is not None]
    if not present:
        raise DataError("all_gather_concat: no rank has a result to gather")
    shape, dtype_name = present[0]
    dim = dim % len(shape)
    others = {(s[:dim] + s[dim + 1 :], d) for s, d in present}
    if len(others) > 1:
        raise DataError(f"all_gather_concat: ranks returned tensors of different shapes or dtypes: {present}")
    dtype = getattr(torch, dtype_name.replace("torch.", ""))
    sizes = [0 if m is None else m[0][dim] for m in meta]
    longest = max(sizes)
    padded_shape = list(shape)
    padded_shape[dim] = longest
    buffer = torch.zeros(padded_shape, dtype=dtype, device=_device())
    if tensor is not None and sizes[rank()]:
        buffer.narrow(dim, 0, sizes[rank()]).copy_(tensor)
    parts = [torch.empty_like(buffer) for _ in sizes]
    _dist().all_gather(parts, buffer)
    out_device = tensor.device if tensor is not None else torch.device("cpu")
    return torch.cat([p.narrow(dim, 0, s) for p, s in zip(parts, sizes, strict=True)], dim=dim).to(out_device)


def synchronize(*modules: torch.nn.Module) -> None:
    """Copy rank 0's random state and the parameters and buffers of ``modules`` to every rank.

    Called at the start of training and before sharded attribution, so that every rank draws the same random
    numbers (the held-out split, the minibatches, the noise of the global batch) from the same weights.
    """
    if not active():
        return
    dist = _dist()
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    state = [(torch.get_rng_state(), torch.cuda.get_rng_state() if cuda else None)]
    dist.broadcast_object_list(state, src=0)
    torch.set_rng_state(state[0][0])
    if cuda and state[0][1] is not None:
        torch.cuda.set_rng_state(state[0][1])
    device = _device()
    for module in modules:
        for tensor in [*module.parameters(), *module.buffers()]:
            if tensor.device == device:
                dist.broadcast(tensor.data, src=0)
            else:
                copy = tensor.data.to(device)
                dist.broadcast(copy, src=0)
                tensor.data.copy_(copy)


# ------------------------------------------------------------------------------------------------------ failures
@contextlib.contextmanager
def fail_together() -> Iterator[None]:
    """Run the block on every rank; if it raises on any rank, raise on all of them when the block ends.

    Every rank reaches the end of the block (an exception stops only the raising rank's block), all agree on
    whether some rank failed (one ``all_gather_object``), and then the failing rank re-raises its own exception
    while the others raise :class:`RankFailedError` naming it. Without a process group the block runs as is.

    Raises:
        RankFailedError: another rank raised in the block.
    """
    if not active():
        yield
        return
    error: BaseException | None = None
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - every error is shared with the other ranks, then re-raised
        error = exc
    reports = _all_gather_object(None if error is None else f"{type(error).__name__}: {error}")
    if error is not None:
        raise error
    failed = [(r, message) for r, message in enumerate(reports) if message is not None]
    if failed:
        r, message = failed[0]
        raise RankFailedError(f"rank {r} of {world_size()} failed: {message}")


# ---------------------------------------------------------------------------------------------- sharded calls
def _gather_result(result: Any, concat: Mapping[str, int] | None) -> Any:
    """Concatenate a per-image result across ranks: a tensor along dim 0, or a dataclass's ``concat`` fields."""
    results = _all_gather_object("object" if result is not None and not isinstance(result, torch.Tensor) else None)
    if "object" in results:
        if not concat:
            raise TypeError("map_shards: a dataclass result needs concat={field: dim}")
        # The fields that are not concatenated (e.g. a curve's x axis) come from the first rank with a result.
        first = results.index("object")
        template = _broadcast_object(result if rank() == first else None, first)
        fields = {
            name: all_gather_concat(None if result is None else getattr(result, name), dim)
            for name, dim in concat.items()
        }
        return dataclasses.replace(template, **fields)
    return all_gather_concat(result)


def _broadcast_object(obj: Any, src: int) -> Any:
    holder = [obj]
    _dist().broadcast_object_list(holder, src=src)
    return holder[0]


def from_main(obj: T) -> T:
    """Rank 0's ``obj`` on every rank (``obj`` itself when inactive); e.g. one sample every rank measures on.

    Example:
        >>> from_main([1, 2])
        [1, 2]
    """
    if not active():
        return obj
    return _broadcast_object(obj, 0)


def map_shards(
    fn: Callable[..., Any], inputs: torch.Tensor, *args: Any, concat: Mapping[str, int] | None = None
) -> Any:
    """``fn(inputs, *args)``, computed by every rank on its shard of the rows and gathered in order on all ranks.

    Arguments that are tensors with ``len(inputs)`` rows are sharded with ``inputs``; the others are passed
    whole. ``fn`` runs under :func:`local` (so nested library calls do not split again) and
    :func:`fail_together`, after :func:`synchronize` has given every rank rank 0's random state. A rank with no
    rows skips ``fn``.

    Args:
        fn: A per-row function returning a tensor ``[n, ...]`` or a dataclass (then name its per-row fields).
        inputs: ``[N, ...]``.
        args: Further arguments.
        concat: For a dataclass result, ``{field: dim}`` of the fields to concatenate (the others are taken
            from the first rank).

    Returns:
        What ``fn(inputs, *args)`` returns in one process, up to floating-point rounding.
    """
    if not active():
        return fn(inputs, *args)
    n = len(inputs)
    rows = shard_range(n)
    local_args = [
        a[rows.start : rows.stop] if isinstance(a, torch.Tensor) and a.ndim > 0 and len(a) == n else a for a in args
    ]
    synchronize()
    result = None
    with fail_together(), local():
        if len(rows):
            result = fn(inputs[rows.start : rows.stop], *local_args)
    return _gather_result(result, concat)


# -------------------------------------------------------------------------------------------------- statistics
def reduce_statistics(stats: Any) -> Any:
    r"""Merge a :class:`~pyroflows.attribution.statistics.FeatureStatistics` across ranks, in place.

    Per element (a padding mask leaves elements out of some samples, so counts are per element), with
    :math:`n = \sum_r n_r` and :math:`\bar x = \sum_r n_r \bar x_r / n`, the merged sum of squared deviations
    is :math:`M_2 = \sum_r \left(M_{2,r} + n_r (\bar x_r - \bar x)^2\right)` (Chan et al.'s update for any number
    of parts): two all-reduces in float64, identical on every rank, equal to one process's totals up to rounding.
    A rank that saw no samples contributes zeros.

    Returns:
        ``stats``, now holding the totals over all ranks.
    """
    if not active():
        return stats
    meta = _all_gather_object((stats.count, None if stats.mean is None else tuple(stats.mean.shape)))
    total = sum(count for count, _ in meta)
    shapes = {shape for count, shape in meta if count}
    if total == 0:
        return stats
    if len(shapes) > 1:
        raise DataError(f"the ranks' feature maps differ in shape {sorted(shapes)}; estimate() needs one input size")
    (shape,) = shapes
    device = _device()
    out_device = stats.mean.device if stats.mean is not None else torch.device("cpu")
    if stats.count:
        mean = stats.mean.to(device, torch.float64)
        m2 = stats.m2.to(device, torch.float64)
        nonzero = stats.nonzero.to(device, torch.float64)
        counts = stats.counts.to(device, torch.float64)  # per element (a padding mask leaves some out)
    else:
        mean = m2 = nonzero = counts = torch.zeros(shape, dtype=torch.float64, device=device)
    first = torch.stack([mean * counts, nonzero, counts])
    _dist().all_reduce(first)
    global_counts = first[2]
    global_mean = first[0] / global_counts.clamp_min(1.0)  # elements no rank counted keep mean 0
    second = m2 + (mean - global_mean).square() * counts
    _dist().all_reduce(second)
    stats.count = total
    stats.mean = global_mean.to(out_device)
    stats.m2 = second.to(out_device)
    stats.nonzero = first[1].round().long().to(out_device)
    stats.counts = global_counts.to(out_device)
    return stats


# ---------------------------------------------------------------------------------------------------- training
@dataclass(frozen=True)
class GlobalBatch:
    """One training step's global minibatch of ``n`` rows, of which this rank holds ``rows``.

    Attributes:
        n: Rows of the global batch.
        rows: This rank's contiguous rows (``slice(0, n)`` in one process).
        weight: The factor that turns this rank's loss into its share of the global loss: ``len(rows) / n`` for a
            loss that is a mean over rows, 1 for a sum.
    """

    n: int
    rows: slice
    weight: float

    def total(self, local_loss: float) -> float:
        """The global batch's loss from this rank's (a weighted sum over ranks; ``local_loss`` in one process)."""
        return all_sum(local_loss * self.weight) if active() else local_loss


@contextlib.contextmanager
def global_batch(n: int, reduction: str = "mean") -> Iterator[GlobalBatch]:
    """Declare one training step on a global minibatch of ``n`` rows; yields this rank's share.

    Inside the block, :func:`draw_rows` draws per-row noise for all ``n`` rows and keeps this rank's, and the
    optimiser wrapped by :func:`synchronize_gradients` scales this rank's gradient by ``weight`` before summing
    over ranks, so the update equals one process's on the whole batch.

    Args:
        n: Rows of the global batch (every rank passes the same number).
        reduction: ``"mean"`` if the step's loss is a mean over the batch's rows, ``"sum"`` if it is a sum.

    Raises:
        DataError: fewer rows than processes.

    Example:
        >>> with global_batch(8) as batch:
        ...     batch.rows, batch.weight
        (slice(0, 8, None), 1.0)
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    if not active():
        share = GlobalBatch(int(n), slice(0, int(n)), 1.0)
    else:
        if n < world_size():
            raise DataError(
                f"a minibatch of {n} row(s) cannot be split over {world_size()} processes; use a batch of at least "
                f"{world_size()} rows"
            )
        r = shard_range(n)
        share = GlobalBatch(int(n), slice(r.start, r.stop), len(r) / n if reduction == "mean" else 1.0)
    token = _BATCH.set(share)
    try:
        yield share
    finally:
        _BATCH.reset(token)


def draw_rows(draw: Callable[[int], torch.Tensor], n_local: int, dim: int = 0) -> torch.Tensor:
    """Per-row random numbers for this rank's ``n_local`` rows, equal to one process's for the same rows.

    ``draw(m)`` draws for ``m`` rows along ``dim``. Inside :func:`global_batch` (when ``n_local`` is this rank's
    share), it draws for the whole global batch and keeps this rank's rows, so the random stream, and hence every
    later draw, is the same on every rank and in one process. Otherwise it is ``draw(n_local)``.
    """
    batch = _BATCH.get()
    if batch is None or not active() or n_local != batch.rows.stop - batch.rows.start:
        return draw(n_local)
    return draw(batch.n).narrow(dim, batch.rows.start, n_local)


@contextlib.contextmanager
def subsample_plate(name: str, size: int, subsample_size: int) -> Iterator[Any]:
    """``pyro.plate(name, size, subsample_size=...)`` whose minibatch is split over the ranks.

    Every rank draws the same minibatch of indices (the draw ``pyro.plate`` makes, from the shared random state),
    keeps its contiguous share, and scales its log-densities by ``size / subsample_size``, the one-process plate's
    factor; the sum of the ranks' losses is then the one-process loss. Yields this rank's indices.
    """
    import pyro
    from pyro import poutine
    from pyro.poutine.subsample_messenger import _Subsample

    if not active():
        with pyro.plate(name, size, subsample_size=subsample_size) as idx:
            yield idx
        return
    idx = _Subsample(size, subsample_size).sample()
    if len(idx) < world_size():
        raise DataError(f"a minibatch of {len(idx)} point(s) cannot be split over {world_size()} processes")
    rows = shard_range(len(idx))
    mine = idx[rows.start : rows.stop]
    with poutine.scale(scale=len(mine) / len(idx)), pyro.plate(name, size, subsample=mine) as local_idx:
        yield local_idx


def _named(params: Iterable[torch.Tensor]) -> list[torch.Tensor]:
    """The step's parameters in the same order on every rank (by their names in Pyro's parameter store)."""
    import pyro

    store = pyro.get_param_store()
    named: list[tuple[str, torch.Tensor]] = []
    for p in params:
        name = store.param_name(p)
        if name is None:
            raise RuntimeError("synchronize_gradients: a parameter of the step is not in Pyro's parameter store")
        named.append((name, p))
    return [p for _, p in sorted(named, key=lambda item: item[0])]


def _sum_gradients(params: Iterable[torch.Tensor]) -> None:
    grads = [p.grad for p in _named(params) if p.grad is not None]
    if not grads:
        return
    batch = _BATCH.get()
    weight = 1.0 if batch is None else batch.weight
    device = _device()
    flat = torch.cat([g.detach().reshape(-1).to(device, torch.float64) for g in grads]) * weight
    _dist().all_reduce(flat)
    offset = 0
    for g in grads:
        k = g.numel()
        g.copy_(flat[offset : offset + k].view_as(g).to(g))
        offset += k


_SYNCED_CLASSES: dict[type, type] = {}


def synchronize_gradients(optim: T) -> T:
    """Make a Pyro optimiser sum its parameters' gradients over ranks before each step (in place; returned).

    The gradient of each rank is first multiplied by its :class:`GlobalBatch` ``weight`` (1 outside
    :func:`global_batch`), then all ranks' are summed in float64 (one all-reduce of one flat buffer, parameters
    ordered by name), so every rank applies the same update, the one-process update on the global batch. The
    same role as ``DistributedDataParallel``'s all-reduce, for ``pyro.infer.SVI``, which hands its optimiser the
    step's parameters. Without a process group ``optim`` is returned unchanged.
    """
    if not _initialised() or world_size() == 1:
        return optim
    cls = type(optim)
    if cls not in _SYNCED_CLASSES:

        def __call__(self: Any, params: Any, *args: Any, **kwargs: Any) -> Any:
            params = list(params)
            if active():
                _sum_gradients(params)
            return cls.__call__(self, params, *args, **kwargs)

        _SYNCED_CLASSES[cls] = type(f"GradientSumming{cls.__name__}", (cls,), {"__call__": __call__})
    optim.__class__ = _SYNCED_CLASSES[cls]
    return optim
