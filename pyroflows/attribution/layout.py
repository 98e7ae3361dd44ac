r"""Feature layouts and positions: where a layer keeps its channels, and which input positions a feature cell sees.

A bottleneck works on feature maps in one canonical layout, ``[N, C, *positions]``. Layers that keep their channels
elsewhere (a batch-first transformer's ``[N, L, C]``) are read through ``channel_dim``: the features are moved to the
canonical layout after the layer and moved back before the rest of the network runs, so the bottleneck, its
statistics and its noise are the same whichever layout the model uses.

A sequence layer's cells are not the input's positions: after an unpadded 9-wide convolution and a max-pool, cell
:math:`j` sees inputs :math:`2j \dots 2j + 9`, and a plain resize from the cells to the input shifts the map by
several positions. :func:`receptive_field_weights` measures which inputs each cell sees, and how strongly, from the
network's own gradients (the *effective* receptive field, averaged over samples):

.. math::
    W_{ji} \propto \mathbb E_x \Big| \sum_{c'} \frac{\partial f_{c' j}(x)}{\partial x_{\cdot i}} \Big|_1,
    \qquad \sum_i W_{ji} = 1,

and :func:`positions_to_input` spreads each cell's bits over its receptive field, ``map_in = map_cells @ W``, so the
bits are kept and a feature at input position :math:`p` peaks at :math:`p` (the receptive field of a symmetric
stack is centred on its cell). A layer with as many positions as the input (token embeddings, a transformer's
layers, ``"same"`` convolutions) is mapped one to one.

Example:
    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Conv1d(4, 8, 9), nn.ReLU(), nn.MaxPool1d(2))
    >>> weights = receptive_field_weights(model, model[2], torch.randn(8, 4, 40))
    >>> weights.shape, [int(w.nonzero().min()) for w in weights[:2]], [int(w.nonzero().max()) for w in weights[:2]]
    (torch.Size([16, 40]), [0, 2], [9, 11])
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pyroflows.errors import DataError

__all__ = [
    "check_channel_dim",
    "to_channels_first",
    "from_channels_first",
    "check_layout",
    "is_token_input",
    "receptive_field_weights",
    "positions_to_input",
    "padding_to_positions",
]


def check_channel_dim(channel_dim: int, ndim: int, layer: str) -> int:
    """The non-negative axis of the channels in a ``ndim``-dimensional feature map ``[N, ...]``.

    Raises:
        DataError: ``channel_dim`` is the batch axis, outside the feature map, or the map has no position axis.

    Example:
        >>> check_channel_dim(-1, 3, "enc")
        2
    """
    if isinstance(channel_dim, bool) or not isinstance(channel_dim, int):
        raise DataError(f"channel_dim must be an integer axis, got {channel_dim!r}")
    if ndim < 3:
        raise DataError(
            f"layer {layer!r} gives features of {ndim} dimensions ([N, C]); a map needs positions, e.g. [N, C, L] "
            "or [N, L, C] (use capacity() for per-unit information)"
        )
    axis = channel_dim + ndim if channel_dim < 0 else channel_dim
    if not 0 < axis < ndim:
        raise DataError(
            f"channel_dim={channel_dim} does not name a feature axis of layer {layer!r}'s {ndim}-d output "
            f"[N, ...]: use 1..{ndim - 1} or -1..-{ndim - 1} (not the batch axis 0)"
        )
    return axis


def to_channels_first(features: torch.Tensor, axis: int) -> torch.Tensor:
    """``features`` with the channel ``axis`` moved to position 1 (``[N, C, *positions]``)."""
    return features if axis == 1 else features.movedim(axis, 1)


def from_channels_first(features: torch.Tensor, axis: int) -> torch.Tensor:
    """The inverse of :func:`to_channels_first`."""
    return features if axis == 1 else features.movedim(1, axis)


def is_token_input(inputs: torch.Tensor) -> bool:
    """Integer inputs ``[N, L]`` are token ids (one map value per token)."""
    return not inputs.is_floating_point() and not inputs.is_complex() and inputs.dtype != torch.bool


def input_positions(inputs: torch.Tensor) -> tuple[int, ...]:
    """The positions of the inputs: ``[L]`` for token ids ``[N, L]``, the axes after the channels otherwise."""
    if is_token_input(inputs):
        return tuple(inputs.shape[1:])
    return tuple(inputs.shape[2:])


def check_layout(raw_shape: torch.Size, axis: int, channel_dim: int, inputs: torch.Tensor, layer: str) -> None:
    """Refuse a ``channel_dim`` that reads a sequence layer's channels as its positions.

    A layer whose output has an axis as long as the input sequence, while the axis taken for the positions is not,
    almost surely keeps its positions on that axis: the map would run over the channels.

    Raises:
        DataError: the suspected mix-up, naming the ``channel_dim`` to pass.
    """
    positions = input_positions(inputs)
    if len(positions) != 1 or len(raw_shape) != 3:
        return
    length = positions[0]
    position_axis = 3 - axis  # the other feature axis of [N, a, b]
    if raw_shape[position_axis] != length and raw_shape[axis] == length:
        other = -1 if axis == 1 else 1
        raise DataError(
            f"layer {layer!r} gives features {list(raw_shape)}: with channel_dim={channel_dim} its positions would "
            f"be axis {position_axis} ({raw_shape[position_axis]}), but the input has {length} positions, the size "
            f"of axis {axis}; pass channel_dim={other} (e.g. -1 for batch-first transformer features [N, L, C])"
        )


class _Stop(Exception):
    pass


def _layer_output_with_grad(
    model: nn.Module, layer: nn.Module, inputs: torch.Tensor, args: tuple[Any, ...]
) -> torch.Tensor:
    captured: list[torch.Tensor] = []

    def hook(_m: nn.Module, _i: Any, output: torch.Tensor) -> None:
        captured.append(output)
        raise _Stop

    handle = layer.register_forward_hook(hook)
    try:
        model(inputs, *args)
    except _Stop:
        pass
    finally:
        handle.remove()
    if not captured:
        raise DataError("the bottleneck's layer did not run in the model's forward pass")
    return captured[0]


def receptive_field_weights(
    model: nn.Module,
    layer: nn.Module,
    inputs: torch.Tensor,
    *,
    additional_forward_args: tuple[Any, ...] = (),
    channel_dim: int = 1,
) -> torch.Tensor:
    """Row-normalised effective receptive field ``[L_cells, L_in]`` of a sequence layer, from input gradients.

    Args:
        model: The network (called as ``model(inputs, *additional_forward_args)``; run in its current mode, with
            gradients to the inputs only).
        layer: The layer; its output is ``[N, C, L_cells]`` (or with the channels at ``channel_dim``).
        inputs: Float inputs ``[N, C_in, L_in]`` (a few representative samples: zero gradients of inactive units
            average out over them).
        additional_forward_args: Further arguments of the model's forward.
        channel_dim: Axis of the layer's channels.

    Returns:
        ``W`` with ``W[j, i]`` the share of cell ``j``'s bits given to input position ``i``; each row sums to 1. A
        cell no input reaches in these samples is mapped to its proportional position.

    Raises:
        DataError: integer inputs (token ids have no gradient), or inputs that are not ``[N, C, L]``.
    """
    if is_token_input(inputs) or inputs.ndim != 3:
        raise DataError(
            f"the receptive field is measured on float inputs [N, C, L], got {inputs.dtype} {list(inputs.shape)}; "
            "a layer of token inputs needs as many positions as the tokens"
        )
    x = inputs.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        raw = _layer_output_with_grad(model, layer, x, tuple(additional_forward_args))
        axis = check_channel_dim(channel_dim, raw.ndim, "layer")
        features = to_channels_first(raw, axis)
        if features.ndim != 3:
            raise DataError(f"the receptive field needs a sequence layer [N, C, L], got {list(features.shape)}")
        cells = features.shape[2]
        summed = features.sum(1)  # [N, L_cells]
        rows = []
        for j in range(cells):
            (grad,) = torch.autograd.grad(summed[:, j].sum(), x, retain_graph=j + 1 < cells, allow_unused=True)
            rows.append(torch.zeros(x.shape[2], dtype=x.dtype) if grad is None else grad.abs().sum((0, 1)))
    weights = torch.stack(rows).detach()
    total = weights.sum(1, keepdim=True)
    proportional = F.interpolate(torch.eye(cells, dtype=weights.dtype)[None], size=x.shape[2], mode="linear",
                                 align_corners=False)[0]  # fmt: skip
    proportional = proportional / proportional.sum(1, keepdim=True)
    return torch.where(total > 0, weights / total.clamp_min(torch.finfo(weights.dtype).tiny), proportional)


def positions_to_input(maps: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Spread per-cell maps ``[N, L_cells]`` over the input positions: ``[N, L_in]`` (the total is kept).

    Example:
        >>> positions_to_input(torch.tensor([[1.0, 2.0]]), torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.5, 0.5]]))
        tensor([[0.5000, 1.5000, 1.0000]])
    """
    return maps @ weights.to(maps)


def padding_to_positions(padding: torch.Tensor | None, n: int, length: int) -> torch.Tensor | None:
    """Check a padding mask ``[N, L]`` (True at padded positions, PyTorch's ``key_padding_mask`` convention).

    Raises:
        DataError: the mask is not boolean ``[N, L]`` or pads every position of a sequence.
    """
    if padding is None:
        return None
    padding = torch.as_tensor(padding)
    if padding.dtype != torch.bool or tuple(padding.shape) != (n, length):
        raise DataError(
            f"the padding mask must be a boolean tensor [N, L] = [{n}, {length}] (True at padded positions), got "
            f"{padding.dtype} {list(padding.shape)}"
        )
    full = padding.all(1)
    if full.any():
        raise DataError(f"the padding mask pads every position of sequences {full.nonzero().flatten().tolist()[:5]}")
    return padding
