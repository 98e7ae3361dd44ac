r"""An input-level information bottleneck whose prior is a layer bottleneck's map (InputIBA, Zhang et al., 2021).

A layer bottleneck's map is as coarse as the layer: after a 9-wide convolution a 7-base motif is smeared over about
15 positions. InputIBA puts a second bottleneck on the input itself,

.. math:: Z_{\mathrm{in}} = \lambda_{\mathrm{in}} x + (1 - \lambda_{\mathrm{in}}) \varepsilon, \qquad
   \varepsilon \sim \mathcal N(\mu_x, \sigma_x^2),

and lets the layer bottleneck's result guide it. Here the guidance is a prior mask: the layer bottleneck's map on the
input's positions, divided by its maximum per sample, :math:`p \in [0, 1]`, multiplies the input mask,
:math:`\lambda_{\mathrm{in}} = p \cdot \mathrm{blur}(\mathrm{sigmoid}(\alpha_{\mathrm{in}}))`, so the input
bottleneck only passes what the layer bottleneck found relevant and sharpens it to single positions. (The paper
learns the input bottleneck's marginal with a GAN trained on the layer bottleneck's output; the prior mask is a
simpler stand-in with the same role, stated here so the difference is clear.) Both stages are Pyro model/guide pairs
optimised by SVI (:class:`~pyroflows.attribution.PerSampleBottleneck`).

For token ids the "input" is the output of the model's embedding module (``input_layer``, found automatically as the
first ``nn.Embedding``); for float inputs it is the input tensor itself.

| Fine-Grained Neural Network Explanation by Identifying Input Features with Predictive Information
  (Zhang et al., NeurIPS 2021)

Example:
    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Conv1d(4, 8, 5), nn.ReLU(), nn.AdaptiveMaxPool1d(1), nn.Flatten(), nn.Linear(8, 2))
    >>> data = torch.randn(64, 4, 30)
    >>> bottleneck = InputBottleneck(model, "1", steps=2, input_steps=2).estimate(data)
    >>> bottleneck.attribute(torch.randn(3, 4, 30), target=1).shape
    torch.Size([3, 30])
"""

from __future__ import annotations

from typing import Any

import torch
from captum.attr import Attribution
from captum.log import log_usage
from torch import nn

from pyroflows.attribution.base import PaddingMask, forward_args
from pyroflows.attribution.layout import is_token_input
from pyroflows.attribution.per_sample import PerSampleBottleneck
from pyroflows.errors import DataError

__all__ = ["InputBottleneck"]


class _WithInputLayer(nn.Module):
    """``model`` behind an identity module named ``input``, so a bottleneck can sit on the input itself."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.input = nn.Identity()
        self.model = model

    def forward(self, x: torch.Tensor, *args: Any) -> torch.Tensor:
        return self.model(self.input(x), *args)


def _first_embedding(model: nn.Module) -> str | None:
    for name, module in model.named_modules():
        if isinstance(module, nn.Embedding):
            return name
    return None


class InputBottleneck(Attribution):
    """InputIBA: a per-sample bottleneck on the input, its mask bounded by a layer bottleneck's map.

    Args:
        model: The classifier (not modified).
        layer: The layer of the first, feature-level bottleneck.
        input_layer: For token inputs, the module whose output is the bottleneck's "input" (default: the first
            ``nn.Embedding``); ``None`` for float inputs puts the bottleneck on the input tensor.
        beta: Information weight of the layer bottleneck (10).
        input_beta: Information weight of the input bottleneck (10).
        steps: Optimisation steps of the layer bottleneck (10).
        input_steps: Optimisation steps of the input bottleneck (20).
        sigma: Blur of the layer bottleneck's mask in feature cells (1).
        input_sigma: Blur of the input mask in input positions (0: single positions can be picked).
        channel_dim: Channel axis of ``layer``'s output (1; -1 for ``[N, L, C]``).
        input_channel_dim: Channel axis of the input-level features (1 for ``[N, C, L]`` inputs; an embedding's
            output ``[N, L, C]`` uses -1, the default for token inputs).
        padding_mask: Index into ``additional_forward_args`` of a boolean ``[N, L]`` padding mask, or a function
            ``(inputs, args) -> [N, L]``.
        tokens: Whether the inputs are token ids (default: the model has an ``nn.Embedding``).
        **options: Further :class:`PerSampleBottleneck` options for both stages (``lr``, ``batch_size``,
            ``min_std``, ``graph_split``...).

    Attributes:
        layer_bottleneck: The feature-level :class:`PerSampleBottleneck`.
        input_bottleneck: The input-level one.
    """

    def __init__(
        self,
        model: nn.Module,
        layer: str | nn.Module,
        *,
        input_layer: str | None = None,
        beta: float = 10.0,
        input_beta: float = 10.0,
        steps: int = 10,
        input_steps: int = 20,
        sigma: float = 1.0,
        input_sigma: float = 0.0,
        channel_dim: int = 1,
        input_channel_dim: int | None = None,
        padding_mask: PaddingMask | None = None,
        tokens: bool | None = None,
        **options: Any,
    ) -> None:
        Attribution.__init__(self, model)
        self.model = model
        self.layer_bottleneck = PerSampleBottleneck(
            model, layer, beta=beta, steps=steps, sigma=sigma, channel_dim=channel_dim, padding_mask=padding_mask,
            **options,
        )  # fmt: skip
        embedding = input_layer if input_layer is not None else _first_embedding(model)
        self.tokens = bool(embedding is not None) if tokens is None else bool(tokens)
        if self.tokens:
            if embedding is None:
                raise DataError("token inputs need input_layer: the embedding whose output the input bottleneck masks")
            target_model, target_layer = model, embedding
            default_dim = -1
        else:
            target_model, target_layer = _WithInputLayer(model), "input"
            default_dim = 1
        self.input_layer = target_layer
        self.input_bottleneck = PerSampleBottleneck(
            target_model, target_layer, beta=input_beta, steps=input_steps, sigma=input_sigma,
            channel_dim=default_dim if input_channel_dim is None else input_channel_dim, padding_mask=padding_mask,
            # The input stage's tail is the whole model: re-running it is the split's cost too, and quiet.
            **{k: v for k, v in options.items() if k not in ("optimize_tail", "graph_split")},
            graph_split=False,
        )  # fmt: skip

    def has_convergence_delta(self) -> bool:
        """No convergence delta (Captum's ``NoiseTunnel`` asks)."""
        return False

    @property
    def multiplies_by_inputs(self) -> bool:
        """Captum's flag: the maps are not multiplied by the inputs."""
        return False

    def estimate(self, data: Any, *, max_samples: int | None = None, additional_forward_args: Any = None):
        """Estimate both stages' statistics on ``data`` (see :meth:`PerSampleBottleneck.estimate`); returns ``self``."""
        kw = {"max_samples": max_samples, "additional_forward_args": additional_forward_args}
        self.layer_bottleneck.estimate(data, **kw)
        self.input_bottleneck.estimate(data, **kw)
        return self

    def prior(self, inputs: torch.Tensor, target: Any = None, additional_forward_args: Any = None) -> torch.Tensor:
        """The layer bottleneck's map on the input's positions, divided by its maximum: ``[N, *positions]``."""
        maps = self.layer_bottleneck.attribute(inputs, target, additional_forward_args)
        peak = maps.flatten(1).amax(1).clamp_min(torch.finfo(maps.dtype).tiny)
        return maps / peak.view(-1, *([1] * (maps.ndim - 1)))

    @log_usage()
    def attribute(
        self,
        inputs: torch.Tensor | tuple[torch.Tensor],
        target: Any = None,
        additional_forward_args: Any = None,
        *,
        output: str = "map",
    ) -> torch.Tensor | tuple[torch.Tensor]:
        """Input-level maps in bits per input position (Captum's ``attribute`` contract).

        Args:
            inputs: ``[N, C, *positions]`` floats, ``[N, L]`` token ids, or a one-tensor tuple of either.
            target: Class index or one per input; ``None``: the model's prediction.
            additional_forward_args: Further forward arguments (e.g. a padding mask).
            output: ``"map"`` (``[N, *positions]``) or ``"input"`` (shaped like the inputs).

        Returns:
            Non-negative maps (a tuple if ``inputs`` was one).
        """
        is_tuple = isinstance(inputs, tuple)
        x = inputs[0] if is_tuple else inputs
        if is_tuple and len(inputs) != 1:
            raise DataError(f"an input bottleneck attributes one input tensor; got a tuple of {len(inputs)}")
        x = torch.as_tensor(x)
        if is_token_input(x) != self.tokens:
            kind = "token ids" if is_token_input(x) else "float inputs"
            raise DataError(f"this InputBottleneck was built for {'token ids' if self.tokens else 'float inputs'}, "
                            f"got {kind}")  # fmt: skip
        args = forward_args(additional_forward_args)
        if target is None:
            with torch.no_grad():
                target = self.model(x, *args).argmax(-1)
        prior = self.prior(x, target, args)
        self.input_bottleneck.lambda_prior = prior.unsqueeze(1)  # one prior per position, for every channel
        try:
            result = self.input_bottleneck.attribute(x, target, args, output=output)
        finally:
            self.input_bottleneck.lambda_prior = None
        return (result,) if is_tuple else result
