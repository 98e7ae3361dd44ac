r"""Cascading model-parameter randomisation: the sanity check of Adebayo et al. (2018) as the IBA paper runs it.

The layers that hold parameters are re-initialised one after another from the output backwards, cumulatively, on
a deep copy of the model (the caller's model is never touched). After each step the attribution is recomputed with
the caller's ``attribute_fn(model, inputs, target)`` and compared with the original map by SSIM. A method whose maps
explain the model must change as its weights are destroyed, so its SSIM falls with depth; a method whose maps stay
similar (an edge detector, a fixed random map) fails the check.

SSIM is scikit-image's ``structural_similarity`` with ``data_range=1`` on maps each min-max normalised to
:math:`[0, 1]`, :math:`\hat a = (a - \min a) / (\max a - \min a)` (a constant map becomes all zeros), so the
comparison sees the maps' shapes, not their scales, and signed maps keep their sign structure.

Methods that depend on the model through more than its forward pass must rebuild that dependence inside
``attribute_fn``: a per-sample bottleneck re-estimates its feature statistics on the randomised model.

| Sanity Checks for Saliency Maps (Adebayo et al., 2018)
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from skimage.metrics import structural_similarity
from torch import nn
from tqdm.auto import tqdm

from pyroflows.errors import DataError
from pyroflows.evaluation._utils import check_inputs_and_maps, seeded

__all__ = ["SanityCheck", "cascading_randomization", "randomizable_layers", "map_ssim", "minmax_normalize"]

AttributeFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class SanityCheck:
    """Result of :func:`cascading_randomization`.

    Attributes:
        layers: Names of the re-initialised layers, in the order they were re-initialised (output first).
        ssim: ``[N, L]``; column ``k`` compares the original map with the map after re-initialising
            ``layers[: k + 1]``.
        original: ``[N, H, W]`` maps of the intact model.
        maps: ``[L, N, H, W]`` maps after each step.
    """

    layers: list[str]
    ssim: torch.Tensor
    original: torch.Tensor
    maps: torch.Tensor

    def mean(self) -> torch.Tensor:
        """``[L]`` SSIM averaged over images."""
        return self.ssim.mean(dim=0)


def randomizable_layers(model: nn.Module) -> list[str]:
    """Dotted names of the modules that own parameters, in registration order (input to output).

    Example:
        >>> randomizable_layers(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(3)))
        ['0', '3']
    """
    return [name for name, module in model.named_modules() if name and any(True for _ in module.parameters(False))]


def minmax_normalize(maps: torch.Tensor) -> torch.Tensor:
    """Scale each map of ``[N, H, W]`` to ``[0, 1]``; constant maps become zeros.

    Example:
        >>> minmax_normalize(torch.tensor([[[1.0, 3.0]], [[2.0, 2.0]]]))
        tensor([[[0., 1.]],
        <BLANKLINE>
                [[0., 0.]]])
    """
    flat = maps.flatten(1)
    low, high = flat.amin(1), flat.amax(1)
    span = (high - low).clamp_min(torch.finfo(maps.dtype).tiny)
    scaled = (flat - low[:, None]) / span[:, None]
    return torch.where((high > low)[:, None], scaled, torch.zeros_like(scaled)).reshape(maps.shape)


def map_ssim(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """SSIM of each pair of maps ``[N, H, W]`` (or sequence maps ``[N, L]``) after :func:`minmax_normalize`.

    Example:
        >>> maps = torch.rand(2, 16, 16)
        >>> map_ssim(maps, 3 * maps + 1).round(decimals=6)
        tensor([1., 1.], dtype=torch.float64)
    """
    if first.shape != second.shape or first.dim() not in (2, 3):
        raise DataError(
            f"maps to compare must both be [N, H, W] or [N, L], got {tuple(first.shape)} and {tuple(second.shape)}"
        )
    a = minmax_normalize(first.detach().double()).cpu().numpy()
    b = minmax_normalize(second.detach().double()).cpu().numpy()
    side = min(a.shape[1:])
    win = 7 if side >= 7 else (side if side % 2 else side - 1)  # scikit-image's default, shrunk for tiny maps
    values = [structural_similarity(x, y, data_range=1.0, win_size=win) for x, y in zip(a, b, strict=True)]
    return torch.tensor(np.array(values, dtype=np.float64))


def _reinitialize(module: nn.Module, seed: int) -> None:
    with seeded(seed):
        reset = getattr(module, "reset_parameters", None)
        if reset is not None:
            reset()
        else:
            with torch.no_grad():
                for parameter in module.parameters(recurse=False):
                    parameter.normal_(0.0, float(parameter.std()) if parameter.numel() > 1 else 0.01)


def _attribute(attribute_fn: AttributeFn, model: nn.Module, inputs: torch.Tensor, target: torch.Tensor):
    maps = attribute_fn(model, inputs, target)
    return check_inputs_and_maps(inputs, maps).detach()


def cascading_randomization(
    model: nn.Module,
    inputs: torch.Tensor,
    target: int | torch.Tensor,
    attribute_fn: AttributeFn,
    *,
    layers: Sequence[str] | None = None,
    seed: int = 0,
    progress: bool = False,
) -> SanityCheck:
    """Re-initialise layers cumulatively from the output backwards and compare each new map with the original.

    Args:
        model: The model; a deep copy is randomised, ``model`` itself is left unchanged.
        inputs: Images ``[N, C, H, W]``.
        target: Class index, an int or ``[N]`` (the same target at every depth).
        attribute_fn: ``attribute_fn(model, inputs, target) -> [N, H, W]`` (``[N, C, H, W]`` is summed over C).
        layers: Names of the layers to re-initialise, in the order given (default: every module owning parameters,
            from the output backwards, :func:`randomizable_layers` reversed).
        seed: Seed of the re-initialisation (global random state is restored afterwards).
        progress: Show a progress bar over depths.

    Returns:
        :class:`SanityCheck` with ``ssim [N, L]``.

    Raises:
        DataError: An unknown layer name, or maps that do not match the inputs.

    Example:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> def gradient(model, x, target):
        ...     x = x.clone().requires_grad_(True)
        ...     model(x)[torch.arange(len(x)), target].sum().backward()
        ...     return x.grad[:, 0]
        >>> check = cascading_randomization(model, torch.rand(2, 1, 8, 8), 0, gradient)
        >>> check.layers, check.ssim.shape
        (['3', '1'], torch.Size([2, 2]))
    """
    n = inputs.shape[0]
    target = torch.as_tensor(target, device=inputs.device).long()
    target = target.expand(n) if target.dim() == 0 else target
    modules = dict(model.named_modules())
    names = list(reversed(randomizable_layers(model))) if layers is None else list(layers)
    unknown = [name for name in names if name not in modules]
    if unknown:
        raise DataError(f"unknown layer names {unknown}; the model's layers with parameters are "
                        f"{randomizable_layers(model)}")  # fmt: skip
    original = _attribute(attribute_fn, model, inputs, target)
    randomized = copy.deepcopy(model)
    randomized_modules = dict(randomized.named_modules())
    ssims, maps = [], []
    for depth, name in enumerate(tqdm(names, desc="sanity check", disable=not progress, leave=False)):
        _reinitialize(randomized_modules[name], seed + depth)
        new = _attribute(attribute_fn, randomized, inputs, target)
        maps.append(new)
        ssims.append(map_ssim(original, new))
    return SanityCheck(layers=names, ssim=torch.stack(ssims, dim=1), original=original, maps=torch.stack(maps))
