"""Captum's LRP (epsilon rule) on a copy of the model it can run, refusing models it would get wrong.

Captum's ``LRP`` has no rule for ``nn.Flatten`` nor for adaptive max pooling, and its rules attach to modules only:
:func:`lrp_compatible_copy` replaces every ``nn.Flatten`` by an equivalent rule-free reshape and gives adaptive max
pooling ``nn.MaxPool2d``'s epsilon rule; models that combine tensors outside modules (e.g. residual additions) raise
:class:`~pyroflows.evaluation.MethodNotSupported`.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from captum.attr import Attribution
from torch import nn

from pyroflows.evaluation.methods import MethodNotSupported, _quiet_captum, reduce_channels

__all__ = ["LRPAttribution", "lrp_compatible_copy"]


class LRPAttribution(Attribution):
    """Captum's LRP on a copy it can run (see :func:`lrp_compatible_copy`), refusing models it would get wrong.

    Example:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2, bias=False))
        >>> LRPAttribution(model).attribute(torch.ones(1, 1, 2, 2), target=0).shape
        torch.Size([1, 2, 2])
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)

    def has_convergence_delta(self) -> bool:
        """Captum's flag: no convergence delta."""
        return False

    def attribute(self, inputs: torch.Tensor, target: Any = None, additional_forward_args: Any = None):
        """Captum's LRP on a copy of the model it can run; a clear error for operations its rules miss."""
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


class _RuleFreeFlatten(nn.Module):
    """``nn.Flatten`` for Captum's LRP: the reshape happens in ``forward``.

    The only leaf is a no-op dropout, for which LRP passes relevance through unchanged (LRP has no rule for
    ``nn.Flatten`` itself).
    """

    def __init__(self, flatten: nn.Flatten) -> None:
        super().__init__()
        self.start_dim, self.end_dim = flatten.start_dim, flatten.end_dim
        self.passthrough = nn.Dropout(p=0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.passthrough(x.flatten(self.start_dim, self.end_dim))


_ADAPTIVE_MAX_POOLS = (nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)


def lrp_compatible_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` that Captum's LRP can run.

    Every ``nn.Flatten`` is replaced by a rule-free reshape, and adaptive max pooling gets the epsilon rule Captum gives
    ``nn.MaxPool*`` (it has no default for it).
    """
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
    """Tensor operations outside modules that Captum's LRP would propagate relevance through wrongly.

    LRP's rules attach to modules only, so a residual ``x + f(x)`` or a functional ``F.relu`` is silently mishandled.
    Models that ``torch.fx`` cannot trace are not inspected.
    """
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
