"""One registry of attribution methods, the bottlenecks and the Captum baselines, behind one signature.

Every method is built by name into an ``attribute_fn(model, inputs, target) -> [N, H, W]`` that takes the model as
an argument, so the same function attributes the intact model and the randomised copies of the sanity check.
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
                       re-estimated on ``data`` at every call (so on a randomised model too)
``readout``            the bundled readout bottleneck (bundled model only), applied to the given model's features
=====================  ==========================================================================================
"""

from __future__ import annotations

import copy
import inspect
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from pyroflows.errors import DataError, PyroflowsError
from pyroflows.evaluation._utils import seeded

__all__ = [
    "AttributeFn",
    "MethodContext",
    "MethodNotSupported",
    "available_methods",
    "make_attribute_fn",
    "register_method",
    "reduce_channels",
    "DEFAULT_METHODS",
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
        options: Extra keyword arguments for the method (e.g. ``beta`` for ``per-sample``).
    """

    layer: str | None = None
    data: torch.Tensor | None = None
    cam_layer: str | None = None
    seed: int = 0
    options: dict[str, Any] = field(default_factory=dict)


_REGISTRY: dict[str, tuple[Callable[[MethodContext], AttributeFn], str]] = {}


def register_method(
    name: str, build: Callable[[MethodContext], AttributeFn], description: str, *, overwrite: bool = False
) -> None:
    """Add a method to the registry: ``build(context)`` returns its ``attribute_fn(model, inputs, target)``.

    Raises:
        ValueError: ``name`` is taken and ``overwrite`` is false.
    """
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"a method named {name!r} is already registered (pass overwrite=True to replace it)")
    _REGISTRY[name] = (build, description)


def available_methods() -> dict[str, str]:
    """Registered method names and their one-line descriptions.

    Example:
        >>> "saliency" in available_methods()
        True
    """
    return {name: description for name, (_, description) in _REGISTRY.items()}


def make_attribute_fn(name: str, context: MethodContext | None = None, **options: Any) -> AttributeFn:
    """Build a registered method's ``attribute_fn(model, inputs, target) -> [N, H, W]``.

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
    if name not in _REGISTRY:
        raise DataError(f"unknown attribution method {name!r}; choose from {', '.join(_REGISTRY)}")
    context = copy.copy(context) if context is not None else MethodContext()
    context.options = {**context.options, **options}
    return _REGISTRY[name][0](context)


def reduce_channels(attributions: torch.Tensor) -> torch.Tensor:
    """``[N, C, H, W] -> [N, H, W]`` by the signed sum over channels (``[N, H, W]`` passes through).

    Example:
        >>> reduce_channels(torch.ones(2, 3, 4, 4)).shape
        torch.Size([2, 4, 4])
    """
    return attributions.sum(dim=1) if attributions.dim() == 4 else attributions


def _modules(model: nn.Module) -> dict[str, nn.Module]:
    return dict(model.named_modules())


def _layer(model: nn.Module, name: str | None, what: str) -> nn.Module:
    modules = _modules(model)
    if name is None:
        convs = [n for n, m in modules.items() if isinstance(m, nn.Conv2d)]
        if not convs:
            raise MethodNotSupported(f"{what} needs a convolutional layer; the model has no nn.Conv2d")
        name = convs[-1]
    if name not in modules:
        raise DataError(f"unknown layer {name!r} for {what}; the model's layers are {[n for n in modules if n]}")
    return modules[name]


def _image_means(inputs: torch.Tensor) -> torch.Tensor:
    return inputs.mean(dim=(2, 3), keepdim=True).expand_as(inputs).contiguous()


@contextmanager
def _quiet_captum() -> Iterator[None]:
    # Captum warns each call that it switched on requires_grad for the inputs, which is what we want.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*did not already require gradients.*")
        warnings.filterwarnings("ignore", message=".*Setting forward, backward hooks and attributes on non-linear.*")
        warnings.filterwarnings("ignore", message=".*Setting backward hooks on ReLU activations.*")
        with torch.enable_grad():
            yield


def _captum(build: Callable[[nn.Module, MethodContext], Any], call: Callable[..., torch.Tensor]):
    def factory(context: MethodContext) -> AttributeFn:
        def attribute_fn(model: nn.Module, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            method = build(model, context)
            with _quiet_captum():
                result = call(method, inputs, target, context)
            return reduce_channels(result).detach()

        return attribute_fn

    return factory


def _random(context: MethodContext) -> AttributeFn:
    def attribute_fn(model: nn.Module, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        generator = torch.Generator().manual_seed(context.seed)
        n, _, h, w = inputs.shape
        return torch.rand(n, h, w, generator=generator).to(device=inputs.device, dtype=inputs.dtype)

    return attribute_fn


def _smoothgrad(method: Any, inputs: torch.Tensor, target: torch.Tensor, context: MethodContext) -> torch.Tensor:
    from captum.attr import NoiseTunnel

    spread = float(inputs.max() - inputs.min()) or 1.0
    with seeded(context.seed):
        return NoiseTunnel(method).attribute(
            inputs,
            nt_type="smoothgrad",
            nt_samples=int(context.options.get("nt_samples", 16)),
            stdevs=float(context.options.get("noise", 0.15)) * spread,
            target=target,
            abs=True,
        )


def _occlusion(window: int) -> Callable[..., torch.Tensor]:
    def call(method: Any, inputs: torch.Tensor, target: torch.Tensor, context: MethodContext) -> torch.Tensor:
        channels = inputs.shape[1]
        stride = max(1, window // 2)
        return method.attribute(
            inputs,
            sliding_window_shapes=(channels, window, window),
            strides=(channels, stride, stride),
            baselines=_image_means(inputs),
            target=target,
            perturbations_per_eval=int(context.options.get("perturbations_per_eval", 128)),
        )

    return call


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


def _lrp(context: MethodContext) -> AttributeFn:
    from captum.attr import LRP

    def attribute_fn(model: nn.Module, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        blockers = _lrp_blockers(model)
        if blockers:
            raise MethodNotSupported(
                f"Captum's LRP does not support this model: its forward applies {', '.join(blockers)} outside "
                "modules (e.g. a residual addition), where LRP has no rule"
            )
        clone = lrp_compatible_copy(model)
        try:
            with _quiet_captum():
                result = LRP(clone).attribute(inputs.clone().requires_grad_(True), target=target)
        except (TypeError, AttributeError, RuntimeError) as exc:
            raise MethodNotSupported(f"Captum's LRP does not support this model: {exc}") from exc
        return reduce_channels(result).detach()

    return attribute_fn


def _grad_cam(context: MethodContext) -> AttributeFn:
    from captum.attr import LayerAttribution, LayerGradCam

    def attribute_fn(model: nn.Module, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        layer = _layer(model, context.cam_layer, "Grad-CAM")
        with _quiet_captum():
            cam = LayerGradCam(model, layer).attribute(inputs, target=target, relu_attributions=True)
        cam = LayerAttribution.interpolate(cam, tuple(inputs.shape[-2:]), interpolate_mode="bilinear")
        return reduce_channels(cam).detach()

    return attribute_fn


def _per_sample(context: MethodContext) -> AttributeFn:
    def attribute_fn(model: nn.Module, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        from pyroflows.attribution import PerSampleBottleneck

        if context.layer is None or context.data is None:
            raise DataError("the per-sample bottleneck needs context.layer and context.data (images to estimate on)")
        accepted = inspect.signature(PerSampleBottleneck).parameters
        options = {"beta": 10.0, **{k: v for k, v in context.options.items() if k in accepted}}
        with seeded(context.seed):
            bottleneck = PerSampleBottleneck(model, context.layer, **options).estimate(context.data)
            return bottleneck.attribute(inputs, target).detach()

    return attribute_fn


def _readout(context: MethodContext) -> AttributeFn:
    def attribute_fn(model: nn.Module, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        try:
            from pyroflows.attribution.models import load_bundled_readout
        except ImportError as exc:
            raise MethodNotSupported(f"the readout bottleneck is not available in this installation: {exc}") from exc
        try:
            readout = load_bundled_readout(model=model)
        except (TypeError, ValueError, KeyError, RuntimeError) as exc:
            raise MethodNotSupported(f"the bundled readout bottleneck fits only the bundled model: {exc}") from exc
        return readout.attribute(inputs, target).detach()

    return attribute_fn


def _register_defaults() -> None:
    from captum.attr import GuidedBackprop, GuidedGradCam, IntegratedGradients, Occlusion, Saliency

    register_method("random", _random, "uniform noise from a fixed seed (independent of model and image)")
    register_method(
        "saliency",
        _captum(lambda m, c: Saliency(m), lambda a, x, t, c: a.attribute(x, target=t, abs=True)),
        "absolute input gradient (Captum Saliency)",
    )
    register_method("smoothgrad", _captum(lambda m, c: Saliency(m), _smoothgrad), "SmoothGrad of Saliency")
    register_method(
        "integrated-gradients",
        _captum(
            lambda m, c: IntegratedGradients(m),
            lambda a, x, t, c: a.attribute(x, target=t, n_steps=int(c.options.get("n_steps", 50))),
        ),
        "Integrated Gradients from a black image, 50 steps",
    )
    register_method(
        "guided-backprop",
        _captum(lambda m, c: GuidedBackprop(m), lambda a, x, t, c: a.attribute(x, target=t)),
        "guided backpropagation",
    )
    register_method("lrp", _lrp, "LRP, epsilon rule (Captum)")
    for window in (8, 14):
        register_method(
            f"occlusion-{window}",
            _captum(lambda m, c: Occlusion(m), _occlusion(window)),
            f"occlusion, {window}x{window} window, stride {window // 2}, mean-replaced",
        )
    register_method("grad-cam", _grad_cam, "Grad-CAM at the last conv layer, upsampled bilinearly")
    register_method(
        "guided-grad-cam",
        _captum(
            lambda m, c: GuidedGradCam(m, _layer(m, c.cam_layer, "guided Grad-CAM")),
            lambda a, x, t, c: a.attribute(x, target=t),
        ),
        "guided Grad-CAM at the last conv layer",
    )
    register_method("per-sample", _per_sample, "per-sample information bottleneck (beta 10)")
    register_method("readout", _readout, "readout information bottleneck (bundled weights)")


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
