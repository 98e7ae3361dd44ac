"""One registry of attribution methods, the bottlenecks and the Captum baselines, behind one signature.

The registry maps a name to a factory ``factory(model, context)`` of a Captum ``Attribution``
(:func:`make_attribution`): every member, the bottlenecks included, is called as
``attribute(inputs, target=..., additional_forward_args=...)`` and returns one value per input position,
``[N, H, W]`` for images, ``[N, L]`` for sequences and token ids (token methods work on the embedding layer).
:func:`make_attribute_fn` turns a name into ``attribute_fn(model, inputs, target)``, building the method for each
model it is given, so the same function attributes the intact model and the randomised copies of the sanity check.
Multi-channel attributions ``[N, C, H, W]`` are reduced to ``[N, H, W]`` by summing over channels with their sign
(for the one-channel digits that is the map itself): methods whose sign carries meaning (Integrated Gradients,
guided backprop, LRP) keep it, and Saliency and SmoothGrad are absolute gradients by definition.

=====================  ==========================================================================================
name                   method
=====================  ==========================================================================================
``random``             uniform noise from a fixed seed (independent of the model and the image)
``saliency``           Captum ``Saliency``: absolute input gradient
``smoothgrad``         Captum ``NoiseTunnel(Saliency)``, 16 samples, noise std 0.15 x the image's value range
``integrated-gradients``  Captum ``IntegratedGradients``, 50 steps from a black (zero) image
``guided-backprop``    Captum ``GuidedBackprop`` (changes ``nn.ReLU`` modules only)
``lrp``                Captum ``LRP`` (epsilon rule) on a copy whose ``nn.Flatten`` modules are replaced by an
                       equivalent rule-free reshape and whose adaptive max pooling gets ``nn.MaxPool2d``'s epsilon
                       rule; models that combine tensors outside modules (e.g. residual additions) raise
                       :class:`MethodNotSupported`
``occlusion-8``        Captum ``Occlusion``, 8x8 window, stride 4, replaced by the image's per-channel mean
``occlusion-14``       Captum ``Occlusion``, 14x14 window, stride 7 (the paper's window sizes, unscaled; they are
                       the degradation tile sizes on 56x56 images)
``grad-cam``           Captum ``LayerGradCam`` at ``cam_layer`` (default: the last ``nn.Conv2d``), ReLU,
                       bilinear upsampling
``guided-grad-cam``    Captum ``GuidedGradCam`` at ``cam_layer``
``per-sample``         :class:`pyroflows.attribution.PerSampleBottleneck` at ``layer``, beta 10, statistics
                       re-estimated on ``data`` for every model (so on a randomised model too)
``readout``            the bundled readout bottleneck (bundled model only) or ``context.readout``, applied to the
                       given model's features
``input-bottleneck``   :class:`pyroflows.attribution.InputBottleneck` (InputIBA) with its layer prior at ``layer``
``occlusion``          Captum ``Occlusion`` over ``options['window']`` positions, stride 1 (sequences); for token
                       ids ``LayerFeatureAblation`` zeroing each token's embedding
``deeplift``           Captum ``DeepLift`` on a copy of the model (``LayerDeepLift`` on the embedding for tokens)
``gradient-x-input``   Captum ``InputXGradient`` (``LayerGradientXActivation`` on the embedding for tokens)
=====================  ==========================================================================================
"""

from __future__ import annotations

import copy
import inspect
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from captum.attr import Attribution
from torch import nn

from pyroflows.attribution.layout import is_token_input
from pyroflows.errors import DataError, PyroflowsError
from pyroflows.evaluation._utils import seeded

__all__ = [
    "AttributeFn",
    "MethodContext",
    "MethodNotSupported",
    "available_methods",
    "make_attribute_fn",
    "make_attribution",
    "register_method",
    "reduce_channels",
    "ConfiguredAttribution",
    "RandomAttribution",
    "readout_for_model",
    "DEFAULT_METHODS",
    "SEQUENCE_METHODS",
]

AttributeFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


class MethodNotSupported(PyroflowsError, TypeError):
    """An attribution method cannot handle this model (e.g. Captum's LRP and a residual addition)."""


@dataclass
class MethodContext:
    """What a method may need besides the model and the inputs.

    Attributes:
        layer: Dotted name of the bottleneck layer (``per-sample``, ``readout``).
        data: Images ``[M, C, H, W]`` to estimate the bottleneck's feature statistics on.
        cam_layer: Dotted name of the Grad-CAM layer (default: the last ``nn.Conv2d``).
        seed: Seed of the methods that draw random numbers (``random``, ``smoothgrad``, ``per-sample``).
        options: Extra keyword arguments for the method (e.g. ``beta`` for ``per-sample``, ``window`` for
            ``occlusion``, ``pad`` for the token baselines' padding id).
        channel_dim: Channel axis of the bottleneck layer's output (-1 for ``[N, L, C]``).
        padding_mask: The bottlenecks' ``padding_mask`` (an index into the forward arguments, or a function of the
            inputs and the forward arguments returning ``[N, L]``, True at padding).
        embedding: Dotted name of the embedding layer of token models (default: the first ``nn.Embedding``).
        readout: A trained :class:`~pyroflows.attribution.ReadoutBottleneck` for ``readout`` (default: the
            bundled one, for the bundled model only).
    """

    layer: str | None = None
    data: torch.Tensor | None = None
    cam_layer: str | None = None
    seed: int = 0
    options: dict[str, Any] = field(default_factory=dict)
    channel_dim: int = 1
    padding_mask: Any = None
    embedding: str | None = None
    readout: Any = None


_REGISTRY: dict[str, tuple[Callable[[nn.Module, MethodContext], Attribution], str]] = {}


class ConfiguredAttribution(Attribution):
    """A Captum attribution with its settings fixed: the registry's members, one contract for every method.

    ``attribute(inputs, target=None, additional_forward_args=None)`` runs ``method.attribute`` with the keyword
    arguments ``options(inputs)`` (window sizes, baselines or noise levels that depend on the inputs), under
    ``seed`` when given (the caller's random state is restored), and reduces the result to one value per input
    position, ``[N, *positions]``, with ``reduce``.

    Args:
        method: Any Captum ``Attribution`` (a bottleneck included).
        options: Keyword arguments, or a function of the inputs returning them.
        seed: Seed for methods that draw random numbers.
        reduce: ``reduce(result, inputs) -> [N, *positions]`` (default :func:`reduce_channels`).
        forward_args: Whether ``method.attribute`` takes ``additional_forward_args``.

    Example:
        >>> from captum.attr import Saliency
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> method = ConfiguredAttribution(Saliency(model), options={"abs": True})
        >>> method.attribute(torch.ones(2, 1, 2, 2), target=0).shape
        torch.Size([2, 2, 2])
    """

    def __init__(
        self,
        method: Any,
        *,
        options: dict[str, Any] | Callable[[torch.Tensor], dict[str, Any]] | None = None,
        seed: int | None = None,
        reduce: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        forward_args: bool = True,
    ) -> None:
        Attribution.__init__(self, getattr(method, "forward_func", None))
        self.method = method
        self.options = options or {}
        self.seed = seed
        self.reduce = reduce
        self.forward_args = forward_args

    def has_convergence_delta(self) -> bool:
        return False

    def attribute(
        self, inputs: torch.Tensor, target: Any = None, additional_forward_args: Any = None, **kwargs: Any
    ) -> torch.Tensor:
        """``[N, *positions]`` attributions of ``inputs`` for ``target``."""
        options = self.options(inputs) if callable(self.options) else dict(self.options)
        options.update(kwargs)
        if additional_forward_args is not None:
            if not self.forward_args:
                raise MethodNotSupported(f"{type(self.method).__name__} takes no additional_forward_args here")
            options["additional_forward_args"] = additional_forward_args
        with seeded(self.seed) if self.seed is not None else nullcontext(), _quiet_captum():
            result = self.method.attribute(inputs, target=target, **options)
        if isinstance(result, tuple):
            result = result[0]
        return (self.reduce(result, inputs) if self.reduce is not None else reduce_channels(result)).detach()


def register_method(
    name: str, factory: Callable[[nn.Module, MethodContext], Attribution], description: str, *, overwrite: bool = False
) -> None:
    """Add a method: ``factory(model, context)`` returns a Captum ``Attribution`` whose ``attribute(inputs,
    target=..., additional_forward_args=...)`` gives ``[N, *positions]`` maps (e.g. a :class:`ConfiguredAttribution`).

    Raises:
        ValueError: ``name`` is taken and ``overwrite`` is false.
    """
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"a method named {name!r} is already registered (pass overwrite=True to replace it)")
    _REGISTRY[name] = (factory, description)


def available_methods() -> dict[str, str]:
    """Registered method names and their one-line descriptions.

    Example:
        >>> "saliency" in available_methods()
        True
    """
    return {name: description for name, (_, description) in _REGISTRY.items()}


def _context(name: str, context: MethodContext | None, options: dict[str, Any]) -> MethodContext:
    if name not in _REGISTRY:
        raise DataError(f"unknown attribution method {name!r}; choose from {', '.join(_REGISTRY)}")
    context = copy.copy(context) if context is not None else MethodContext()
    context.options = {**context.options, **options}
    return context


def make_attribution(name: str, model: nn.Module, context: MethodContext | None = None, **options: Any) -> Attribution:
    """The registered method ``name`` for ``model``, as a Captum ``Attribution``.

    Raises:
        DataError: an unknown name.

    Example:
        >>> model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(32, 3))
        >>> method = make_attribution("saliency", model)
        >>> method.attribute(torch.rand(2, 1, 4, 4), target=torch.tensor([0, 2])).shape
        torch.Size([2, 4, 4])
    """
    context = _context(name, context, options)
    return _REGISTRY[name][0](model, context)


def make_attribute_fn(name: str, context: MethodContext | None = None, **options: Any) -> AttributeFn:
    """A registered method as ``attribute_fn(model, inputs, target) -> [N, *positions]``, built for each model it is
    given (so the sanity check's randomised copies get their own).

    Args:
        name: A name from :func:`available_methods`.
        context: Layer names, estimation data and seed; keyword ``options`` are merged into ``context.options``.

    Raises:
        DataError: An unknown name.

    Example:
        >>> model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(32, 3))
        >>> make_attribute_fn("saliency")(model, torch.rand(2, 1, 4, 4), torch.tensor([0, 2])).shape
        torch.Size([2, 4, 4])
    """
    context = _context(name, context, options)
    factory = _REGISTRY[name][0]

    def attribute_fn(model: nn.Module, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return factory(model, context).attribute(inputs, target=target).detach()

    return attribute_fn


def reduce_channels(attributions: torch.Tensor) -> torch.Tensor:
    """``[N, C, H, W] -> [N, H, W]`` and ``[N, C, L] -> [N, L]`` by the signed sum over channels (maps pass through).

    Example:
        >>> reduce_channels(torch.ones(2, 3, 4, 4)).shape
        torch.Size([2, 4, 4])
    """
    return attributions.sum(dim=1) if attributions.dim() in (3, 4) else attributions


def _modules(model: nn.Module) -> dict[str, nn.Module]:
    return dict(model.named_modules())


def _layer(model: nn.Module, name: str | None, what: str) -> nn.Module:
    modules = _modules(model)
    if name is None:
        convs = [n for n, m in modules.items() if isinstance(m, (nn.Conv2d, nn.Conv1d))]
        if not convs:
            raise MethodNotSupported(f"{what} needs a convolutional layer; the model has no nn.Conv2d")
        name = convs[-1]
    if name not in modules:
        raise DataError(f"unknown layer {name!r} for {what}; the model's layers are {[n for n in modules if n]}")
    return modules[name]


def _position_means(inputs: torch.Tensor) -> torch.Tensor:
    return inputs.mean(dim=tuple(range(2, inputs.ndim)), keepdim=True).expand_as(inputs).contiguous()


@contextmanager
def _quiet_captum() -> Iterator[None]:
    # Captum warns each call that it switched on requires_grad for the inputs, which is what we want.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*did not already require gradients.*")
        warnings.filterwarnings("ignore", message=".*Setting forward, backward hooks and attributes on non-linear.*")
        warnings.filterwarnings("ignore", message=".*Setting backward hooks on ReLU activations.*")
        warnings.filterwarnings("ignore", message=".*cannot be split at.*")
        with torch.enable_grad():
            yield


class RandomAttribution(Attribution):
    """Uniform noise ``[N, *positions]`` from a fixed seed, independent of the model and the inputs' values.

    Example:
        >>> RandomAttribution(nn.Identity(), seed=0).attribute(torch.zeros(2, 1, 3, 3)).shape
        torch.Size([2, 3, 3])
    """

    def __init__(self, forward_func: Callable, seed: int = 0) -> None:
        super().__init__(forward_func)
        self.seed = int(seed)

    def has_convergence_delta(self) -> bool:
        return False

    def attribute(self, inputs: torch.Tensor, target: Any = None, additional_forward_args: Any = None) -> torch.Tensor:
        """Noise shaped like the inputs' positions (``[N, L]`` for token ids)."""
        generator = torch.Generator().manual_seed(self.seed)
        shape = tuple(inputs.shape) if is_token_input(inputs) else (inputs.shape[0], *inputs.shape[2:])
        dtype = inputs.dtype if inputs.is_floating_point() else torch.get_default_dtype()
        return torch.rand(shape, generator=generator).to(device=inputs.device, dtype=dtype)


def _embedding(model: nn.Module, context: MethodContext) -> nn.Module:
    name = context.embedding
    if name is None:
        names = [n for n, m in model.named_modules() if isinstance(m, nn.Embedding)]
        if not names:
            raise MethodNotSupported("token inputs need an embedding layer (context.embedding)")
        name = names[0]
    return _layer(model, name, "a token method")


def _token_reduce(norm: bool) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Embedding attributions ``[N, L, C]`` to one value per token: the norm (gradients) or the signed sum."""

    def reduce(result: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        return result.norm(dim=-1) if norm else result.sum(-1)

    return reduce


def _abs_sum(result: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    return reduce_channels(result.abs())


class _ByInput(Attribution):
    """Chooses between a float-input and a token-input Captum method at each call (by the inputs' dtype)."""

    def __init__(self, model: nn.Module, dense: Callable[[], Attribution], tokens: Callable[[], Attribution]) -> None:
        super().__init__(model)
        self._dense, self._tokens = dense, tokens

    def has_convergence_delta(self) -> bool:
        return False

    def attribute(self, inputs: torch.Tensor, target: Any = None, additional_forward_args: Any = None, **kw: Any):
        method = self._tokens() if is_token_input(inputs) else self._dense()
        return method.attribute(inputs, target=target, additional_forward_args=additional_forward_args, **kw)


def _saliency(model: nn.Module, context: MethodContext) -> Attribution:
    from captum.attr import LayerGradientXActivation, Saliency

    return _ByInput(
        model,
        lambda: ConfiguredAttribution(Saliency(model), options={"abs": True}),
        lambda: ConfiguredAttribution(
            LayerGradientXActivation(model, _embedding(model, context), multiply_by_inputs=False),
            reduce=_token_reduce(norm=True),
        ),
    )


def _gradient_x_input(model: nn.Module, context: MethodContext) -> Attribution:
    from captum.attr import InputXGradient, LayerGradientXActivation

    return _ByInput(
        model,
        lambda: ConfiguredAttribution(InputXGradient(model)),
        lambda: ConfiguredAttribution(
            LayerGradientXActivation(model, _embedding(model, context)), reduce=_token_reduce(norm=False)
        ),
    )


def _integrated_gradients(model: nn.Module, context: MethodContext) -> Attribution:
    from captum.attr import IntegratedGradients, LayerIntegratedGradients

    steps = int(context.options.get("n_steps", 50))
    return _ByInput(
        model,
        lambda: ConfiguredAttribution(IntegratedGradients(model), options={"n_steps": steps}),
        lambda: ConfiguredAttribution(
            LayerIntegratedGradients(model, _embedding(model, context)),
            options=lambda x: {"n_steps": steps, "baselines": torch.full_like(x, int(context.options.get("pad", 0)))},
            reduce=_token_reduce(norm=False),
        ),
    )


def _deeplift(model: nn.Module, context: MethodContext) -> Attribution:
    from captum.attr import DeepLift, LayerDeepLift

    return _ByInput(
        model,
        lambda: ConfiguredAttribution(DeepLift(copy.deepcopy(model))),  # DeepLift rewires modules: on a copy
        lambda: _checked_token_deeplift(model, context, LayerDeepLift),
    )


def _checked_token_deeplift(model: nn.Module, context: MethodContext, layer_deeplift: Any) -> Attribution:
    clone = copy.deepcopy(model)
    names = {id(m): n for n, m in model.named_modules()}
    embedding = clone.get_submodule(names[id(_embedding(model, context))])
    return ConfiguredAttribution(
        layer_deeplift(clone, embedding),
        options=lambda x: {"baselines": torch.full_like(x, int(context.options.get("pad", 0)))},
        reduce=_token_reduce(norm=False),
    )


def _occlusion_window(window: int | None) -> Callable[[nn.Module, MethodContext], Attribution]:
    """Occlusion by a window over the positions (square for images), replaced by the input's per-channel mean."""

    def factory(model: nn.Module, context: MethodContext) -> Attribution:
        from captum.attr import LayerFeatureAblation, Occlusion

        size = int(context.options.get("window", 5)) if window is None else window
        per_eval = int(context.options.get("perturbations_per_eval", 128))

        def dense_options(x: torch.Tensor) -> dict[str, Any]:
            spatial = x.ndim - 2
            stride = max(1, size // 2) if window is not None else 1
            return {
                "sliding_window_shapes": (x.shape[1], *([size] * spatial)),
                "strides": (x.shape[1], *([stride] * spatial)),
                "baselines": _position_means(x),
                "perturbations_per_eval": per_eval,
            }

        def tokens() -> Attribution:
            # Token ids cannot be averaged: each token's embedding is zeroed in turn (one feature per position).
            def options(x: torch.Tensor) -> dict[str, Any]:
                dim = _embedding(model, context).embedding_dim
                mask = torch.arange(x.shape[1], device=x.device)[None, :, None].expand(1, x.shape[1], dim)
                return {
                    "layer_mask": mask,
                    "layer_baselines": 0.0,
                }  # one perturbation per pass: Captum expands no target here

            return ConfiguredAttribution(
                LayerFeatureAblation(model, _embedding(model, context)), options=options,
                reduce=lambda r, x: r[..., 0],
            )  # fmt: skip

        return _ByInput(model, lambda: ConfiguredAttribution(Occlusion(model), options=dense_options), tokens)

    return factory


def _smoothgrad(model: nn.Module, context: MethodContext) -> Attribution:
    from captum.attr import NoiseTunnel, Saliency

    def options(x: torch.Tensor) -> dict[str, Any]:
        spread = float(x.max() - x.min()) or 1.0
        return {
            "nt_type": "smoothgrad",
            "nt_samples": int(context.options.get("nt_samples", 16)),
            "stdevs": float(context.options.get("noise", 0.15)) * spread,
            "abs": True,
        }

    return ConfiguredAttribution(NoiseTunnel(Saliency(model)), options=options, seed=context.seed)


class _LRP(Attribution):
    """Captum's LRP on a copy it can run (see :func:`lrp_compatible_copy`), refusing models it would get wrong."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)

    def has_convergence_delta(self) -> bool:
        return False

    def attribute(self, inputs: torch.Tensor, target: Any = None, additional_forward_args: Any = None):
        from captum.attr import LRP

        blockers = _lrp_blockers(self.forward_func)
        if blockers:
            raise MethodNotSupported(
                f"Captum's LRP does not support this model: its forward applies {', '.join(blockers)} outside "
                "modules (e.g. a residual addition), where LRP has no rule"
            )
        clone = lrp_compatible_copy(self.forward_func)
        try:
            with _quiet_captum():
                result = LRP(clone).attribute(inputs.clone().requires_grad_(True), target=target)
        except (TypeError, AttributeError, RuntimeError) as exc:
            raise MethodNotSupported(f"Captum's LRP does not support this model: {exc}") from exc
        return reduce_channels(result).detach()


def _grad_cam(model: nn.Module, context: MethodContext) -> Attribution:
    from captum.attr import LayerAttribution, LayerGradCam

    layer = _layer(model, context.cam_layer, "Grad-CAM")

    def reduce(cam: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        mode = "bilinear" if inputs.ndim == 4 else "linear"
        return reduce_channels(LayerAttribution.interpolate(cam, tuple(inputs.shape[2:]), interpolate_mode=mode))

    return ConfiguredAttribution(LayerGradCam(model, layer), options={"relu_attributions": True}, reduce=reduce)


def _guided_grad_cam(model: nn.Module, context: MethodContext) -> Attribution:
    from captum.attr import GuidedGradCam

    return ConfiguredAttribution(GuidedGradCam(model, _layer(model, context.cam_layer, "guided Grad-CAM")))


def _bottleneck_options(cls: type, context: MethodContext) -> dict[str, Any]:
    accepted = inspect.signature(cls).parameters
    options = {"beta": 10.0, **{k: v for k, v in context.options.items() if k in accepted}}
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
        bottleneck = PerSampleBottleneck(model, context.layer, **_bottleneck_options(PerSampleBottleneck, context))
        bottleneck.estimate(context.data)
    return ConfiguredAttribution(bottleneck, seed=context.seed, reduce=_map_only)


def _input_bottleneck(model: nn.Module, context: MethodContext) -> Attribution:
    from pyroflows.attribution import InputBottleneck

    if context.layer is None or context.data is None:
        raise DataError("the input bottleneck needs context.layer and context.data (inputs to estimate on)")
    accepted = set(inspect.signature(InputBottleneck).parameters) | {"lr", "batch_size", "min_std", "graph_split"}
    options = {k: v for k, v in context.options.items() if k in accepted}
    if context.channel_dim != 1:
        options["channel_dim"] = context.channel_dim
    if context.padding_mask is not None:
        options["padding_mask"] = context.padding_mask
    with seeded(context.seed), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*cannot be split at.*")
        bottleneck = InputBottleneck(model, context.layer, **options).estimate(context.data)
    return ConfiguredAttribution(bottleneck, seed=context.seed, reduce=_map_only)


def _readout(model: nn.Module, context: MethodContext) -> Attribution:
    if context.readout is not None:
        return ConfiguredAttribution(readout_for_model(context.readout, model), reduce=_map_only)
    try:
        from pyroflows.zoo import load_bundled_readout
    except ImportError as exc:
        raise MethodNotSupported(f"the readout bottleneck is not available in this installation: {exc}") from exc
    try:
        readout = load_bundled_readout(model=model)
    except (TypeError, ValueError, KeyError, RuntimeError) as exc:
        raise MethodNotSupported(f"the bundled readout bottleneck fits only the bundled model: {exc}") from exc
    return ConfiguredAttribution(readout, reduce=_map_only)


def readout_for_model(readout: Any, model: nn.Module) -> Any:
    """A trained readout bottleneck applied to ``model``'s features (e.g. a randomised copy of its model): the same
    network and statistics, the layers looked up by name in ``model``."""
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


class _RuleFreeFlatten(nn.Module):
    """``nn.Flatten`` for Captum's LRP: the reshape happens in ``forward``, the only leaf is a no-op dropout, for
    which LRP passes relevance through unchanged (LRP has no rule for ``nn.Flatten`` itself)."""

    def __init__(self, flatten: nn.Flatten) -> None:
        super().__init__()
        self.start_dim, self.end_dim = flatten.start_dim, flatten.end_dim
        self.passthrough = nn.Dropout(p=0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.passthrough(x.flatten(self.start_dim, self.end_dim))


_ADAPTIVE_MAX_POOLS = (nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)


def lrp_compatible_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` that Captum's LRP can run: every ``nn.Flatten`` is replaced by a rule-free reshape,
    and adaptive max pooling gets the epsilon rule Captum gives ``nn.MaxPool*`` (it has no default for it)."""
    from captum.attr._utils.lrp_rules import EpsilonRule

    clone = copy.deepcopy(model)
    for module in clone.modules():
        if isinstance(module, _ADAPTIVE_MAX_POOLS) and not hasattr(module, "rule"):
            module.rule = EpsilonRule()
    for name, module in list(clone.named_modules()):
        if isinstance(module, nn.Flatten):
            parent_name, _, child = name.rpartition(".")
            parent = clone.get_submodule(parent_name) if parent_name else clone
            setattr(parent, child, _RuleFreeFlatten(module))
    return clone


_RESHAPES = {"flatten", "reshape", "view", "contiguous", "size", "squeeze", "unsqueeze"}


def _lrp_blockers(model: nn.Module) -> list[str]:
    """Tensor operations outside modules that Captum's LRP would silently propagate relevance through wrongly
    (a residual ``x + f(x)``, a functional ``F.relu``...): LRP's rules attach to modules only. Models that
    ``torch.fx`` cannot trace are not inspected."""
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception:  # noqa: BLE001 - any tracing failure just means we cannot inspect the graph
        return []
    blockers = []
    for node in graph.nodes:
        if node.op in ("call_function", "call_method"):
            name = getattr(node.target, "__name__", str(node.target))
            if name not in _RESHAPES and name != "getattr":
                blockers.append(name)
    return sorted(set(blockers))


def _register_defaults() -> None:
    from captum.attr import GuidedBackprop

    register_method("random", lambda m, c: RandomAttribution(m, c.seed), "uniform noise from a fixed seed")
    register_method("saliency", _saliency, "absolute input gradient (Captum Saliency; embedding-gradient norm)")
    register_method("smoothgrad", _smoothgrad, "SmoothGrad of Saliency")
    register_method(
        "integrated-gradients", _integrated_gradients,
        "Integrated Gradients from a zero input (LayerIntegratedGradients from padding for tokens), 50 steps",
    )  # fmt: skip
    register_method("guided-backprop", lambda m, c: ConfiguredAttribution(GuidedBackprop(m)), "guided backpropagation")
    register_method("lrp", lambda m, c: _LRP(m), "LRP, epsilon rule (Captum)")
    for window in (8, 14):
        register_method(
            f"occlusion-{window}", _occlusion_window(window),
            f"occlusion, {window}x{window} window, stride {window // 2}, mean-replaced",
        )  # fmt: skip
    register_method(
        "occlusion", _occlusion_window(None),
        "occlusion, window of options['window'] (5) positions, stride 1 (an embedding zeroed per token)",
    )  # fmt: skip
    register_method("deeplift", _deeplift, "DeepLift from a zero input (LayerDeepLift from padding for tokens)")
    register_method("gradient-x-input", _gradient_x_input, "gradient times input (on the embedding for tokens)")
    register_method("grad-cam", _grad_cam, "Grad-CAM at the last conv layer, upsampled")
    register_method("guided-grad-cam", _guided_grad_cam, "guided Grad-CAM at the last conv layer")
    register_method("per-sample", _per_sample, "per-sample information bottleneck (beta 10)")
    register_method("readout", _readout, "readout information bottleneck (bundled weights, or context.readout)")
    register_method("input-bottleneck", _input_bottleneck, "input bottleneck (InputIBA) with a layer prior")


_register_defaults()

#: The methods of the paper's Table 1, in its order (bottlenecks last).
DEFAULT_METHODS: tuple[str, ...] = (
    "random",
    "occlusion-8",
    "occlusion-14",
    "saliency",
    "smoothgrad",
    "integrated-gradients",
    "guided-backprop",
    "lrp",
    "grad-cam",
    "guided-grad-cam",
    "readout",
    "per-sample",
)

#: The methods of the sequence tasks (``pyroflows evaluate --task motifs|keywords``).
SEQUENCE_METHODS: tuple[str, ...] = (
    "random",
    "saliency",
    "gradient-x-input",
    "integrated-gradients",
    "deeplift",
    "occlusion",
    "readout",
    "per-sample",
    "input-bottleneck",
)
