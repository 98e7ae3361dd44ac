r"""What every layer bottleneck shares: the layer's features in one layout, their statistics, the KL map.

:class:`BottleneckBase` is the one base class of :class:`~pyroflows.attribution.PerSampleBottleneck` and
:class:`~pyroflows.attribution.ReadoutBottleneck` (and, through the former, of both stages of
:class:`~pyroflows.attribution.InputBottleneck`): one :meth:`~BottleneckBase.estimate` (the feature statistics over
data; a subclass that needs more statistics adds them through :meth:`~BottleneckBase._estimation_extras`), the public
:meth:`~BottleneckBase.set_statistics`, the Pyro model site, the posterior :math:`P(Z \mid R)` and Captum's
``attribute``. A subclass provides ``_capacity_call`` (how :math:`\lambda` is found).

Example:
    >>> import torch
    >>> from torch import nn
    >>> from pyroflows.attribution import PerSampleBottleneck
    >>> model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 3))
    >>> bottleneck = PerSampleBottleneck(model, "1").estimate(torch.randn(64, 1, 8, 8))
    >>> isinstance(bottleneck, BottleneckBase), bottleneck.mean.shape, bottleneck.n_samples
    (True, torch.Size([4, 8, 8]), 64)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeAlias, TypeVar

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from captum.attr import LayerAttribution
from captum.log import log_usage
from pyro import poutine
from torch import nn
from tqdm.auto import tqdm

from pyroflows import distributed
from pyroflows.attribution.capacity import NATS_PER_BIT, per_element_capacity
from pyroflows.attribution.distributions import MaskedFeatureNormal
from pyroflows.attribution.layers import HeadOutput, LayerSplit, frozen
from pyroflows.attribution.layout import (
    check_channel_dim,
    check_layout,
    from_channels_first,
    input_positions,
    is_token_input,
    padding_to_positions,
    positions_to_input,
    receptive_field_weights,
    to_channels_first,
)
from pyroflows.attribution.statistics import FeatureStatistics
from pyroflows.errors import DataError
from pyroflows.validation import as_finite_2d, as_targets, check_float

__all__ = ["BottleneckBase", "BottleneckCall", "forward_args", "model_device", "batch_rows"]

B = TypeVar("B", bound="BottleneckBase")

#: A bottleneck's ``padding_mask``: an index into ``additional_forward_args``, or a function ``(inputs, args)``
#: returning the ``[N, L]`` mask (True at padding).
PaddingMask: TypeAlias = int | Callable[[torch.Tensor, tuple[Any, ...]], torch.Tensor]


def _batches(data: Any, batch_size: int = 64, args: tuple[Any, ...] = ()) -> Iterable[tuple[torch.Tensor, tuple]]:
    """``(inputs, further forward args)`` from the data :meth:`estimate` is given.

    The data is a tensor ``[N, ...]`` (``args`` split alongside), or an iterable of tensors or ``(x, y, ...)`` batches
    (no further arguments).
    """
    if isinstance(data, torch.Tensor):
        for start in range(0, data.shape[0], batch_size):
            rows = slice(start, start + batch_size)
            yield data[rows], tuple(batch_rows(a, rows, data.shape[0]) for a in args)
        return
    if args:
        raise DataError("additional_forward_args needs the estimation data as one tensor [N, ...], not a loader")
    for batch in data:
        yield (batch[0] if isinstance(batch, (tuple, list)) else batch), ()


def batch_rows(value: Any, rows: slice, n: int) -> Any:
    """``value[rows]`` for a batch-first tensor of ``n`` rows (a forward argument split with its batch), else ``value``.

    Example:
        >>> batch_rows(torch.arange(6).view(3, 2), slice(0, 2), 3).shape, batch_rows(0.5, slice(0, 2), 3)
        (torch.Size([2, 2]), 0.5)
    """
    return value[rows] if isinstance(value, torch.Tensor) and value.ndim and value.shape[0] == n else value


def _shard_estimation(data: Any, args: tuple[Any, ...], max_samples: int | None) -> tuple[Any, tuple[Any, ...]]:
    """This rank's part of the estimation data (:func:`~pyroflows.distributed.shard_batches`).

    With a tensor's shard come the rows of batch-first ``additional_forward_args`` that go with it.
    """
    if not distributed.active():
        return data, args
    if isinstance(data, torch.Tensor):
        n = data.shape[0]
        r = distributed.shard_range(n if max_samples is None else min(n, max_samples))
        args = tuple(batch_rows(a, slice(r.start, r.stop), n) for a in args)
    return distributed.shard_batches(data, max_samples), args


def model_device(model: nn.Module) -> torch.device | None:
    """The device of ``model``'s first parameter, or ``None`` for a model without parameters.

    Example:
        >>> model_device(nn.Linear(2, 2)), model_device(nn.ReLU())
        (device(type='cpu'), None)
    """
    for p in model.parameters():
        return p.device
    return None


def forward_args(additional_forward_args: Any) -> tuple[Any, ...]:
    """Captum's ``additional_forward_args`` (``None``, one value, or a tuple / list) as a tuple.

    Example:
        >>> forward_args(None), forward_args(3), forward_args([1, 2])
        ((), (3,), (1, 2))
    """
    if additional_forward_args is None:
        return ()
    return (
        tuple(additional_forward_args)
        if isinstance(additional_forward_args, (tuple, list))
        else (additional_forward_args,)
    )


@dataclass
class BottleneckCall:
    """One batch as a bottleneck sees it.

    Attributes:
        inputs: The model's inputs ``[N, ...]``.
        args: Further forward arguments.
        head: The split's head output (features in the layer's own layout).
        features: The layer's output in the canonical layout ``[N, C, *positions]``.
        padding: ``[N, L]`` True at padded positions, or ``None``.
    """

    inputs: torch.Tensor
    args: tuple[Any, ...]
    head: HeadOutput
    features: torch.Tensor
    padding: torch.Tensor | None = None


class BottleneckBase(LayerAttribution):
    r"""What the per-sample and readout bottlenecks share: the layer split, the statistics and the KL map.

    Both are Captum layer attributions (:class:`captum.attr.LayerAttribution`): ``attribute(inputs, target=None,
    additional_forward_args=None, ...)`` with a tensor or a one-tensor tuple as inputs (a tuple in, a tuple out),
    ``has_convergence_delta()`` false, so they run inside :class:`captum.attr.NoiseTunnel` and under
    :func:`captum.metrics.infidelity` / :func:`captum.metrics.sensitivity_max` (with ``output="input"``).

    Args:
        model: A classifier returning logits ``[N, classes]``; not modified (hooks and flags are restored).
        layer: Dotted name of the bottleneck's layer (``"features.4"``) or the module itself.
        beta: Weight of the information loss (the paper's :math:`\beta k`; 10 by default, as in the paper).
        sigma: Width of the Gaussian blur on :math:`\lambda`, in feature-map cells (0: no blur).
        min_std: Lower bound on :math:`\sigma_R`.
        active_threshold: Units non-zero in at most this fraction of the estimation samples are *inactive*:
            their capacity is zero and they carry no information loss (as in the official implementation).
        graph_split: Split the model with ``torch.fx`` so only the tail runs at each step (see
            :class:`~pyroflows.attribution.hooks.LayerSplit`).
        optimize_tail: Run the tail as an optimised module (see :func:`~pyroflows.attribution.hooks.optimize_tail`).
        channel_dim: Axis of the layer's output holding the channels (1, as in ``[N, C, L]`` or ``[N, C, H, W]``;
            -1 for batch-first transformer features ``[N, L, C]``). A wrong one is refused with a
            :class:`~pyroflows.errors.DataError` where the input's length shows it.
        padding_mask: Index into ``additional_forward_args`` of a boolean ``[N, L]`` mask, True at padded positions
            (PyTorch's ``src_key_padding_mask``), or a function ``(inputs, args) -> [N, L]`` (e.g.
            ``lambda tokens, args: tokens == 0``): padded positions are left out of the statistics, carry no
            information loss and get zero in the maps.
    """

    def __init__(
        self,
        model: nn.Module,
        layer: str | nn.Module,
        *,
        beta: float = 10.0,
        sigma: float = 1.0,
        min_std: float = 0.01,
        active_threshold: float = 0.01,
        graph_split: bool = True,
        optimize_tail: bool = False,
        channel_dim: int = 1,
        padding_mask: PaddingMask | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        beta = check_float(beta, "beta", low=0)  # NaN or inf would give all-NaN maps
        if min_std <= 0:
            raise ValueError(f"min_std must be positive, got {min_std}")
        if sigma is not None and sigma < 0:
            raise ValueError(f"sigma must be non-negative, got {sigma}")
        if isinstance(channel_dim, bool) or not isinstance(channel_dim, int) or channel_dim == 0:
            raise DataError(f"channel_dim must be a non-zero integer axis (0 is the batch), got {channel_dim!r}")
        if (
            padding_mask is not None
            and not callable(padding_mask)
            and (isinstance(padding_mask, bool) or not isinstance(padding_mask, int))
        ):
            raise DataError(
                "padding_mask must be an index into additional_forward_args or a function (inputs, args) -> [N, L], "
                f"got {padding_mask!r}"
            )
        self.model = model
        self.split = LayerSplit(model, layer, graph_split=graph_split, optimize_tail=optimize_tail)
        LayerAttribution.__init__(self, model, self.split.layer)
        self.layer_name = self.split.layer_name
        self.beta = float(beta)
        self.sigma = float(sigma or 0.0)
        self.min_std = float(min_std)
        self.active_threshold = float(active_threshold)
        self.channel_dim = int(channel_dim)
        self.padding_mask = padding_mask
        self.mean: torch.Tensor | None = None
        self.std: torch.Tensor | None = None
        self.active: torch.Tensor | None = None
        self.n_samples = 0
        self._kl_factor = 1.0  # < 1 only while a readout warms up
        self._receptive_fields: dict[int, torch.Tensor] = {}

    # -- Captum -----------------------------------------------------------------------------------------------
    def has_convergence_delta(self) -> bool:
        """Bottlenecks have no completeness axiom, hence no convergence delta (Captum's ``NoiseTunnel`` asks)."""
        return False

    @property
    def multiplies_by_inputs(self) -> bool:
        """Captum's flag: the maps are not multiplied by the inputs."""
        return False

    # -- the layer, in the canonical layout -------------------------------------------------------------------
    def _run_head(self, inputs: torch.Tensor, args: tuple[Any, ...] = ()) -> BottleneckCall:
        """The head for a batch; features moved to ``[N, C, *positions]``, the padding mask checked."""
        mask = None
        if callable(self.padding_mask):
            mask = self.padding_mask(inputs, args)
        elif self.padding_mask is not None:
            if self.padding_mask >= len(args) or self.padding_mask < -len(args):
                raise DataError(
                    f"padding_mask={self.padding_mask} indexes additional_forward_args, which holds {len(args)} "
                    "values; pass the mask there"
                )
            mask = args[self.padding_mask]
        if mask is not None:  # checked before the model sees it
            mask = padding_to_positions(mask, inputs.shape[0], torch.as_tensor(mask).shape[-1])
        self.split.refresh()  # forward may read Python-level state that changed since the last call
        head = self.split.head(inputs, *args)
        raw = head.features
        if not isinstance(raw, torch.Tensor):
            raise DataError(f"layer {self.layer_name!r} returns a {type(raw).__name__}, not a tensor")
        axis = check_channel_dim(self.channel_dim, raw.ndim, self.layer_name)
        check_layout(raw.shape, axis, self.channel_dim, inputs, self.layer_name)
        features = to_channels_first(raw, axis)
        padding = None
        if mask is not None:
            if features.ndim != 3:
                raise DataError(f"a padding mask needs sequence features [N, C, L], got {list(features.shape)}")
            padding = padding_to_positions(mask, features.shape[0], features.shape[2])
        return BottleneckCall(inputs, tuple(args), head, features, padding)

    def _run_tail(self, z: torch.Tensor, call: BottleneckCall) -> torch.Tensor:
        """Logits for canonical feature maps ``z`` ``[c * N, C, *positions]``."""
        return self.split.tail(from_channels_first(z, self._axis(call)), call.head)

    def _axis(self, call: BottleneckCall) -> int:
        return check_channel_dim(self.channel_dim, call.head.features.ndim, self.layer_name)

    def _active_for(self, call: BottleneckCall, active: torch.Tensor) -> torch.Tensor:
        """The active units, per sample ``[N, C, L]`` where a padding mask removes padded positions."""
        if call.padding is None:
            return active
        return active.unsqueeze(0) & ~call.padding.to(active.device)[:, None, :]

    # -- statistics -------------------------------------------------------------------------------------------
    def estimate(
        self: B,
        data: Any,
        *,
        max_samples: int | None = None,
        progress: bool = False,
        additional_forward_args: Any = None,
    ) -> B:
        r"""Estimate :math:`\mu_R` and :math:`\sigma_R` of the layer's output over ``data``.

        Runs only the part of the network up to the layer, batch by batch, merging each batch's moments into
        running totals (vectorised; see :class:`~pyroflows.attribution.statistics.FeatureStatistics`).

        Args:
            data: A DataLoader (or any iterable) yielding ``(x, y)`` batches or input tensors, or a tensor
                ``[N, ...]``. The paper uses about 10,000 samples.
            max_samples: Stop after this many samples.
            progress: Show a progress bar.
            additional_forward_args: Further forward arguments for tensor ``data`` (batch-first tensors are split
                with it), e.g. an attention mask; padded positions (``padding_mask``) are left out.

        Returns:
            ``self``, so ``PerSampleBottleneck(model, layer).estimate(loader)`` reads naturally.

        Raises:
            DataError: fewer than 2 samples, or the layer's output holds NaN.
        """
        stats, extras = FeatureStatistics(), self._extra_statistics()
        sample: tuple[torch.Tensor, tuple[Any, ...]] | None = None
        bar = tqdm(total=max_samples, disable=not progress, desc=f"estimating {self.layer_name}", unit="sample")
        with frozen(self.model):
            with distributed.fail_together():  # a failure on one rank ends estimate on every rank
                for x, batch_args, call in self._estimation_heads(data, additional_forward_args, max_samples, stats):
                    mask = None if call.padding is None else ~call.padding[:, None, :]
                    stats.update(call.features, mask)
                    self._update_extra_statistics(extras, x, batch_args, call)
                    if sample is None:
                        sample = (x[:16], tuple(batch_rows(a, slice(0, 16), x.shape[0]) for a in batch_args))
                    bar.update(x.shape[0])
            bar.close()
            for counted in [stats, *extras]:  # moments merged over ranks: one process's up to rounding
                distributed.reduce_statistics(counted)
            std = stats.std(self.min_std)  # DataError before 2 samples
            assert stats.mean is not None  # set by the first update, so by then
            self.set_statistics(stats.mean, std, stats.active(self.active_threshold), stats.count)
            sample = distributed.from_main(sample)  # every rank measures on rank 0's (one process's) sample
            if sample is not None:
                self._measure_receptive_field(*sample)
        self._finish_estimation(extras)
        return self

    def _extra_statistics(self) -> list[FeatureStatistics]:
        """Further statistics a subclass estimates in the same pass as the layer's (default: none)."""
        return []

    def _update_extra_statistics(
        self, extras: list[FeatureStatistics], inputs: torch.Tensor, args: tuple[Any, ...], call: BottleneckCall
    ) -> None:
        """Add one batch to :meth:`_extra_statistics` (this rank's rows; merged over ranks by :meth:`estimate`)."""

    def _finish_estimation(self, extras: list[FeatureStatistics]) -> None:
        """Use the merged extra statistics, after :meth:`set_statistics` (default: nothing to do)."""

    def _estimation_heads(
        self, data: Any, additional_forward_args: Any, max_samples: int | None, counted: FeatureStatistics
    ) -> Iterator[tuple[torch.Tensor, tuple[Any, ...], BottleneckCall]]:
        """The head of each batch of ``data`` that :meth:`estimate` reads.

        This rank's rows in a process group, cut at ``max_samples`` samples as counted by ``counted`` (updated by the
        caller), on the model's device.
        """
        device = model_device(self.model)
        data, args = _shard_estimation(data, forward_args(additional_forward_args), max_samples)
        for x, batch_args in _batches(data, args=args):
            if max_samples is not None and counted.count >= max_samples:
                break
            if max_samples is not None:
                keep = slice(0, max_samples - counted.count)
                x, batch_args = x[keep], tuple(batch_rows(a, keep, x.shape[0]) for a in batch_args)
            x = x.to(device) if device is not None else x
            yield x, batch_args, self._run_head(x, batch_args)

    def _measure_receptive_field(self, inputs: torch.Tensor, args: tuple[Any, ...]) -> None:
        """Cache the receptive field of a sequence layer shorter than its float input (see :mod:`.layout`)."""
        if is_token_input(inputs) or inputs.ndim != 3 or self.mean is None or self.mean.ndim != 2:
            return
        if self.mean.shape[1] == inputs.shape[2]:
            return
        self._receptive_fields[int(inputs.shape[2])] = receptive_field_weights(
            self.model, self.split.layer, inputs, additional_forward_args=args, channel_dim=self.channel_dim
        )

    def set_statistics(self, mean: torch.Tensor, std: torch.Tensor, active: torch.Tensor, n_samples: int) -> None:
        """Use given feature statistics instead of :meth:`estimate` (e.g. ones estimated once and shared).

        Args:
            mean: Per-element mean of the layer's features, shape ``features.shape[1:]``.
            std: Per-element standard deviation of the layer's features, the same shape.
            active: Boolean mask of the elements that vary (the others are never noised).
            n_samples: How many inputs the statistics came from.
        """
        if mean.shape != std.shape or mean.shape != active.shape:
            raise DataError(
                f"set_statistics: mean, std and active must have one shape, got {tuple(mean.shape)}, "
                f"{tuple(std.shape)} and {tuple(active.shape)}"
            )
        self.mean, self.std, self.active, self.n_samples = mean, std, active.bool(), int(n_samples)

    def _statistics_like(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.mean is None:
            raise RuntimeError(
                f"{type(self).__name__}: call estimate(data) before attribute(); the bottleneck needs the mean and "
                f"standard deviation of layer {self.layer_name!r} over data"
            )
        if features.shape[1:] != self.mean.shape:
            raise DataError(
                f"layer {self.layer_name!r} gives feature maps {list(features.shape[1:])} (channels first) for these "
                f"inputs, but estimate() saw {list(self.mean.shape)}; use inputs of the size used for estimation"
            )
        assert self.std is not None and self.active is not None  # set_statistics sets all three
        dtype, device = features.dtype, features.device
        return self.mean.to(dtype=dtype, device=device), self.std.to(dtype=dtype, device=device), self.active.to(device)

    # -- shared helpers ---------------------------------------------------------------------------------------
    def _check_inputs(self, inputs: Any) -> torch.Tensor:
        inputs = torch.as_tensor(inputs)
        if inputs.ndim < 2:
            raise DataError(f"inputs must be a batch [N, ...], got shape {list(inputs.shape)}")
        if inputs.is_floating_point():
            as_finite_2d(inputs.flatten(1), "inputs", allow_empty=True)  # names the rows holding NaN or infinity
        device = model_device(self.model)
        return inputs.to(device) if device is not None else inputs

    def _prepare(self, inputs: torch.Tensor, target: Any, args: tuple[Any, ...] = ()) -> tuple[BottleneckCall, Any]:
        inputs = self._check_inputs(inputs)
        call = self._run_head(inputs, args)
        with torch.no_grad():
            logits = self._run_tail(call.features, call)
        if target is None:
            target = logits.argmax(-1)
        if isinstance(target, (list, tuple)) and any(isinstance(t, (list, tuple)) for t in target):
            raise DataError("target must be class indices (an int or one per input); multi-output targets are not "
                            "supported")  # fmt: skip
        target = as_targets(target, inputs.shape[0], num_classes=logits.shape[-1], device=inputs.device)
        return call, target

    def _capacity(self, features: torch.Tensor, one_minus_lambda: torch.Tensor, call: BottleneckCall | None = None):
        """Per-element capacity in bits, zero for inactive units (and padded positions)."""
        mean, std, active = self._statistics_like(features)
        if call is not None:
            active = self._active_for(call, active)
        kl = per_element_capacity(features, one_minus_lambda, mean, std)
        return torch.where(active, kl, torch.zeros_like(kl)) / NATS_PER_BIT

    def _to_map(self, capacity: torch.Tensor, inputs: torch.Tensor | None, padding: torch.Tensor | None = None):
        """Sum over channels and bring the map to the input's positions.

        Images and volumes are resized (bilinear, trilinear); a sequence layer as long as its input maps one to one,
        a shorter one through its receptive field (:func:`~pyroflows.attribution.layout.positions_to_input`).
        ``inputs=None`` keeps the layer's cells.
        """
        heatmap = capacity.sum(1)
        spatial = heatmap.ndim - 1
        if spatial == 0:
            raise DataError(
                "the layer's output has no spatial dimensions ([N, C]); use capacity() for per-unit information"
            )
        if inputs is None:
            return heatmap
        size = input_positions(inputs)
        if tuple(heatmap.shape[1:]) == tuple(size):
            mapped = heatmap
        elif spatial == 1 and len(size) == 1:
            if is_token_input(inputs):
                raise DataError(
                    f"layer {self.layer_name!r} has {heatmap.shape[1]} positions but the input has {size[0]} tokens; "
                    "a layer of token inputs must keep one position per token (or pass upsample=False)"
                )
            weights = self._receptive_fields.get(int(size[0]))
            if weights is None:  # statistics set by hand: measure on these inputs
                with frozen(self.model):
                    weights = receptive_field_weights(
                        self.model, self.split.layer, inputs[:16], channel_dim=self.channel_dim
                    )
                self._receptive_fields[int(size[0])] = weights
            mapped = positions_to_input(heatmap, weights.to(heatmap.device))
        else:
            if len(size) != spatial or spatial > 3:
                raise DataError(
                    f"cannot resize a {spatial}-d map {list(heatmap.shape[1:])} to the input's positions "
                    f"{list(size)}; pass upsample=False"
                )
            mode = ("linear", "bilinear", "trilinear")[spatial - 1]
            mapped = F.interpolate(heatmap.unsqueeze(1), size=tuple(size), mode=mode, align_corners=False)
            mapped = mapped.squeeze(1).clamp_min(0.0)
        if padding is not None and tuple(padding.shape[1:]) == tuple(mapped.shape[1:]):
            mapped = mapped.masked_fill(padding.to(mapped.device), 0.0)
        return mapped

    def _shape_output(self, maps: torch.Tensor, capacity: torch.Tensor, inputs: torch.Tensor, call, output: str):
        if output == "map":
            return maps
        if output == "input":
            if is_token_input(inputs) or tuple(maps.shape) == tuple(inputs.shape):
                return maps
            if tuple(maps.shape[1:]) != tuple(inputs.shape[2:]):
                raise DataError("output='input' needs the maps on the input's positions (upsample=True)")
            return maps.unsqueeze(1).expand_as(inputs).contiguous()
        if output == "layer":
            return from_channels_first(capacity, self._axis(call))
        raise DataError(f"output must be 'map', 'input' or 'layer', got {output!r}")

    def _kl_scale(self, features: torch.Tensor) -> float:
        """``beta / k``: the paper's beta multiplies the *mean* KL over the ``k`` elements of one feature map."""
        return self._kl_factor * self.beta / features[0].numel()

    def _model_site(self, features: torch.Tensor, call: BottleneckCall, target: torch.Tensor, mean, std, active):
        """The Pyro model: ``Z ~ Q(Z)`` scaled by ``beta / k``, the target observed through the tail's logits."""
        n, *feature = features.shape
        with pyro.plate("images", n, dim=-1):
            # TraceMeanField_ELBO takes the KL's scale from the guide's site: the guide uses the same scale.
            with poutine.scale(scale=self._kl_scale(features)):
                z = pyro.sample("z", MaskedFeatureNormal(mean, std, active, len(feature)))
            logits = self._run_tail(z.reshape(-1, *feature), call)
            logits = logits.reshape(*z.shape[: z.ndim - len(feature)], logits.shape[-1])
            pyro.sample("y", dist.Categorical(logits=logits), obs=target)

    def _posterior(self, features, one_minus_lambda, mean, std, active, shared_noise: bool):
        r""":math:`P(Z \mid R)` for the mask :math:`1 - \lambda`, as a masked, event-shaped distribution."""
        loc = features - one_minus_lambda * (features - mean)  # lambda R + (1 - lambda) mu
        scale = one_minus_lambda * std
        return MaskedFeatureNormal(loc, scale, active, features.ndim - 1, shared_noise=shared_noise)

    # -- Captum's attribute -----------------------------------------------------------------------------------
    def capacity(self, inputs: Any, target: Any = None, additional_forward_args: Any = None) -> torch.Tensor:
        """Information per element of the layer's output, in bits, ``[N, C, *positions]`` (channels first)."""
        return self._capacity_call(inputs, target, forward_args(additional_forward_args))[0]

    def _capacity_call(self, inputs, target, args) -> tuple[torch.Tensor, BottleneckCall]:
        raise NotImplementedError

    @log_usage()
    def attribute(
        self,
        inputs: torch.Tensor | tuple[torch.Tensor],
        target: Any = None,
        additional_forward_args: Any = None,
        *,
        upsample: bool = True,
        output: str = "map",
    ) -> torch.Tensor | tuple[torch.Tensor]:
        """Attribution in bits, mapped to the input's positions (Captum's ``attribute`` contract).

        Args:
            inputs: ``[N, C_in, *positions]`` float inputs, ``[N, L]`` token ids, or a one-tensor tuple of either
                (then a one-tensor tuple is returned).
            target: Class index (int) or one per input; ``None`` uses the model's prediction.
            additional_forward_args: Further arguments of the model's forward (``model(inputs, *args)``), e.g. an
                attention mask; a tensor or a tuple.
            upsample: Map the layer's cells to the input's positions (bilinear for images, one to one or through
                the receptive field for sequences); ``False`` keeps the layer's cells.
            output: ``"map"``: ``[N, *positions]``; ``"input"``: shaped like the inputs (the map repeated over the
                input channels, as Captum's metrics need); ``"layer"``: the capacity per element in the layer's
                own layout.

        Returns:
            Non-negative maps; a map's sum over the layer's cells is the information in bits.

        Raises:
            RuntimeError: ``estimate()`` was not called.
            DataError: bad inputs, targets, ``channel_dim`` or padding mask.
        """
        is_tuple = isinstance(inputs, tuple)
        if is_tuple:
            if len(inputs) != 1:
                raise DataError(
                    f"a bottleneck attributes one input tensor; got a tuple of {len(inputs)} (pass the model's further "
                    "arguments as additional_forward_args)"
                )
            inputs = inputs[0]
        inputs = self._check_inputs(inputs)
        if distributed.active():  # each process attributes its shard of the inputs; results gathered in order
            result = distributed.map_shards(
                lambda x, t, *a: self.attribute(x, t, a, upsample=upsample, output=output),
                inputs, target, *forward_args(additional_forward_args),
            )  # fmt: skip
            return (result,) if is_tuple else result
        with torch.enable_grad():  # NoiseTunnel calls its method under no_grad
            capacity, call = self._capacity_call(inputs, target, forward_args(additional_forward_args))
        maps = self._to_map(capacity, inputs if upsample else None, call.padding if upsample else None)
        if not upsample and call.padding is not None:
            maps = maps.masked_fill(call.padding, 0.0)
        result = self._shape_output(maps, capacity, inputs, call, output)
        return (result,) if is_tuple else result
