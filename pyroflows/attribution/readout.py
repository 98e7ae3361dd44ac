r"""The readout bottleneck: a small network that predicts the bottleneck's mask in one forward pass.

Schulz et al. (2020), Sec. 3.3: feature maps from several depths of the (frozen) network are normalised per
channel, resized to the bottleneck layer's spatial size and concatenated; a stack of 1x1 convolutions (here
position-wise linear layers, which are the same thing for any number of spatial dimensions) predicts
:math:`\alpha`, and :math:`\lambda = \mathrm{blur}(\mathrm{sigmoid}(\alpha))` as in the per-sample bottleneck.

In Pyro terms the readout network is an **amortised guide**: the model is the per-sample bottleneck's (``Z`` from
:math:`Q(Z)` scaled by :math:`\beta / k`, the label observed through the network's tail), the guide draws ``Z`` from
:math:`P(Z \mid R)` with :math:`\alpha` predicted from the image's features, and ``SVI`` with
``TraceMeanField_ELBO`` trains the readout's weights over a data set. ``attribute`` then needs one clean forward
pass of the network and one of the readout, no optimisation.

Example:
    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
    ...                       nn.Flatten(), nn.Linear(4 * 8 * 8, 3))
    >>> data = [(torch.randn(16, 1, 8, 8), torch.randint(0, 3, (16,))) for _ in range(2)]
    >>> readout = ReadoutBottleneck(model, "1", readout_layers=["1", "3"]).estimate(data)
    >>> _ = readout.fit(data, epochs=1)
    >>> readout.attribute(torch.randn(2, 1, 8, 8)).shape
    torch.Size([2, 8, 8])
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, cast

import pyro
import torch
import torch.nn.functional as F
from pyro import poutine
from pyro.infer import SVI
from pyro.nn import PyroModule
from pyro.optim import PyroOptim
from torch import nn
from tqdm.auto import tqdm

from pyroflows import distributed
from pyroflows.attribution.base import BottleneckBase, BottleneckCall, PaddingMask, model_device
from pyroflows.attribution.capacity import lambda_from_alpha
from pyroflows.attribution.elbo import ClosedFormKLELBO
from pyroflows.attribution.layers import frozen, resolve_layer
from pyroflows.attribution.layout import check_channel_dim, to_channels_first
from pyroflows.attribution.statistics import FeatureStatistics
from pyroflows.errors import CheckpointError, DataError
from pyroflows.serialization import Checkpointable
from pyroflows.validation import as_targets

__all__ = ["ReadoutBottleneck", "ReadoutNetwork"]


class ReadoutNetwork(PyroModule):
    r"""Position-wise MLP (a stack of 1x1 convolutions) from stacked features to the mask logits :math:`\alpha`.

    Its layers are ``PyroModule[nn.Linear]``, so inside a guide their weights are Pyro parameters that SVI trains.
    The last layer starts at zero weight and bias ``initial_alpha``: before training every unit passes
    (:math:`\lambda \approx 0.993`), as the per-sample bottleneck starts.

    Args:
        in_channels: Channels of the stacked readout features.
        out_channels: Channels of the bottleneck layer.
        hidden: Width of the two hidden layers.
        initial_alpha: Initial output.

    Example:
        >>> net = ReadoutNetwork(6, 4, hidden=8)
        >>> net(torch.zeros(2, 6, 5, 5)).shape
        torch.Size([2, 4, 5, 5])
    """

    def __init__(self, in_channels: int, out_channels: int, hidden: int = 64, initial_alpha: float = 5.0) -> None:
        super().__init__()
        # Pyro types ``PyroModule[M]`` as ``type[PyroModule]``; the class it makes subclasses ``M`` as well.
        sequential = cast(type[nn.Sequential], PyroModule[nn.Sequential])
        linear = cast(type[nn.Linear], PyroModule[nn.Linear])
        relu = cast(type[nn.ReLU], PyroModule[nn.ReLU])
        last = linear(hidden, out_channels)
        self.layers = sequential(linear(in_channels, hidden), relu(), linear(hidden, hidden), relu(), last)
        with torch.no_grad():
            last.weight.zero_()
            last.bias.fill_(initial_alpha)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        r"""``[N, in_channels, *spatial]`` -> :math:`\alpha` ``[N, out_channels, *spatial]``."""
        return self.layers(features.movedim(1, -1)).movedim(-1, 1)


def _model_dtype(model: nn.Module) -> torch.dtype:
    """The dtype of ``model``'s first floating-point parameter (torch's default dtype for a model without one)."""
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.get_default_dtype())


def _resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Resize ``[N, C, *s]`` to ``[N, C, *size]``; a vector ``[N, C]`` is broadcast over the positions."""
    spatial = x.ndim - 2
    if spatial == 0:
        return x.reshape(*x.shape, *([1] * len(size))).expand(*x.shape, *size)
    if spatial != len(size):
        raise DataError(f"cannot resize a readout feature map with {spatial} spatial dims to {list(size)}")
    if tuple(x.shape[2:]) == tuple(size):
        return x
    mode = ("linear", "bilinear", "trilinear")[spatial - 1]
    return F.interpolate(x, size=tuple(size), mode=mode, align_corners=False)


def _channel_moments(stats: FeatureStatistics) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and variance from per-element moments ``[C, *positions]``.

    By the law of total variance over the positions, weighted by how many samples counted each element (padded positions
    count less).
    """
    variance = stats.std() ** 2  # DataError before 2 samples
    assert stats.mean is not None and stats.counts is not None  # set with the first sample
    dims = tuple(range(1, stats.mean.ndim))
    if not dims:
        return stats.mean, variance
    counts = stats.counts
    weight = counts / counts.sum(dims, keepdim=True).clamp_min(1.0)
    mean = (stats.mean * weight).sum(dims)
    var = ((variance + (stats.mean - mean.view(-1, *([1] * len(dims)))) ** 2) * weight).sum(dims)
    return mean, var


class ReadoutBottleneck(Checkpointable, BottleneckBase):
    r"""Attribution in one forward pass by a readout network trained as an amortised Pyro guide.

    Args:
        model: The classifier (frozen during training and attribution, restored afterwards).
        layer: The bottleneck layer (dotted name or module).
        readout_layers: Layers whose outputs the readout sees (several depths, deeper ones included; the paper
            reads out after each block). Default: ``[layer]``.
        beta: Information-loss weight (10).
        sigma: Blur on :math:`\lambda` in feature cells (1).
        min_std: Lower bound on :math:`\sigma_R`; also applied to the readout features' channel normalisation,
            so units that never fire give 0, not NaN (the official readout's issue #41).
        hidden: Width of the readout network.
        initial_alpha: The readout's initial output.
        active_threshold: Units non-zero in at most this fraction of estimation samples are inactive.
        graph_split: Run only the network's tail at each training step (see ``LayerSplit``).
        channel_dim: Axis of the channels of the bottleneck layer's output and of every readout layer's output
            with as many dimensions (1; -1 for batch-first transformer features ``[N, L, C]``).
        padding_mask: Index into ``additional_forward_args`` of a boolean ``[N, L]`` mask, True at padded positions.

    Example:
        >>> from pyroflows.attribution import load_bundled_readout
        >>> load_bundled_readout().layer_name
        'features.6'
    """

    def __init__(
        self,
        model: nn.Module,
        layer: str | nn.Module,
        readout_layers: Sequence[str | nn.Module] | None = None,
        *,
        beta: float = 10.0,
        sigma: float = 1.0,
        min_std: float = 0.01,
        hidden: int = 64,
        initial_alpha: float = 5.0,
        active_threshold: float = 0.01,
        graph_split: bool = True,
        channel_dim: int = 1,
        padding_mask: PaddingMask | None = None,
    ) -> None:
        super().__init__(
            model,
            layer,
            beta=beta,
            sigma=sigma,
            min_std=min_std,
            active_threshold=active_threshold,
            graph_split=graph_split,
            channel_dim=channel_dim,
            padding_mask=padding_mask,
        )
        layers = [layer] if readout_layers is None else list(readout_layers)
        if not layers:
            raise ValueError("readout_layers must name at least one layer")
        resolved = [resolve_layer(model, name) for name in layers]
        self.readout_layers = [name for name, _ in resolved]
        self._readout_modules = [module for _, module in resolved]
        self.hidden = int(hidden)
        self.initial_alpha = float(initial_alpha)
        self.network: ReadoutNetwork | None = None
        self.readout_mean: list[torch.Tensor] = []
        self.readout_std: list[torch.Tensor] = []
        self.history: list[float] = []

    # -- features ---------------------------------------------------------------------------------------------
    def _readout_features(self, inputs: torch.Tensor, args: tuple[Any, ...] = ()) -> list[torch.Tensor]:
        """The readout layers' outputs for ``inputs`` (one forward pass of the whole model, no gradients)."""
        captured: dict[int, torch.Tensor] = {}
        handles = []
        for k, module in enumerate(self._readout_modules):

            def hook(_m: nn.Module, _i: Any, output: torch.Tensor, k: int = k) -> None:
                captured.setdefault(k, output)

            handles.append(module.register_forward_hook(hook))
        try:
            with torch.no_grad():
                self.model(inputs, *args)
        finally:
            for handle in handles:
                handle.remove()
        missing = [self.readout_layers[k] for k in range(len(self._readout_modules)) if k not in captured]
        if missing:
            raise RuntimeError(f"readout layers {missing} did not run in the model's forward pass")
        outputs = []
        for k in range(len(self._readout_modules)):
            x = captured[k]
            if x.ndim >= 3:
                x = to_channels_first(x, check_channel_dim(self.channel_dim, x.ndim, self.readout_layers[k]))
            outputs.append(x)
        return outputs

    def _stacked(self, readouts: list[torch.Tensor], size: Sequence[int]) -> torch.Tensor:
        parts = []
        for x, mean, std in zip(readouts, self.readout_mean, self.readout_std, strict=True):
            view = [1, -1] + [1] * (x.ndim - 2)
            x = (x - mean.to(x).view(view)) / std.to(x).view(view)
            parts.append(_resize(x, size))
        return torch.cat(parts, dim=1)

    # -- statistics -------------------------------------------------------------------------------------------
    # The one estimate() of BottleneckBase also estimates each readout layer's channel statistics, through these:
    def _extra_statistics(self) -> list[FeatureStatistics]:
        """One running estimate per readout layer, filled in the same pass as the bottleneck layer's."""
        return [FeatureStatistics() for _ in self._readout_modules]

    def _update_extra_statistics(
        self, extras: list[FeatureStatistics], inputs: torch.Tensor, args: tuple[Any, ...], call: BottleneckCall
    ) -> None:
        """Add the readout layers' outputs for one batch (padded positions left out where the lengths match)."""
        padding = call.padding
        for stats, feature in zip(extras, self._readout_features(inputs, args), strict=True):
            mask = None
            if padding is not None and feature.ndim == 3 and feature.shape[2] == padding.shape[1]:
                mask = ~padding[:, None, :]
            stats.update(feature, mask)

    def _finish_estimation(self, extras: list[FeatureStatistics]) -> None:
        """Per-channel readout normalisation from the merged statistics; the readout network on first estimation."""
        self.readout_mean, self.readout_std = [], []
        dtype = _model_dtype(self.model)
        for stats in extras:
            mean, var = _channel_moments(stats)
            self.readout_mean.append(mean.to(dtype))
            self.readout_std.append(var.sqrt().clamp_min(self.min_std).to(dtype))
        assert self.mean is not None  # estimate() calls set_statistics first
        if self.network is None:
            in_channels = sum(int(m.shape[0]) for m in self.readout_mean)
            self.network = ReadoutNetwork(in_channels, int(self.mean.shape[0]), self.hidden, self.initial_alpha)
            self._place_network()

    def _place_network(self) -> None:
        """Put the readout network on the model's device and in the model's dtype.

        The features it reads are in that dtype, which need not be torch's default.
        """
        assert self.network is not None
        device = model_device(self.model)
        self.network.to(device=device, dtype=_model_dtype(self.model))

    # -- training ---------------------------------------------------------------------------------------------
    def fit(
        self,
        data: Any,
        *,
        epochs: int = 1,
        lr: float = 1e-3,
        particles: int = 1,
        warmup: float = 1.0,
        progress: bool = False,
    ) -> list[float]:
        """Train the readout network by SVI over ``(x, y)`` batches (the labels are the observed targets).

        Args:
            data: A DataLoader (or a re-iterable of batches) yielding ``(x, y)``.
            epochs: Passes over ``data``.
            lr: Adam learning rate.
            particles: Noise copies per image per step (vectorised particles).
            warmup: Epochs over which the information loss's weight rises linearly from 0 to ``beta``. Without it
                the readout collapses in its first steps to the trivial mask that passes nothing everywhere (the
                KL term dominates a fresh network's loss), and the saturated sigmoid then gives no gradient back.
            progress: Show a progress bar.

        Returns:
            The loss per image of every step (also kept in ``history``).
        """
        if self.network is None:
            raise RuntimeError("ReadoutBottleneck: call estimate(data) before fit()")
        device = model_device(self.model)
        elbo = ClosedFormKLELBO(num_particles=particles, vectorize_particles=True, max_plate_nesting=1)
        self.network.train()
        steps_per_epoch = len(data) if hasattr(data, "__len__") else None
        step = 0
        with frozen(self.model), pyro.get_param_store().scope(), pyro.validation_enabled(False):
            distributed.synchronize(self.network)  # rank 0's weights and random state on every rank
            optim = distributed.synchronize_gradients(PyroOptim(torch.optim.Adam, {"lr": lr}))  # = pyro.optim.Adam
            svi = SVI(self._train_model, self._train_guide, optim, elbo)
            for epoch in range(epochs):
                for batch in tqdm(data, disable=not progress, desc=f"readout epoch {epoch + 1}/{epochs}"):
                    if warmup > 0 and steps_per_epoch:
                        self._kl_factor = min(1.0, (step + 1) / (warmup * steps_per_epoch))
                    step += 1
                    self.history.append(self._fit_batch(svi, batch, device))
        self._kl_factor = 1.0
        self.network.eval()
        return self.history

    def _fit_batch(self, svi: SVI, batch: Any, device: torch.device | None) -> float:
        """One SVI step on an ``(x, y)`` batch (this process's rows of it); the loss per image of the whole batch."""
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise DataError("fit() needs (x, y) batches: the labels are the targets the readout learns")
        x, y = batch[0], batch[1]
        if device is not None:
            x, y = x.to(device), y.to(device)
        y = as_targets(y, x.shape[0], name="fit() labels", device=x.device)
        with distributed.global_batch(x.shape[0], "sum") as share:  # this process's rows of the batch
            call = self._run_head(x[share.rows])
            stacked = self._stacked(self._readout_features(x[share.rows]), call.features.shape[2:])
            loss = share.total(svi.step(call, y[share.rows], stacked))
        return loss / x.shape[0]

    def _train_model(self, call: Any, target: torch.Tensor, stacked: torch.Tensor) -> None:
        mean, std, active = self._statistics_like(call.features)
        self._model_site(call.features, call, target, mean, std, self._active_for(call, active))

    def _train_guide(self, call: Any, target: torch.Tensor, stacked: torch.Tensor) -> None:
        features = call.features
        mean, std, active = self._statistics_like(features)
        active = self._active_for(call, active)
        assert self.network is not None  # fit() checks it before running the guide
        one_minus_lambda = lambda_from_alpha(self.network(stacked), self.sigma)
        with pyro.plate("images", features.shape[0], dim=-1), poutine.scale(scale=self._kl_scale(features)):
            pyro.sample("z", self._posterior(features, one_minus_lambda, mean, std, active, False))

    # -- attribution ------------------------------------------------------------------------------------------
    def _capacity_call(self, inputs: Any, target: Any, args: tuple[Any, ...]):
        """Per-element capacity ``[N, C, *positions]`` in bits, from one forward pass of model and readout.

        ``target`` is accepted for Captum compatibility and ignored: the readout predicts the mask from the
        features alone, as in the paper.
        """
        if self.network is None:
            raise RuntimeError(
                "ReadoutBottleneck: call estimate(data) and fit(data) (or load a trained one) before attribute()"
            )
        inputs = self._check_inputs(inputs)
        with frozen(self.model), torch.no_grad():
            call = self._run_head(inputs, args)
            features = call.features
            self._statistics_like(features)
            stacked = self._stacked(self._readout_features(inputs, args), features.shape[2:])
            with pyro.get_param_store().scope():  # a PyroModule registers its weights; keep the user's store clean
                alpha = self.network(stacked)
            one_minus_lambda = lambda_from_alpha(alpha, self.sigma)
            return self._capacity(features, one_minus_lambda, call), call

    # -- saving (serialization.Checkpointable) -----------------------------------------------------------------
    @property
    def config(self) -> dict[str, Any]:
        """The constructor arguments, as plain values (the model explained is not saved: pass it to :meth:`load`)."""
        return {
            "layer": self.layer_name,
            "readout_layers": list(self.readout_layers),
            "beta": self.beta,
            "sigma": self.sigma,
            "min_std": self.min_std,
            "hidden": self.hidden,
            "initial_alpha": self.initial_alpha,
            "active_threshold": self.active_threshold,
            "channel_dim": self.channel_dim,
            "padding_mask": self.padding_mask,
        }

    @classmethod
    def from_config(  # type: ignore[override]  # needs the model explained, which the protocol passes as a kwarg
        cls, config: dict[str, Any], *, model: nn.Module, graph_split: bool = True
    ) -> ReadoutBottleneck:
        """An untrained readout for ``model`` from a saved :attr:`config`.

        Raises:
            KeyError: the config lacks ``layer`` or ``readout_layers`` (a corrupt file).
        """
        config = dict(config)
        layer, readout_layers = config.pop("layer"), config.pop("readout_layers")
        try:
            return cls(model, layer, readout_layers, graph_split=graph_split, **config)
        except (ValueError, TypeError) as exc:
            raise _DoesNotFit(str(exc)) from exc

    def checkpoint_state(self) -> dict[str, torch.Tensor]:
        """The readout network's weights (``network.*``), the layer's statistics and the readout normalisation."""
        if self.network is None:
            raise RuntimeError("ReadoutBottleneck: nothing to save before estimate() and fit()")
        state = {f"network.{k}": v for k, v in self.network.state_dict().items()}
        state.update({"mean": self.mean, "std": self.std, "active": self.active})
        for k, (mean, std) in enumerate(zip(self.readout_mean, self.readout_std, strict=True)):
            state[f"readout_mean.{k}"] = mean
            state[f"readout_std.{k}"] = std
        return state

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The saved tensors (:meth:`checkpoint_state`), as for a module."""
        return self.checkpoint_state()

    def checkpoint_extra(self) -> dict[str, Any]:
        """The training history and the number of estimation samples."""
        return {"history": list(self.history), "n_samples": self.n_samples}

    def restore_state(self, state: Mapping[str, torch.Tensor], extra: Mapping[str, Any]) -> None:
        """Set the statistics and rebuild the trained readout network from :meth:`checkpoint_state`'s tensors."""
        self.set_statistics(state["mean"], state["std"], state["active"], extra.get("n_samples", 0))
        n = len(self.readout_layers)
        self.readout_mean = [state[f"readout_mean.{k}"] for k in range(n)]
        self.readout_std = [state[f"readout_std.{k}"] for k in range(n)]
        network_state = {k[len("network.") :]: v for k, v in state.items() if k.startswith("network.")}
        in_channels = network_state["layers.0.weight"].shape[1]
        self.network = ReadoutNetwork(in_channels, int(state["mean"].shape[0]), self.hidden, self.initial_alpha)
        self._place_network()  # before loading, so the weights keep their precision
        self.network.load_state_dict(network_state)
        self.network.eval()
        self.history = list(extra.get("history", []))

    @classmethod
    def load(  # type: ignore[override]  # takes the model explained as a second positional argument
        cls, path: str | os.PathLike, model: nn.Module | None = None, *, graph_split: bool = True
    ) -> ReadoutBottleneck:
        """Rebuild a saved readout bottleneck for ``model`` (the network it was trained on).

        It attributes exactly as the saved one.

        Example:
            >>> import tempfile, pathlib
            >>> from pyroflows.attribution import load_bundled_readout
            >>> readout = load_bundled_readout()
            >>> path = readout.save(pathlib.Path(tempfile.mkdtemp()) / "readout.pt")
            >>> x = torch.zeros(1, 1, 56, 56)
            >>> bool((ReadoutBottleneck.load(path, readout.model).attribute(x) == readout.attribute(x)).all())
            True

        Raises:
            CheckpointError: not a readout checkpoint, corrupt, or its layers do not exist in ``model``.
        """
        if model is None:
            raise TypeError("ReadoutBottleneck.load needs the model it explains: load(path, model)")
        try:
            return super().load(path, model=model, graph_split=graph_split)
        except _DoesNotFit as exc:
            raise CheckpointError(f"{path}: does not fit this model ({exc})") from exc


class _DoesNotFit(Exception):
    """A saved readout's layers or settings do not fit the model passed to :meth:`ReadoutBottleneck.load`."""
