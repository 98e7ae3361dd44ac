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

from typing import Any

import pyro
import torch
from pyro import poutine
from pyro.infer import SVI
from pyro.optim import PyroOptim
from torch import nn
from tqdm.auto import tqdm

from pyroflows.attribution.base import BottleneckBase, BottleneckCall, PaddingMask, forward_args
from pyroflows.attribution.capacity import lambda_from_alpha
from pyroflows.attribution.distributions import MaskedFeatureNormal
from pyroflows.attribution.elbo import ClosedFormKLELBO
from pyroflows.attribution.layers import frozen
from pyroflows.validation import check_float, check_int

# BottleneckBase, BottleneckCall, MaskedFeatureNormal and ClosedFormKLELBO lived here before the split by concept
# (now pyroflows.attribution.base, .distributions and .elbo); they are re-exported so old imports keep working.
__all__ = ["PerSampleBottleneck", "BottleneckBase", "BottleneckCall", "MaskedFeatureNormal", "ClosedFormKLELBO"]


class PerSampleBottleneck(BottleneckBase):
    r"""Attribution by a per-sample information bottleneck, optimised with ``pyro.infer.SVI``.

    Args:
        model: A classifier returning logits; its weights are frozen and its mode set to eval during attribution,
            and both are restored afterwards (also after an error). Nothing is inserted into the model: the layer
            is reached by a traced graph split or forward hooks (see
            :class:`~pyroflows.attribution.layers.LayerSplit`).
        layer: Dotted module name (``"features.4"``) or the module itself.
        beta: Information-loss weight :math:`\beta` multiplying the mean KL per element (10, the paper's best).
        steps: Adam steps per batch of images (10).
        lr: Adam learning rate (1).
        batch_size: Noise copies of each image per step (10), as vectorised particles of the ELBO.
        sigma: Blur width on :math:`\lambda` in feature cells (1; the kernel has ``2 round(2 sigma) + 1`` taps).
        min_std: Lower bound on :math:`\sigma_R` (0.01).
        initial_alpha: Initial :math:`\alpha` (5: :math:`\lambda \approx 0.993`, almost everything passes).
        active_threshold: Units firing in at most this fraction of estimation samples are inactive (0.01).
        graph_split: Split the model so the part before the layer runs once per image (default); ``False``
            re-runs the whole model at every step like the official implementation (for comparison).
        optimize_tail: With the graph split, run the tail (10 times per image, for every noise copy) as a new
            module built for it at each ``attribute`` call: eval-mode BatchNorm folded into the preceding
            convolution, ReLUs moved after max-pooling, 4-d feature maps in the ``channels_last`` memory format
            (see :func:`~pyroflows.attribution.tail.optimize_tail`). The maps are the same up to float rounding;
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
        r"""Optimise one :math:`\alpha` per image; returns :math:`R`, :math:`1 - \lambda` and the call."""
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
                svi = SVI(model, guide, PyroOptim(torch.optim.Adam, {"lr": self.lr}), elbo)  # = pyro.optim.Adam
                n = features.shape[0]
                self.history = []
                for _ in tqdm(range(self.steps), disable=not self.progress, desc="bottleneck"):
                    self.history.append(svi.step(features, target) / n)
                alpha = pyro.param("alpha").detach()
            return features, self._one_minus_lambda(alpha), call

    def _one_minus_lambda(self, alpha: torch.Tensor) -> torch.Tensor:
        r""":math:`1 - \lambda`, with :math:`\lambda = p \cdot \mathrm{blur}(\mathrm{sigmoid}(\alpha))`.

        Here :math:`p \in [0, 1]` is a prior mask (``lambda_prior``, set by
        :class:`~pyroflows.attribution.InputBottleneck`).
        """
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
        r"""The optimised bottleneck's information per element of the layer's output, in bits.

        All images are optimised together, each with its own :math:`\alpha`; the maps equal those of one image
        at a time under the same seed (up to floating-point rounding).

        Args:
            inputs: ``[N, ...]`` inputs of the model.
            target: Class index (int) or ``[N]`` indices; ``None`` uses the model's prediction.
            additional_forward_args: Further arguments of the model's forward.

        Returns:
            ``[N, C, *positions]`` non-negative capacity, channels first (zero for inactive units).
        """
        return self._capacity_call(inputs, target, forward_args(additional_forward_args))[0]
