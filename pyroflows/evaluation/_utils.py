"""Input checks and batched forward passes shared by the evaluation metrics."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from pyroflows.errors import DataError

#: What a metric accepts as ``baseline``: ``"mean"`` (each image's per-channel mean), ``"zero"``, a number, or a
#: tensor broadcastable to ``[N, C, H, W]``.
Baseline = str | float | torch.Tensor


def check_inputs_and_maps(inputs: torch.Tensor, attributions: torch.Tensor) -> torch.Tensor:
    """Check ``inputs`` is ``[N, C, H, W]`` and ``attributions`` is ``[N, H, W]`` (or ``[N, 1|C, H, W]``).

    Returns the attributions as a float tensor ``[N, H, W]`` on the inputs' device (a channel axis is summed).
    """
    if not isinstance(inputs, torch.Tensor) or inputs.dim() != 4:
        shape = tuple(inputs.shape) if isinstance(inputs, torch.Tensor) else type(inputs).__name__
        raise DataError(f"inputs must be a tensor [N, C, H, W], got {shape}")
    if not isinstance(attributions, torch.Tensor):
        attributions = torch.as_tensor(attributions)
    if attributions.dim() == 4:
        attributions = attributions.sum(dim=1)
    n, _, h, w = inputs.shape
    if attributions.shape != (n, h, w):
        raise DataError(
            f"attributions must be [N, H, W] = [{n}, {h}, {w}] to match inputs {tuple(inputs.shape)}, "
            f"got {tuple(attributions.shape)}"
        )
    if not torch.isfinite(attributions).all():
        bad = (~torch.isfinite(attributions.reshape(n, -1))).any(dim=1).nonzero().flatten().tolist()
        raise DataError(f"attributions hold NaN or inf values in rows {bad[:10]}")
    return attributions.to(device=inputs.device, dtype=inputs.dtype)


def check_target(target: int | torch.Tensor | None, n: int, device: torch.device) -> torch.Tensor:
    """Turn ``target`` (an int or ``[N]``) into a long tensor ``[N]``."""
    if target is None:
        raise DataError("target is required: the class index (an int, or one per example as a tensor [N])")
    target = torch.as_tensor(target, device=device).long()
    if target.dim() == 0:
        target = target.expand(n)
    if target.shape != (n,):
        raise DataError(f"target must be an int or a tensor [N] = [{n}], got shape {tuple(target.shape)}")
    return target


def check_target_range(target: torch.Tensor, logits: torch.Tensor) -> None:
    """Check every target indexes one of the model's ``logits.shape[-1]`` outputs."""
    classes = logits.shape[-1]
    bad = ((target < 0) | (target >= classes)).nonzero().flatten().tolist()
    if bad:
        values = target[bad[:10]].tolist()
        raise DataError(f"target holds classes outside 0..{classes - 1} in rows {bad[:10]}: {values}")


def check_output(output: str) -> None:
    """Check ``output`` names what a metric records of the target: ``"probability"`` or ``"logit"``."""
    if output not in ("probability", "logit"):
        raise ValueError(f"output must be 'probability' or 'logit', got {output!r}")


def target_values(logits: torch.Tensor, target: torch.Tensor, output: str) -> torch.Tensor:
    """``[N]`` softmax probability (``output="probability"``) or logit of each row's ``target`` class."""
    values = logits.softmax(-1) if output == "probability" else logits
    return values.gather(-1, target[:, None]).squeeze(-1)


def check_tile_size(tile_size: int, height: int, width: int, name: str = "tile_size") -> int:
    """Check that square tiles of side ``tile_size`` partition an ``height x width`` image."""
    if isinstance(tile_size, bool) or not isinstance(tile_size, int) or tile_size < 1:
        raise DataError(f"{name} must be a positive integer, got {tile_size!r}")
    if height % tile_size or width % tile_size:
        raise DataError(
            f"{name}={tile_size} does not divide the image size {height}x{width}: "
            f"choose a divisor of both (e.g. {_common_divisors(height, width)})"
        )
    return tile_size


def _common_divisors(a: int, b: int) -> list[int]:
    return [d for d in range(1, min(a, b) + 1) if a % d == 0 and b % d == 0]


def baseline_images(inputs: torch.Tensor, baseline: Baseline) -> torch.Tensor:
    """The replacement values, broadcast to ``inputs``' shape ``[N, C, H, W]``."""
    if isinstance(baseline, str):
        if baseline == "mean":
            return inputs.mean(dim=(2, 3), keepdim=True).expand_as(inputs)
        if baseline == "zero":
            return torch.zeros_like(inputs)
        raise DataError(f"baseline must be 'mean', 'zero', a number or a tensor, got {baseline!r}")
    value = torch.as_tensor(baseline, dtype=inputs.dtype, device=inputs.device)
    try:
        return value.expand_as(inputs)
    except RuntimeError as exc:
        raise DataError(
            f"baseline of shape {tuple(value.shape)} does not broadcast to inputs {tuple(inputs.shape)}"
        ) from exc


def tile_masks_to_pixels(masks: torch.Tensor, tile_size: int) -> torch.Tensor:
    """Expand tile masks ``[..., H/t, W/t]`` to pixel masks ``[..., H, W]``."""
    return masks.repeat_interleave(tile_size, dim=-2).repeat_interleave(tile_size, dim=-1)


def tile_means(maps: torch.Tensor, tile_size: int) -> torch.Tensor:
    """Mean of ``maps [N, H, W]`` over each ``tile_size``-square tile: ``[N, H/t, W/t]``."""
    return torch.nn.functional.avg_pool2d(maps.unsqueeze(1), tile_size).squeeze(1)


def chunks(total: int, size: int) -> Iterator[slice]:
    """Consecutive slices of at most ``size`` covering ``range(total)``."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise DataError(f"batch_size must be a positive integer, got {size!r}")
    for start in range(0, total, size):
        yield slice(start, min(start + size, total))


@torch.no_grad()
def batched_forward(model: nn.Module | Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, batch_size: int):
    """``model(x)`` computed ``batch_size`` rows at a time without gradients."""
    if batch_size < 1:
        raise DataError(f"batch_size must be a positive integer, got {batch_size}")
    return torch.cat([model(x[s]) for s in chunks(x.shape[0], batch_size)])


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch's generators for the block, then give the caller back its own CPU and CUDA generator states.

    ``torch.manual_seed`` seeds every CUDA device too, so every CUDA device's state is forked with the CPU's.

    Example:
        >>> before = torch.random.get_rng_state()
        >>> with seeded(0):
        ...     a = torch.rand(2)
        >>> with seeded(0):
        ...     b = torch.rand(2)
        >>> bool((a == b).all()), bool((torch.random.get_rng_state() == before).all())
        (True, True)
    """
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
