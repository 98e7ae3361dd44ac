"""Captum's attribution methods as registry members, each with the settings of the IBA paper's comparison.

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
``occlusion``          Captum ``Occlusion`` over ``options['window']`` positions, stride 1 (sequences); for token
                       ids ``LayerFeatureAblation`` zeroing each token's embedding
``deeplift``           Captum ``DeepLift`` on a copy of the model (``LayerDeepLift`` on the embedding for tokens)
``gradient-x-input``   Captum ``InputXGradient`` (``LayerGradientXActivation`` on the embedding for tokens)
=====================  ==========================================================================================

Token-id inputs ``[N, L]`` are attributed on the embedding layer (``context.embedding``, default the first
``nn.Embedding``), one value per token. The bottlenecks are in :mod:`~pyroflows.evaluation.bottleneck_methods`, LRP
in :mod:`~pyroflows.evaluation.lrp`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from captum.attr import Attribution
from torch import nn

from pyroflows.attribution.layout import is_token_input
from pyroflows.errors import DataError
from pyroflows.evaluation.lrp import LRPAttribution
from pyroflows.evaluation.methods import (
    ConfiguredAttribution,
    MethodContext,
    MethodNotSupported,
    reduce_channels,
    register_method,
)

__all__ = ["RandomAttribution"]


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
        """Captum's flag: no convergence delta."""
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
                embedding = _embedding(model, context)
                dim = getattr(embedding, "embedding_dim", None)
                if not isinstance(dim, int):
                    raise MethodNotSupported(
                        f"token occlusion needs an embedding layer with embedding_dim, got {type(embedding).__name__}"
                    )
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


def _register() -> None:
    from captum.attr import GuidedBackprop

    register_method("random", lambda m, c: RandomAttribution(m, c.seed), "uniform noise from a fixed seed")
    register_method("saliency", _saliency, "absolute input gradient (Captum Saliency; embedding-gradient norm)")
    register_method("smoothgrad", _smoothgrad, "SmoothGrad of Saliency", options=("nt_samples", "noise"))
    register_method(
        "integrated-gradients", _integrated_gradients,
        "Integrated Gradients from a zero input (LayerIntegratedGradients from padding for tokens), 50 steps",
        options=("n_steps", "pad"),
    )  # fmt: skip
    register_method("guided-backprop", lambda m, c: ConfiguredAttribution(GuidedBackprop(m)), "guided backpropagation")
    register_method("lrp", lambda m, c: LRPAttribution(m), "LRP, epsilon rule (Captum)")
    for window in (8, 14):
        register_method(
            f"occlusion-{window}", _occlusion_window(window),
            f"occlusion, {window}x{window} window, stride {window // 2}, mean-replaced",
            options=("perturbations_per_eval",),
        )  # fmt: skip
    register_method(
        "occlusion", _occlusion_window(None),
        "occlusion, window of options['window'] (5) positions, stride 1 (an embedding zeroed per token)",
        options=("window", "perturbations_per_eval"),
    )  # fmt: skip
    register_method(
        "deeplift", _deeplift, "DeepLift from a zero input (LayerDeepLift from padding for tokens)", options=("pad",)
    )
    register_method("gradient-x-input", _gradient_x_input, "gradient times input (on the embedding for tokens)")
    register_method("grad-cam", _grad_cam, "Grad-CAM at the last conv layer, upsampled")
    register_method("guided-grad-cam", _guided_grad_cam, "guided Grad-CAM at the last conv layer")


_register()
