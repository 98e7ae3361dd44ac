r"""The per-sample information bottleneck (Schulz et al., 2020), optimised as a Pyro model/guide pair.

At the chosen layer the feature map :math:`R` is replaced by :math:`Z = \lambda R + (1-\lambda)\varepsilon`,
:math:`\varepsilon \sim \mathcal N(\mu_R, \sigma_R^2)`, with :math:`\lambda = \mathrm{blur}(\mathrm{sigmoid}(\alpha))`
and one :math:`\alpha` per image, channel and position. As a probabilistic program:

* the **model** draws :math:`Z` from the variational marginal :math:`Q(Z) = \mathcal N(\mu_R, \sigma_R^2)` under
  ``poutine.scale(beta / k)`` (:math:`k` the number of elements of :math:`R`) and observes the target through the
  network's tail, ``Categorical(logits=tail(Z))``;
* the **guide** draws :math:`Z` from :math:`P(Z \mid R) = \mathcal N(\lambda R + (1-\lambda)\mu_R,
  (1-\lambda)^2\sigma_R^2)`, reparameterised.

``TraceMeanField_ELBO`` then computes the KL term in closed form, so the negative ELBO is exactly the paper's
:math:`\mathcal L_{CE} + \beta \mathcal L_I` with :math:`\mathcal L_I` the mean per-element KL; the noise copies are
vectorised particles. ``pyro.infer.SVI`` with Adam optimises :math:`\alpha`; the attribution map is the KL summed
over channels, in bits, upsampled to the input.

Example:
    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 3))
    >>> bottleneck = PerSampleBottleneck(model, "1", steps=3).estimate(torch.randn(64, 1, 8, 8))
    >>> maps = bottleneck.attribute(torch.randn(2, 1, 8, 8), target=0)
    >>> maps.shape, bool((maps >= 0).all())
    (torch.Size([2, 8, 8]), True)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from captum.attr import LayerAttribution
from captum.log import log_usage
from pyro import poutine
from pyro.distributions.torch_distribution import TorchDistribution
from pyro.infer import SVI, TraceMeanField_ELBO
from pyro.infer.util import is_validation_enabled
from pyro.poutine.util import prune_subsample_sites
from torch import nn
from torch.distributions import constraints, register_kl
from torch.distributions.utils import _standard_normal, broadcast_all
from tqdm.auto import tqdm

from pyroflows import distributed
from pyroflows.attribution.capacity import NATS_PER_BIT, lambda_from_alpha, per_element_capacity
from pyroflows.attribution.hooks import HeadOutput, LayerSplit, frozen
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
from pyroflows.validation import check_float, check_int

__all__ = ["PerSampleBottleneck", "BottleneckBase", "BottleneckCall", "MaskedFeatureNormal", "ClosedFormKLELBO"]


class _SharedNoiseSample(torch.autograd.Function):
    """``z[p, i] = loc[i] + eps[p, 0] * scale[i]`` for noise copies ``p`` and images ``i``.

    The same values as ``torch.addcmul(loc, eps, scale)``; the backward sums the gradient over the copies one copy
    at a time, instead of autograd's copy-sized product ``grad * eps`` followed by two reductions over the copies
    (memory-bound work on tensors ``batch_size`` times the feature maps' size).
    """

    @staticmethod
    def forward(ctx: Any, loc: torch.Tensor, scale: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(eps)
        return torch.addcmul(loc, eps, scale)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:
        (eps,) = ctx.saved_tensors
        grad_loc = grad[0].clone() if ctx.needs_input_grad[0] else None
        grad_scale = grad[0] * eps[0] if ctx.needs_input_grad[1] else None
        for p in range(1, grad.shape[0]):
            if grad_loc is not None:
                grad_loc.add_(grad[p])
            if grad_scale is not None:
                grad_scale.addcmul_(grad[p], eps[p])
        return grad_loc, grad_scale, None


class MaskedFeatureNormal(TorchDistribution):
    r"""Independent Normals over a whole feature map (the event), counting only its active units.

    The same law as ``dist.Normal(loc, scale).mask(active).to_event(event_dim)`` (Pyro's composition): samples are
    ``loc + eps * scale``, and log-densities and KL divergences sum over the active units only. It exists for the
    bottleneck's :math:`Z` under vectorised particles, where Pyro expands both distributions over the noise copies:
    the KL between two of them is computed once per distinct parameter, masked and summed over the feature map
    *before* it is broadcast over the copies (the composition materialises, masks and sums it once per copy, which
    costs a small network's bottleneck as much as its tail).

    Args:
        loc: Means, ``[*batch, *feature]``.
        scale: Standard deviations, broadcastable to ``loc``.
        active: Boolean mask of the units that count, broadcastable to the feature map.
        event_dim: Number of rightmost dimensions forming the feature map.
        shared_noise: Draw the standard-normal noise once per noise copy and broadcast it over the images
            dimension (the one left of the feature map). Each image still sees independent noise across copies and
            steps; sharing it across images makes the random numbers an image receives independent of which other
            images share its batch, so a batch of images gives the same maps as one image at a time.

    Example:
        >>> from torch.distributions import kl_divergence
        >>> loc, scale = torch.randn(3, 2, 4), torch.rand(3, 2, 4) + 0.1
        >>> active = torch.tensor([True, False, True, True])
        >>> p = MaskedFeatureNormal(loc, scale, active, 2)
        >>> q = MaskedFeatureNormal(torch.zeros(2, 4), 1.0, active, 2).expand([3])
        >>> reference_p = dist.Normal(loc, scale).mask(active).to_event(2)
        >>> reference_q = dist.Normal(torch.zeros(2, 4), 1.0).mask(active).to_event(2).expand([3])
        >>> torch.allclose(kl_divergence(p, q), kl_divergence(reference_p, reference_q))
        True
    """

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    has_rsample = True

    def __init__(
        self,
        loc: torch.Tensor,
        scale: torch.Tensor | float,
        active: torch.Tensor,
        event_dim: int,
        shared_noise: bool = False,
        validate_args: Any = None,
    ) -> None:
        self.loc, self.scale = broadcast_all(loc, scale)
        self._params = (self.loc, torch.as_tensor(scale, dtype=self.loc.dtype, device=self.loc.device))
        self.active = torch.as_tensor(active, dtype=torch.bool, device=self.loc.device)
        self.shared_noise = bool(shared_noise)
        shape = self.loc.shape
        split = len(shape) - int(event_dim)
        super().__init__(shape[:split], shape[split:], validate_args=validate_args)

    @constraints.dependent_property
    def support(self) -> constraints.Constraint:
        return constraints.independent(constraints.real, self.event_dim)

    @property
    def mean(self) -> torch.Tensor:
        return self.loc

    @property
    def variance(self) -> torch.Tensor:
        return self.scale.square()

    def expand(self, batch_shape: Any, _instance: Any = None) -> MaskedFeatureNormal:
        new = self._get_checked_instance(MaskedFeatureNormal, _instance)
        shape = torch.Size(batch_shape) + self.event_shape
        new.loc, new.scale = self.loc.expand(shape), self.scale.expand(shape)
        new.active, new.shared_noise, new._params = self.active, self.shared_noise, self._params
        super(MaskedFeatureNormal, new).__init__(torch.Size(batch_shape), self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:  # noqa: B008 (torch's signature)
        shape = list(self._extended_shape(sample_shape))
        if self.shared_noise:
            axis = len(shape) - self.event_dim - 1
            if axis >= 0:
                shape[axis] = 1
            eps = torch.randn(shape, dtype=self.loc.dtype, device=self.loc.device)
            if eps.ndim >= 4 and self.loc.stride(-3) == 1 and self.loc.shape[-3] > 1:
                # loc is channels_last: lay the same numbers out in its order, so the sample is channels_last too.
                eps = eps.movedim(-3, -1).contiguous().movedim(-1, -3)
            loc, scale = self._params
            if axis == 1 and loc.shape == scale.shape == self.loc.shape[1:]:  # copies x images x feature map
                return _SharedNoiseSample.apply(loc, scale, eps)
        else:
            # Under a distributed global batch: the whole batch's noise, this rank's images (dim -event_dim-1).
            axis = len(shape) - self.event_dim - 1

            def draw(m: int) -> torch.Tensor:
                return _standard_normal(shape[:axis] + [m] + shape[axis + 1 :], dtype=self.loc.dtype,
                                        device=self.loc.device)  # fmt: skip

            if axis >= 0:
                eps = distributed.draw_rows(draw, shape[axis], dim=axis)
            else:
                eps = _standard_normal(shape, dtype=self.loc.dtype, device=self.loc.device)
        return torch.addcmul(self.loc, eps, self.scale)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        log_prob = dist.Normal(self.loc, self.scale, validate_args=False).log_prob(value)
        log_prob = torch.where(self.active, log_prob, log_prob.new_zeros(()))
        return log_prob.sum(tuple(range(-self.event_dim, 0))) if self.event_dim else log_prob


@register_kl(MaskedFeatureNormal, MaskedFeatureNormal)
def _kl_masked_feature_normal(p: MaskedFeatureNormal, q: MaskedFeatureNormal) -> torch.Tensor:
    """Normal-Normal KL from the parameters as given (before any ``expand``), masked and summed, then broadcast.

    Reading the un-expanded parameters keeps the noise copies out of the forward *and* the backward pass (slicing
    an expanded tensor instead would send a zero-filled full-size gradient back through the slice).
    """
    if p.event_dim != q.event_dim:
        raise NotImplementedError("KL between feature-map Normals of different event ranks")
    event_dim = p.event_dim
    batch_shape = torch.broadcast_shapes(p.batch_shape, q.batch_shape)
    event_shape = torch.broadcast_shapes(p.event_shape, q.event_shape)
    params = (*p._params, *q._params)
    lead = torch.broadcast_shapes(*(t.shape[: max(t.ndim - event_dim, 0)] for t in params))
    p_loc, p_scale, q_loc, q_scale = (t.expand(lead + event_shape) for t in params)
    var_ratio = (p_scale / q_scale).square()
    t1 = ((p_loc - q_loc) / q_scale).square()
    kl = 0.5 * (var_ratio + t1 - 1 - var_ratio.log())
    active = p.active if p.active is q.active else p.active & q.active
    kl = torch.where(active, kl, kl.new_zeros(()))
    if event_dim:
        kl = kl.sum(tuple(range(-event_dim, 0)))
    return kl.expand(batch_shape)


class ClosedFormKLELBO(TraceMeanField_ELBO):
    """``TraceMeanField_ELBO`` that skips the log-densities its closed-form KL terms never read.

    ``TraceMeanField_ELBO`` replaces each latent site's ``log q - log p`` by ``KL(q || p)`` but still evaluates both
    log-densities for every noise copy of every element, which costs a bottleneck more than its KL. Here only
    observed sites get a log-density. Valid for model/guide pairs whose every latent site has a registered KL (the
    bottlenecks' do); other pairs should use ``TraceMeanField_ELBO``.
    """

    def _get_trace(self, model: Any, guide: Any, args: Any, kwargs: Any) -> tuple[Any, Any]:
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
        guide_trace, model_trace = prune_subsample_sites(guide_trace), prune_subsample_sites(model_trace)
        model_trace.compute_log_prob(site_filter=lambda _name, site: site["is_observed"])
        if is_validation_enabled():  # Pyro's reparameterisation check reads the guide's score parts
            guide_trace.compute_score_parts()
        return model_trace, guide_trace


def _batches(data: Any, batch_size: int = 64, args: tuple[Any, ...] = ()) -> Iterable[tuple[torch.Tensor, tuple]]:
    """``(inputs, further forward args)`` from a tensor ``[N, ...]`` (``args`` split alongside), or an iterable of
    tensors or ``(x, y, ...)`` batches (no further arguments)."""
    if isinstance(data, torch.Tensor):
        for start in range(0, data.shape[0], batch_size):
            rows = slice(start, start + batch_size)
            yield data[rows], tuple(_rows(a, rows, data.shape[0]) for a in args)
        return
    if args:
        raise DataError("additional_forward_args needs the estimation data as one tensor [N, ...], not a loader")
    for batch in data:
        yield (batch[0] if isinstance(batch, (tuple, list)) else batch), ()


def _rows(value: Any, rows: slice, n: int) -> Any:
    return value[rows] if isinstance(value, torch.Tensor) and value.ndim and value.shape[0] == n else value


def _shard_estimation(data: Any, args: tuple[Any, ...], max_samples: int | None) -> tuple[Any, tuple[Any, ...]]:
    """This rank's part of the estimation data (:func:`~pyroflows.distributed.shard_batches`), with the rows of
    batch-first ``additional_forward_args`` that go with a tensor's shard."""
    if not distributed.active():
        return data, args
    if isinstance(data, torch.Tensor):
        n = data.shape[0]
        r = distributed.shard_range(n if max_samples is None else min(n, max_samples))
        args = tuple(_rows(a, slice(r.start, r.stop), n) for a in args)
    return distributed.shard_batches(data, max_samples), args


def _model_device(model: nn.Module) -> torch.device | None:
    for p in model.parameters():
        return p.device
    return None


def _forward_args(additional_forward_args: Any) -> tuple[Any, ...]:
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
    """What the per-sample and readout bottlenecks share: the layer split, the statistics and the KL map.

    Both are Captum layer attributions (:class:`captum.attr.LayerAttribution`): ``attribute(inputs, target=None,
    additional_forward_args=None, ...)`` with a tensor or a one-tensor tuple as inputs (a tuple in, a tuple out),
    ``has_convergence_delta()`` false, so they run inside :class:`captum.attr.NoiseTunnel` and under
    :func:`captum.metrics.infidelity` / :func:`captum.metrics.sensitivity_max` (with ``output="input"``).

    Args:
        model: A classifier returning logits ``[N, classes]``; not modified (hooks and flags are restored).
        layer: Dotted name of the bottleneck's layer (``"features.4"``) or the module itself.
        beta: Weight of the information loss (the paper's :math:`\\beta k`; 10 by default, as in the paper).
        sigma: Width of the Gaussian blur on :math:`\\lambda`, in feature-map cells (0: no blur).
        min_std: Lower bound on :math:`\\sigma_R`.
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
        padding_mask: int | None = None,
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
        self,
        data: Any,
        *,
        max_samples: int | None = None,
        progress: bool = False,
        additional_forward_args: Any = None,
    ) -> BottleneckBase:
        """Estimate :math:`\\mu_R` and :math:`\\sigma_R` of the layer's output over ``data``.

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
        stats = FeatureStatistics()
        sample: tuple[torch.Tensor, tuple[Any, ...]] | None = None
        bar = tqdm(total=max_samples, disable=not progress, desc=f"estimating {self.layer_name}", unit="sample")
        with frozen(self.model):
            with distributed.fail_together():  # a failure on one rank ends estimate on every rank
                for x, batch_args, call in self._estimation_heads(data, additional_forward_args, max_samples, stats):
                    mask = None if call.padding is None else ~call.padding[:, None, :]
                    stats.update(call.features, mask)
                    if sample is None:
                        sample = (x[:16], tuple(_rows(a, slice(0, 16), x.shape[0]) for a in batch_args))
                    bar.update(x.shape[0])
            bar.close()
            distributed.reduce_statistics(stats)  # moments merged over ranks: one process's up to rounding
            self.set_statistics(stats.mean, stats.std(self.min_std), stats.active(self.active_threshold), stats.count)
            sample = distributed.from_main(sample)  # every rank measures on rank 0's (one process's) sample
            if sample is not None:
                self._measure_receptive_field(*sample)
        return self

    def _estimation_heads(
        self, data: Any, additional_forward_args: Any, max_samples: int | None, counted: FeatureStatistics
    ) -> Iterator[tuple[torch.Tensor, tuple[Any, ...], BottleneckCall]]:
        """The head of each batch of ``data`` that :meth:`estimate` reads: this rank's rows in a process group, cut
        at ``max_samples`` samples as counted by ``counted`` (updated by the caller), on the model's device."""
        device = _model_device(self.model)
        data, args = _shard_estimation(data, _forward_args(additional_forward_args), max_samples)
        for x, batch_args in _batches(data, args=args):
            if max_samples is not None and counted.count >= max_samples:
                break
            if max_samples is not None:
                keep = slice(0, max_samples - counted.count)
                x, batch_args = x[keep], tuple(_rows(a, keep, x.shape[0]) for a in batch_args)
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
            mean, std: Per-element mean and standard deviation of the layer's features, shape ``features.shape[1:]``.
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
        kw = {"dtype": features.dtype, "device": features.device}
        return self.mean.to(**kw), self.std.to(**kw), self.active.to(features.device)

    # -- shared helpers ---------------------------------------------------------------------------------------
    def _check_inputs(self, inputs: Any) -> torch.Tensor:
        inputs = torch.as_tensor(inputs)
        if inputs.ndim < 2:
            raise DataError(f"inputs must be a batch [N, ...], got shape {list(inputs.shape)}")
        if inputs.is_floating_point() and not torch.isfinite(inputs).all():
            raise DataError("inputs hold NaN or infinity")
        device = _model_device(self.model)
        return inputs.to(device) if device is not None else inputs

    def _prepare(self, inputs: torch.Tensor, target: Any, args: tuple[Any, ...] = ()) -> tuple[BottleneckCall, Any]:
        inputs = self._check_inputs(inputs)
        call = self._run_head(inputs, args)
        n = inputs.shape[0]
        with torch.no_grad():
            logits = self._run_tail(call.features, call)
        if target is None:
            target = logits.argmax(-1)
        if isinstance(target, (list, tuple)) and any(isinstance(t, (list, tuple)) for t in target):
            raise DataError("target must be class indices (an int or one per input); multi-output targets are not "
                            "supported")  # fmt: skip
        target = torch.as_tensor(target, device=inputs.device)
        if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
            raise DataError(f"target must hold class indices (integers), got dtype {target.dtype}")
        target = target.long()
        if target.ndim == 0:
            target = target.expand(n)
        if target.shape != (n,):
            raise DataError(f"target must be an int or a tensor [{n}], got shape {list(target.shape)}")
        classes = logits.shape[-1]
        outside = ((target < 0) | (target >= classes)).nonzero().flatten()
        if outside.numel():
            raise DataError(
                f"target must be a class index in [0, {classes}); got {target[outside[:5]].tolist()} for input(s) "
                f"{outside[:5].tolist()}"
            )
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
        return self._capacity_call(inputs, target, _forward_args(additional_forward_args))[0]

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
                inputs, target, *_forward_args(additional_forward_args),
            )  # fmt: skip
            return (result,) if is_tuple else result
        with torch.enable_grad():  # NoiseTunnel calls its method under no_grad
            capacity, call = self._capacity_call(inputs, target, _forward_args(additional_forward_args))
        maps = self._to_map(capacity, inputs if upsample else None, call.padding if upsample else None)
        if not upsample and call.padding is not None:
            maps = maps.masked_fill(call.padding, 0.0)
        result = self._shape_output(maps, capacity, inputs, call, output)
        return (result,) if is_tuple else result


class PerSampleBottleneck(BottleneckBase):
    """Attribution by a per-sample information bottleneck, optimised with ``pyro.infer.SVI``.

    Args:
        model: A classifier returning logits; its weights are frozen and its mode set to eval during attribution,
            and both are restored afterwards (also after an error). Nothing is inserted into the model: the layer
            is reached by a traced graph split or forward hooks (see
            :class:`~pyroflows.attribution.hooks.LayerSplit`).
        layer: Dotted module name (``"features.4"``) or the module itself.
        beta: Information-loss weight :math:`\\beta` multiplying the mean KL per element (10, the paper's best).
        steps: Adam steps per batch of images (10).
        lr: Adam learning rate (1).
        batch_size: Noise copies of each image per step (10), as vectorised particles of the ELBO.
        sigma: Blur width on :math:`\\lambda` in feature cells (1; the kernel has ``2 round(2 sigma) + 1`` taps).
        min_std: Lower bound on :math:`\\sigma_R` (0.01).
        initial_alpha: Initial :math:`\\alpha` (5: :math:`\\lambda \\approx 0.993`, almost everything passes).
        active_threshold: Units firing in at most this fraction of estimation samples are inactive (0.01).
        graph_split: Split the model so the part before the layer runs once per image (default); ``False``
            re-runs the whole model at every step like the official implementation (for comparison).
        optimize_tail: With the graph split, run the tail (10 times per image, for every noise copy) as a new
            module built for it at each ``attribute`` call: eval-mode BatchNorm folded into the preceding
            convolution, ReLUs moved after max-pooling, 4-d feature maps in the ``channels_last`` memory format
            (see :func:`~pyroflows.attribution.hooks.optimize_tail`). The maps are the same up to float rounding;
            the model is not changed. It holds a copy of the folded convolutions' weights while it runs (about
            90 MB for ResNet-50 after ``layer2``; nothing for a network without BatchNorm); ``False`` runs the
            model's own modules. Skipped while a module of the tail has hooks.
        progress: Show a progress bar over the optimisation steps.
        channel_dim: Axis of the layer's channels (1; -1 for batch-first transformer features ``[N, L, C]``).
        padding_mask: Index into ``additional_forward_args`` of a boolean ``[N, L]`` mask, True at padded positions.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Conv1d(2, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 16, 2))
        >>> bottleneck = PerSampleBottleneck(model, "0", steps=2).estimate(torch.randn(32, 2, 16))
        >>> bottleneck.attribute(torch.randn(3, 2, 16), target=1).shape  # a sequence model: maps [N, L]
        torch.Size([3, 16])

        The tail optimisation changes the work per step, not the maps:

        >>> net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        ...                     nn.Conv2d(8, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 16, 2))
        >>> data, x = torch.randn(32, 1, 12, 12), torch.randn(2, 1, 12, 12)
        >>> maps = []
        >>> for optimize in (True, False):
        ...     _ = torch.manual_seed(0)
        ...     b = PerSampleBottleneck(net, "1", steps=3, optimize_tail=optimize).estimate(data)
        ...     maps.append(b.attribute(x, target=0))
        >>> torch.allclose(maps[0], maps[1], rtol=1e-4, atol=1e-6)
        True
    """

    def __init__(
        self,
        model: nn.Module,
        layer: str | nn.Module,
        *,
        beta: float = 10.0,
        steps: int = 10,
        lr: float = 1.0,
        batch_size: int = 10,
        sigma: float = 1.0,
        min_std: float = 0.01,
        initial_alpha: float = 5.0,
        active_threshold: float = 0.01,
        graph_split: bool = True,
        optimize_tail: bool = True,
        progress: bool = False,
        channel_dim: int = 1,
        padding_mask: int | None = None,
    ) -> None:
        super().__init__(
            model,
            layer,
            beta=beta,
            sigma=sigma,
            min_std=min_std,
            active_threshold=active_threshold,
            graph_split=graph_split,
            optimize_tail=optimize_tail,
            channel_dim=channel_dim,
            padding_mask=padding_mask,
        )
        steps = check_int(steps, "steps", low=1)
        batch_size = check_int(batch_size, "batch_size", low=1)
        lr = check_float(lr, "lr", low=0, low_open=True)
        self.steps = int(steps)
        self.lr = float(lr)
        self.batch_size = int(batch_size)
        self.initial_alpha = float(initial_alpha)
        self.progress = progress
        self.history: list[float] = []
        #: Optional prior mask ``[N, 1 | C, *positions]`` in ``[0, 1]`` multiplying :math:`\lambda` (channels first).
        self.lambda_prior: torch.Tensor | None = None

    def _optimise(self, inputs: torch.Tensor, target: Any, args: tuple[Any, ...] = ()):
        """Optimise one :math:`\\alpha` per image; returns :math:`R`, :math:`1 - \\lambda` and the call."""
        with frozen(self.model):
            call, target = self._prepare(inputs, target, args)
            features = call.features
            if self.split.optimize_tail and self.split.mode == "graph" and features.ndim == 4 and self._axis(call) == 1:
                # The optimised tail runs in channels_last: keep the bottleneck's elementwise work in the same
                # layout, so no per-step conversion is needed (the values are unchanged).
                features = features.contiguous(memory_format=torch.channels_last)
            mean, std, active = self._statistics_like(features)
            active = self._active_for(call, active)
            initial = torch.full_like(features, self.initial_alpha)

            def model(features: torch.Tensor, target: torch.Tensor) -> None:
                self._model_site(features, call, target, mean, std, active)

            def guide(features: torch.Tensor, target: torch.Tensor) -> None:
                alpha = pyro.param("alpha", initial)
                one_minus_lambda = self._one_minus_lambda(alpha)
                with pyro.plate("images", features.shape[0], dim=-1), poutine.scale(scale=self._kl_scale(features)):
                    pyro.sample("z", self._posterior(features, one_minus_lambda, mean, std, active, True))

            elbo = ClosedFormKLELBO(num_particles=self.batch_size, vectorize_particles=True, max_plate_nesting=1)
            # A private parameter store: attributing never touches the user's Pyro parameters. Validation is off
            # inside: the distributions are built here from checked statistics, and its checks cost ~10% a step.
            with pyro.get_param_store().scope(), pyro.validation_enabled(False), torch.enable_grad():
                svi = SVI(model, guide, pyro.optim.Adam({"lr": self.lr}), elbo)
                n = features.shape[0]
                self.history = []
                for _ in tqdm(range(self.steps), disable=not self.progress, desc="bottleneck"):
                    self.history.append(svi.step(features, target) / n)
                alpha = pyro.param("alpha").detach()
            return features, self._one_minus_lambda(alpha), call

    def _one_minus_lambda(self, alpha: torch.Tensor) -> torch.Tensor:
        r""":math:`1 - \lambda`, with :math:`\lambda = p \cdot \mathrm{blur}(\mathrm{sigmoid}(\alpha))` under a prior
        mask :math:`p \in [0, 1]` (``lambda_prior``, set by :class:`~pyroflows.attribution.InputBottleneck`)."""
        one_minus_lambda = lambda_from_alpha(alpha, self.sigma)
        if self.lambda_prior is None:
            return one_minus_lambda
        prior = self.lambda_prior.to(alpha)
        return (1.0 - prior * (1.0 - one_minus_lambda)).clamp_min(torch.finfo(alpha.dtype).tiny)

    def _capacity_call(self, inputs: Any, target: Any, args: tuple[Any, ...]) -> tuple[torch.Tensor, BottleneckCall]:
        features, one_minus_lambda, call = self._optimise(inputs, target, args)
        # .contiguous(): the optimised path works in channels_last
        return self._capacity(features, one_minus_lambda, call).contiguous(), call

    def capacity(self, inputs: Any, target: Any = None, additional_forward_args: Any = None) -> torch.Tensor:
        """The optimised bottleneck's information per element of the layer's output, in bits.

        All images are optimised together, each with its own :math:`\\alpha`; the maps equal those of one image
        at a time under the same seed (up to floating-point rounding).

        Args:
            inputs: ``[N, ...]`` inputs of the model.
            target: Class index (int) or ``[N]`` indices; ``None`` uses the model's prediction.
            additional_forward_args: Further arguments of the model's forward.

        Returns:
            ``[N, C, *positions]`` non-negative capacity, channels first (zero for inactive units).
        """
        return self._capacity_call(inputs, target, _forward_args(additional_forward_args))[0]
