r"""Training a :class:`~pyroflows.diffusion.DDPM` through ``pyro.infer.SVI``.

Two losses: Ho et al.'s simple :math:`\epsilon`-MSE (default; what the post uses), passed to SVI as a custom loss
callable, and the exact variational bound, ``TraceMeanField_ELBO`` on the DDPM's model and guide (both scaled by
1 / batch size, so the loss reads in nats per sample of scaled data). An exponential moving average (EMA) of the
weights, copied into the network at the end, makes few-step sampling much more stable. With ``labels`` (a
class-conditional DDPM), each row's label is replaced by the null label at the rate ``label_dropout`` in every
step, so one network learns both the conditional and the unconditional model that classifier-free guidance mixes.

Example:
    >>> import torch
    >>> from pyroflows.diffusion.ddpm import DDPM
    >>> ddpm = DDPM(data_dim=2, steps=5)
    >>> history = train(ddpm, torch.randn(64, 2), epochs=3, progress=False)
    >>> len(history)
    3
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import pyro
import torch
from pyro import poutine
from pyro.infer import SVI, TraceMeanField_ELBO
from pyro.optim import PyroLRScheduler, PyroOptim
from tqdm.auto import tqdm

from pyroflows import distributed
from pyroflows.diffusion.ddpm import DDPM
from pyroflows.errors import DataError, NumericalError
from pyroflows.validation import check_float

__all__ = ["train", "LOSSES", "DEFAULT_OPTIMIZER_STEPS", "DEFAULT_BATCH_SIZE", "DEFAULT_LABEL_DROPOUT"]

LOSSES = ("eps-mse", "elbo")
DEFAULT_OPTIMIZER_STEPS = 5000
DEFAULT_BATCH_SIZE = 2048
# 0.3 rather than 0.15: on two moons (2,000 optimizer steps, seeds 0 and 1) the null label's ED ratio was 2.02 / 2.58
# at 0.3 against 2.46 / 4.07 at 0.15 (an unconditional network: 1.82 / 2.04), per-class accuracy 0.98 either way. At the
# default 5,000 steps the null label at 0.3 is level with an unconditional network trained side by side (seeds 0-2:
# 1.71 / 2.10 / 1.76 vs 1.76 / 2.01 / 1.84); 0.5 was not separably better (1.59 / 2.05 / 1.82) at a lower per-moon
# accuracy at w = 0 (0.987 vs 0.989). benchmarks/RESULTS.md, "Diffusion: conditioning".
DEFAULT_LABEL_DROPOUT = 0.3


def train(
    ddpm: DDPM,
    data: Any,
    *,
    loss: str = "eps-mse",
    epochs: int | None = None,
    lr: float = 1e-2,
    weight_decay: float = 1e-4,
    batch_size: int | None = None,
    ema_decay: float | None = 0.999,
    lr_schedule: str = "cosine",
    num_particles: int = 1,
    fit_scaler: bool | None = None,
    seed: int | None = None,
    progress: bool = True,
    labels: Any = None,
    label_dropout: float = DEFAULT_LABEL_DROPOUT,
) -> list[float]:
    """Fit the noise predictor with SVI and AdamW (after the post's recipe: lr 1e-2, full batch, 5,000 epochs).

    The default budget is 5,000 optimizer steps on batches of at most 2,048 rows: 5,000 full-batch epochs for
    up to 2,048 rows, fewer epochs of minibatches for more data (1-5 minutes for 10,000 2-D points on a shared
    2-core machine, depending on its load). The number of SVI iterations is set by ``epochs`` (times the batches
    per epoch), never by a ``steps`` argument: in diffusion "steps" means T, the model's ``ddpm.steps``.

    Args:
        ddpm: The model; trained in place.
        data: Training data of shape ``(N, D)`` in data units (array or tensor).
        loss: ``"eps-mse"`` (default) or ``"elbo"`` (the exact bound through ``TraceMeanField_ELBO``).
        epochs: Passes over the data; ``None`` gives 5,000 optimizer steps in all.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        batch_size: Rows per step; ``None`` uses ``min(N, 2048)``.
        lr_schedule: ``"cosine"`` (default) anneals the learning rate to 0 over the run (Pyro's
            ``CosineAnnealingLR``); ``"constant"`` keeps it (the post's recipe).
        ema_decay: Decay of the weight average copied into the network at the end (with the usual warm-up
            ``min(decay, (1 + k) / (10 + k))`` at step k); ``None`` keeps the last iterate.
        num_particles: Guide draws per step for ``loss="elbo"``.
        fit_scaler: Fit the [-1, 1] scaler to ``data`` first; ``None`` fits it only if it is not fitted yet.
        seed: Seed for ``pyro.set_rng_seed`` before training.
        progress: Show a tqdm progress bar.
        labels: Class labels ``(N,)`` in ``0..K-1`` for a DDPM built with ``num_classes=K``.
        label_dropout: Fraction of rows whose label is replaced by the null label K in each step (default 0.3),
            which trains the unconditional model for classifier-free guidance in the same network.

    Returns:
        The mean loss of each epoch.

    Raises:
        DataError: unknown loss, ``epochs < 1``, bad ``batch_size`` or ``label_dropout``, bad data (see
            :meth:`DDPM.as_data`, :meth:`MinMaxScaler.fit`), bad or missing labels, or
            ``lr`` not a finite positive number.
        NumericalError: the training diverged (a loss or a weight became NaN or infinite); the message names the
            optimizer step and the loss. The model is left as it was when it diverged: do not save it.

    Example:
        >>> import torch
        >>> ddpm = DDPM(data_dim=2, steps=5, num_classes=2)
        >>> x, y = torch.randn(64, 2), torch.randint(0, 2, (64,))
        >>> len(train(ddpm, x, labels=y, epochs=2, progress=False))
        2
    """
    x, y, lr = _check_arguments(ddpm, data, labels, loss, epochs, lr, lr_schedule, batch_size, label_dropout)
    if fit_scaler or (fit_scaler is None and not bool(ddpm.scaler.fitted)):
        ddpm.scaler.fit(x)
    if seed is not None:
        pyro.set_rng_seed(seed)
    distributed.synchronize(ddpm)  # in a process group: rank 0's weights and random state everywhere
    n = x.shape[0]
    batch = min(DEFAULT_BATCH_SIZE if batch_size is None else int(batch_size), n)
    steps_per_epoch = -(-n // batch)
    if epochs is None:
        epochs = -(-DEFAULT_OPTIMIZER_STEPS // steps_per_epoch)
    total_steps = int(epochs) * steps_per_epoch
    optimizer = _optimizer(lr, weight_decay, lr_schedule, total_steps)
    svi = _svi(ddpm, loss, optimizer, num_particles)
    params = [p for p in ddpm.network.parameters()]
    ema = _EMA(params, ema_decay) if ema_decay is not None else None
    ddpm.train()
    history, step = _run_epochs(ddpm, svi, optimizer, ema, x, y, int(epochs), batch, total_steps, loss, lr,
                                lr_schedule, label_dropout, progress)  # fmt: skip
    if ema is not None:
        ema.copy_to(params)
    _check_weights(ddpm, step, loss, history, lr)
    ddpm.eval()
    return history


def _run_epochs(
    ddpm: DDPM,
    svi: SVI,
    optimizer: Any,
    ema: _EMA | None,
    x: torch.Tensor,
    y: torch.Tensor | None,
    epochs: int,
    batch: int,
    total_steps: int,
    loss: str,
    lr: float,
    lr_schedule: str,
    label_dropout: float,
    progress: bool,
) -> tuple[list[float], int]:
    """The optimisation loop: each epoch's mean loss and the number of optimizer steps taken."""
    history: list[float] = []
    bar = tqdm(range(epochs), desc=f"DDPM {loss}", disable=not progress, leave=False)
    step = 0
    for _ in bar:
        total = 0.0
        for x_batch, y_batch in _batches(ddpm, x, y, batch, label_dropout):
            value = _svi_step(svi, x_batch, y_batch)
            step += 1
            if not math.isfinite(value):
                raise NumericalError(
                    f"the training diverged at optimizer step {step} of {total_steps} (epoch {len(history) + 1}): "
                    f"{loss} loss {value}; try a smaller learning rate than {lr:g}"
                )
            total += value * x_batch.shape[0]
            if lr_schedule == "cosine":
                optimizer.step()
            if ema is not None:
                ema.update(step)
        history.append(total / x.shape[0])
        if progress and len(history) % 50 == 0:
            bar.set_postfix(loss=f"{history[-1]:.4f}")
    return history, step


def _check_arguments(
    ddpm: DDPM,
    data: Any,
    labels: Any,
    loss: str,
    epochs: int | None,
    lr: float,
    lr_schedule: str,
    batch_size: int | None,
    label_dropout: float,
) -> tuple[torch.Tensor, torch.Tensor | None, float]:
    """Every check of :func:`train`'s arguments, before any work; returns the data and labels as tensors and lr."""
    if loss not in LOSSES:
        raise DataError(f"loss: expected one of {LOSSES}, got {loss!r}")
    if epochs is not None and int(epochs) < 1:
        raise DataError(f"epochs: expected at least 1, got {epochs}")
    lr = check_float(lr, "lr", low=0, low_open=True)
    if lr_schedule not in ("cosine", "constant"):
        raise DataError(f"lr_schedule: expected 'cosine' or 'constant', got {lr_schedule!r}")
    if batch_size is not None and int(batch_size) < 1:
        raise DataError(f"batch_size: expected at least 1 (or None for full batch), got {batch_size}")
    x = ddpm.as_data(data, "data")
    y = ddpm.as_labels(labels, x.shape[0])
    if ddpm.num_classes and y is None:
        raise DataError(f"labels: this DDPM has {ddpm.num_classes} classes; pass labels=... (one per row) to train it")
    if not 0.0 <= float(label_dropout) < 1.0:
        raise DataError(f"label_dropout: expected a rate in [0, 1), got {label_dropout!r}")
    return x, y, lr


def _optimizer(lr: float, weight_decay: float, lr_schedule: str, total_steps: int) -> PyroOptim:
    """AdamW, cosine-annealed to 0 over ``total_steps`` or constant, its gradients summed over processes."""
    optim_args = {"lr": lr, "weight_decay": weight_decay, "betas": (0.9, 0.999)}
    optimizer: PyroOptim
    # What pyro.optim.CosineAnnealingLR and pyro.optim.AdamW build (Pyro makes those names at run time, untyped).
    if lr_schedule == "cosine":
        optimizer = PyroLRScheduler(
            torch.optim.lr_scheduler.CosineAnnealingLR,
            {"optimizer": torch.optim.AdamW, "optim_args": optim_args, "T_max": total_steps},
        )
    else:
        optimizer = PyroOptim(torch.optim.AdamW, optim_args)
    return distributed.synchronize_gradients(optimizer)  # gradients summed over processes before each step


def _svi(ddpm: DDPM, loss: str, optimizer: Any, num_particles: int) -> SVI:
    """SVI on the DDPM's model and guide with the simple loss or the exact bound, both per sample of the batch."""
    if loss == "eps-mse":
        return SVI(ddpm.model, ddpm.guide, optimizer,
                   loss=lambda model, guide, x0, labels=None: ddpm.eps_mse(x0, labels))  # fmt: skip
    elbo = TraceMeanField_ELBO(num_particles=num_particles, vectorize_particles=False)

    def scaled_elbo(model: Any, guide: Any, x0: torch.Tensor, labels: Any = None) -> torch.Tensor:
        # Both sides scaled: TraceMeanField takes each KL's scale from the guide site.
        scale = 1.0 / x0.shape[0]
        return elbo.differentiable_loss(poutine.scale(model, scale), poutine.scale(guide, scale), x0,
                                        labels=labels)  # fmt: skip

    return SVI(ddpm.model, ddpm.guide, optimizer, loss=scaled_elbo)


def _batches(
    ddpm: DDPM, x: torch.Tensor, y: torch.Tensor | None, batch: int, label_dropout: float
) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """One epoch's batches (shuffled unless full batch), each row's label dropped to the null label at the rate."""
    n = x.shape[0]
    order = torch.randperm(n, device=x.device) if batch < n else None
    for start in range(0, n, batch):
        x_batch = x if order is None else x[order[start : start + batch]]
        y_batch = None
        if y is not None:  # label dropout drawn for the whole global batch, so every rank drops the same rows
            y_batch = y if order is None else y[order[start : start + batch]]
            dropped = torch.rand(y_batch.shape, device=y_batch.device) < float(label_dropout)
            y_batch = torch.where(dropped, torch.full_like(y_batch, ddpm.null_label), y_batch)
        yield x_batch, y_batch


def _svi_step(svi: SVI, x_batch: torch.Tensor, y_batch: torch.Tensor | None) -> float:
    """One optimizer step on this process's rows of the batch; the loss of the whole batch."""
    with distributed.global_batch(x_batch.shape[0], "mean") as share:
        if y_batch is None:
            return share.total(svi.step(x_batch[share.rows]))
        return share.total(svi.step(x_batch[share.rows], labels=y_batch[share.rows]))


class _EMA:
    """The exponential moving average of the weights, with the warm-up ``min(decay, (1 + k) / (10 + k))``."""

    def __init__(self, params: Sequence[torch.Tensor], decay: float) -> None:
        self.params, self.decay = params, float(decay)
        self.averages = [p.detach().clone() for p in params]

    @torch.no_grad()
    def update(self, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))
        for average, p in zip(self.averages, self.params, strict=True):
            average.lerp_(p.detach(), 1 - decay)

    @torch.no_grad()
    def copy_to(self, params: Sequence[torch.Tensor]) -> None:
        for average, p in zip(self.averages, params, strict=True):
            p.copy_(average)


def _check_weights(ddpm: DDPM, step: int, loss: str, history: list[float], lr: float) -> None:
    bad = [name for name, p in ddpm.network.named_parameters() if not bool(torch.isfinite(p).all())]
    if bad:
        raise NumericalError(
            f"the training diverged: after {step} optimizer steps (last {loss} loss {history[-1]:.4g}) the weights "
            f"{bad[:3]} hold NaN or infinity; try a smaller learning rate than {lr:g}"
        )
