"""Input checks and batched forward passes shared by the evaluation metrics."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from pyroflows.errors import DataError
from pyroflows.validation import bad_rows

#: What a metric accepts as ``baseline``: ``"mean"`` (each image's per-channel mean), ``"zero"``, a number, or a
#: tensor broadcastable to ``[N, C, H, W]``.
Baseline = str | float | torch.Tensor


def is_tokens(inputs: torch.Tensor) -> bool:
    """Integer inputs ``[N, L]`` are token ids."""
    return not inputs.is_floating_point() and not inputs.is_complex() and inputs.dtype != torch.bool


def positions_of(inputs: torch.Tensor) -> tuple[int, ...]:
    """The positions a map covers: ``(H, W)`` for images, ``(L,)`` for ``[N, C, L]`` sequences and token ids."""
    return tuple(inputs.shape[1:]) if is_tokens(inputs) else tuple(inputs.shape[2:])


def check_inputs_and_maps(inputs: torch.Tensor, attributions: torch.Tensor) -> torch.Tensor:
    """Check the inputs and the maps of an attribution.

    The inputs are images ``[N, C, H, W]``, sequences ``[N, C, L]`` or token ids ``[N, L]``; the maps
    ``[N, *positions]``, or with a channel axis ``[N, 1|C, *positions]``, which is summed.

    Returns the attributions as a float tensor ``[N, *positions]`` on the inputs' device.
    """
    if not isinstance(inputs, torch.Tensor) or not (
        (inputs.dim() in (3, 4) and inputs.is_floating_point()) or (inputs.dim() == 2 and is_tokens(inputs))
    ):
        shape = tuple(inputs.shape) if isinstance(inputs, torch.Tensor) else type(inputs).__name__
        raise DataError(
            f"inputs must be a tensor [N, C, H, W] (images), [N, C, L] (sequences) or integer token ids [N, L], "
            f"got {shape}"
        )
    if not isinstance(attributions, torch.Tensor):
        attributions = torch.as_tensor(attributions)
    positions = positions_of(inputs)
    n = inputs.shape[0]
    if attributions.dim() == len(positions) + 2:
        attributions = attributions.sum(dim=1)
    if tuple(attributions.shape) != (n, *positions):
        expected = ", ".join(map(str, (n, *positions)))
        label = "[N, H, W]" if len(positions) == 2 else "[N, L]" if len(positions) == 1 else "[N, *positions]"
        raise DataError(
            f"attributions must be {label} = [{expected}] to match inputs {tuple(inputs.shape)}, "
            f"got {tuple(attributions.shape)}"
        )
    bad = bad_rows(attributions)
    if bad:
        raise DataError(f"attributions hold NaN or inf values in rows {bad[:10]}")
    dtype = inputs.dtype if inputs.is_floating_point() else torch.get_default_dtype()
    return attributions.to(device=inputs.device, dtype=dtype)


def check_output(output: str) -> None:
    """Check ``output`` names what a metric records of the target: ``"probability"`` or ``"logit"``."""
    if output not in ("probability", "logit"):
        raise DataError(f"output must be 'probability' or 'logit', got {output!r}")


def target_values(logits: torch.Tensor, target: torch.Tensor, output: str) -> torch.Tensor:
    """``[N]`` softmax probability (``output="probability"``) or logit of each row's ``target`` class."""
    values = logits.softmax(-1) if output == "probability" else logits
    return values.gather(-1, target[:, None]).squeeze(-1)


def check_tile_size(tile_size: int, *sizes: int, name: str = "tile_size") -> int:
    """Check that tiles of side ``tile_size`` partition every axis of the given ``sizes`` (image or sequence)."""
    if isinstance(tile_size, bool) or not isinstance(tile_size, int) or tile_size < 1:
        raise DataError(f"{name} must be a positive integer, got {tile_size!r}")
    if any(size % tile_size for size in sizes):
        shape = "x".join(map(str, sizes))
        what = "image size" if len(sizes) == 2 else "sequence length" if len(sizes) == 1 else "size"
        raise DataError(
            f"{name}={tile_size} does not divide the {what} {shape}: choose a divisor of "
            f"{'both' if len(sizes) == 2 else 'it'} (e.g. {_common_divisors(*sizes)})"
        )
    return tile_size


def _common_divisors(*sizes: int) -> list[int]:
    return [d for d in range(1, min(sizes) + 1) if all(size % d == 0 for size in sizes)]


def baseline_images(inputs: torch.Tensor, baseline: Baseline) -> torch.Tensor:
    """The replacement values, broadcast to ``inputs``' shape.

    ``"mean"`` is each input's per-channel mean over its positions; token ids take an integer token id (e.g. the
    padding id) or a tensor of ids.
    """
    if is_tokens(inputs):
        if isinstance(baseline, str) or (isinstance(baseline, float) and not float(baseline).is_integer()):
            raise DataError(f"token inputs need an integer baseline token id (e.g. the padding id 0), got {baseline!r}")
        return torch.as_tensor(baseline, device=inputs.device).to(inputs.dtype).expand_as(inputs)
    if isinstance(baseline, str):
        if baseline == "mean":
            return inputs.mean(dim=tuple(range(2, inputs.ndim)), keepdim=True).expand_as(inputs)
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


def tile_masks_to_pixels(masks: torch.Tensor, tile_size: int, spatial: int = 2) -> torch.Tensor:
    """Expand tile masks ``[..., *tiles]`` to position masks ``[..., *positions]`` over the last ``spatial`` axes."""
    for axis in range(-spatial, 0):
        masks = masks.repeat_interleave(tile_size, dim=axis)
    return masks


def tile_means(maps: torch.Tensor, tile_size: int) -> torch.Tensor:
    """Mean of ``maps [N, *positions]`` (1 or 2 position axes) over each tile: ``[N, *tiles]``."""
    pool = torch.nn.functional.avg_pool1d if maps.dim() == 2 else torch.nn.functional.avg_pool2d
    return pool(maps.unsqueeze(1), tile_size).squeeze(1)


def replace(inputs: torch.Tensor, masks: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """``inputs`` with the positions where ``masks [n, *positions]`` is true taken from ``base``."""
    if is_tokens(inputs):
        return torch.where(masks.bool(), base, inputs)
    masks = masks.unsqueeze(1).to(inputs.dtype)
    return inputs + masks * (base - inputs)


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
