"""The information bottlenecks as registry members.

=====================  ==========================================================================================
name                   method
=====================  ==========================================================================================
``per-sample``         :class:`pyroflows.attribution.PerSampleBottleneck` at ``layer``, beta 10, statistics
                       re-estimated on ``data`` for every model (so on a randomised model too)
``readout``            the bundled readout bottleneck (bundled model only) or ``context.readout``, applied to the
                       given model's features
``input-bottleneck``   :class:`pyroflows.attribution.InputBottleneck` (InputIBA) with its layer prior at ``layer``
=====================  ==========================================================================================

Their ``context.options`` are the bottleneck classes' keyword arguments (``beta``, ``steps``, ...), read from the
class signatures when a method is built.
"""

from __future__ import annotations

import inspect
import warnings
from typing import Any

import torch
from captum.attr import Attribution
from torch import nn

from pyroflows.errors import DataError
from pyroflows.evaluation._utils import seeded
from pyroflows.evaluation.methods import ConfiguredAttribution, MethodContext, MethodNotSupported, register_method

__all__ = ["readout_for_model"]

#: Bottleneck arguments that come from the context's fields, not from ``context.options``.
_CONTEXT_FIELDS = ("self", "model", "layer")
#: Keyword arguments of ``InputBottleneck`` passed on to its inner bottlenecks.
_INPUT_BOTTLENECK_EXTRA = ("lr", "batch_size", "min_std", "graph_split")


def _signature_options(cls: type, extra: tuple[str, ...] = ()) -> tuple[str, ...]:
    names = set(inspect.signature(cls).parameters) - set(_CONTEXT_FIELDS)
    return tuple(sorted(names | set(extra)))


def _per_sample_options() -> tuple[str, ...]:
    from pyroflows.attribution import PerSampleBottleneck

    return _signature_options(PerSampleBottleneck)


def _input_bottleneck_options() -> tuple[str, ...]:
    from pyroflows.attribution import InputBottleneck

    return _signature_options(InputBottleneck, _INPUT_BOTTLENECK_EXTRA)


def _bottleneck_options(accepted: tuple[str, ...], context: MethodContext, **defaults: Any) -> dict[str, Any]:
    """The context's options this bottleneck takes (the others are meant for other methods of the evaluation)."""
    options = {**defaults, **{k: v for k, v in context.options.items() if k in accepted}}
    if context.channel_dim != 1:
        options["channel_dim"] = context.channel_dim
    if context.padding_mask is not None:
        options["padding_mask"] = context.padding_mask
    return options


def _map_only(result: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    return result


def _per_sample(model: nn.Module, context: MethodContext) -> Attribution:
    from pyroflows.attribution import PerSampleBottleneck

    if context.layer is None or context.data is None:
        raise DataError("the per-sample bottleneck needs context.layer and context.data (inputs to estimate on)")
    with seeded(context.seed), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*cannot be split at.*")
        options = _bottleneck_options(_per_sample_options(), context, beta=10.0)
        bottleneck = PerSampleBottleneck(model, context.layer, **options)
        bottleneck.estimate(context.data)
    return ConfiguredAttribution(bottleneck, seed=context.seed, reduce=_map_only)


def _input_bottleneck(model: nn.Module, context: MethodContext) -> Attribution:
    from pyroflows.attribution import InputBottleneck

    if context.layer is None or context.data is None:
        raise DataError("the input bottleneck needs context.layer and context.data (inputs to estimate on)")
    options = _bottleneck_options(_input_bottleneck_options(), context)
    with seeded(context.seed), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*cannot be split at.*")
        bottleneck = InputBottleneck(model, context.layer, **options).estimate(context.data)
    return ConfiguredAttribution(bottleneck, seed=context.seed, reduce=_map_only)


def _readout(model: nn.Module, context: MethodContext) -> Attribution:
    if context.readout is not None:
        return ConfiguredAttribution(readout_for_model(context.readout, model), reduce=_map_only)
    from pyroflows.zoo import load_bundled_readout  # lazily: the zoo imports evaluation

    try:
        readout = load_bundled_readout(model=model)
    except (TypeError, ValueError, KeyError, RuntimeError) as exc:
        raise MethodNotSupported(f"the bundled readout bottleneck fits only the bundled model: {exc}") from exc
    return ConfiguredAttribution(readout, reduce=_map_only)


def readout_for_model(readout: Any, model: nn.Module) -> Any:
    """A trained readout bottleneck applied to ``model``'s features (e.g. a randomised copy of its model).

    The same network and statistics, the layers looked up by name in ``model``.
    """
    if readout.model is model:
        return readout
    from pyroflows.attribution import ReadoutBottleneck

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*cannot be split at.*")
        clone = ReadoutBottleneck(
            model, readout.layer_name, readout.readout_layers, beta=readout.beta, sigma=readout.sigma,
            min_std=readout.min_std, hidden=readout.hidden, initial_alpha=readout.initial_alpha,
            active_threshold=readout.active_threshold, channel_dim=readout.channel_dim,
            padding_mask=readout.padding_mask,
        )  # fmt: skip
    clone.set_statistics(readout.mean, readout.std, readout.active, readout.n_samples)
    clone.readout_mean, clone.readout_std = readout.readout_mean, readout.readout_std
    clone.network = readout.network
    clone._receptive_fields = dict(readout._receptive_fields)
    return clone


def _register() -> None:
    register_method(
        "per-sample", _per_sample, "per-sample information bottleneck (beta 10)", options=_per_sample_options,
        default=True,
    )  # fmt: skip
    register_method("readout", _readout, "readout information bottleneck (bundled weights, or context.readout)")
    register_method(
        "input-bottleneck", _input_bottleneck, "input bottleneck (InputIBA) with a layer prior",
        options=_input_bottleneck_options,
    )  # fmt: skip


_register()
