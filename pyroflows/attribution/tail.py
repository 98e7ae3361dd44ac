"""The optimised tail: a split network's tail rebuilt for many forward and backward passes in eval mode.

:func:`optimize_tail` uses torch.fx's own conv + BatchNorm fusion (:func:`torch.fx.experimental.optimization.fuse`)
and adds what it does not do: it never changes or deep-copies the model (the new module shares every module it does
not fold), it folds a module called more than once at each call site separately (``fuse`` would replace it for all
of them), it moves each ReLU that feeds a max-pool after the pool, and it passes 4-d feature maps in the
``channels_last`` memory format.

Example:
    >>> import torch
    >>> from torch import fx, nn
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2)).eval()
    >>> fast = optimize_tail(fx.symbolic_trace(net), 4)
    >>> x = torch.randn(2, 3, 10, 10)
    >>> torch.allclose(fast(x), net(x), atol=1e-6)
    True
"""

from __future__ import annotations

import copy
import operator
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.experimental.optimization import fuse

__all__ = ["optimize_tail"]


#: The module types ``fuse`` folds (convolution or linear followed by BatchNorm).
_FOLDABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_MAX_POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)


def _is_relu(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":  # its target is the module's name
        return type(modules.get(str(node.target))) is nn.ReLU
    return node.op == "call_function" and node.target in (F.relu, torch.relu) and len(node.args) == 1


def _is_max_pool(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        module = modules.get(str(node.target))
        return module is not None and type(module) in _MAX_POOLS and not module.return_indices
    if node.op == "call_function" and node.target in (F.max_pool1d, F.max_pool2d, F.max_pool3d):
        return not node.kwargs.get("return_indices", False) and len(node.args) < 7
    return False


def optimize_tail(tail: fx.GraphModule, feature_ndim: int) -> fx.GraphModule:
    """A new graph module computing ``tail``'s function with fewer operations per forward and backward pass.

    For the tail of a split network, run in eval mode with frozen weights at every optimisation step:

    * **Conv + BatchNorm folding**: an eval-mode BatchNorm is an affine map per channel, so a convolution (or
      linear layer) whose only user is a BatchNorm with running statistics becomes one new module with folded
      weights; the BatchNorm disappears from the graph. This is torch.fx's own
      :func:`torch.fx.experimental.optimization.fuse`, run on a new module that shares ``tail``'s (a module called
      more than once is folded at each call site on its own).
    * **ReLU after max-pooling**: ``max_pool(relu(x)) == relu(max_pool(x))`` (both are monotone, and the gradients
      agree too), so the ReLU runs on the pooled, smaller tensor.
    * **channels_last**: 4-d feature maps enter the tail in NHWC order, which oneDNN's convolutions and the pooling
      kernels run faster on the CPU, forward and backward; the activations stay NHWC through the tail.

    Every other module (and every attribute) is shared with ``tail``, not copied; nothing of ``tail`` changes.
    Call it in eval mode (the bottlenecks call it inside :func:`~pyroflows.attribution.layers.frozen`); a foldable
    module in training mode turns the folding off.

    Args:
        tail: A traced graph module (the :class:`~pyroflows.attribution.layers.LayerSplit` tail: placeholders
            ``z, *carried``).
        feature_ndim: Dimensions of ``z`` including the batch (4 for image feature maps).

    Returns:
        The optimised module (its folded weights do not require gradients).

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2)).eval()
        >>> _ = net[1].running_mean.uniform_(), net[1].running_var.uniform_(1, 2)
        >>> fast = optimize_tail(fx.symbolic_trace(net), 4)
        >>> [type(fast.get_submodule(n.target)).__name__ for n in fast.graph.nodes if n.op == "call_module"]
        ['Conv2d', 'MaxPool2d', 'ReLU']
        >>> x = torch.randn(2, 3, 10, 10)
        >>> torch.allclose(fast(x), net(x), atol=1e-6)
        True
    """
    graph = _copy_graph(tail.graph)
    _relu_after_max_pool(graph, dict(tail.named_modules()))
    if feature_ndim == 4:
        _channels_last_input(graph)
    graph.lint()
    fast = fx.GraphModule(_call_site_modules(tail, graph), graph, class_name="OptimizedTail")
    if any(m.training for m in fast.modules() if type(m) in _FOLDABLE):
        return fast
    # torch.fx's conv/linear + BatchNorm fusion, in place on ``fast``: it replaces a folded module only in ``fast``'s
    # own containers, never in ``tail`` or the model.
    fused = fuse(fast, inplace=True, no_trace=True)
    assert isinstance(fused, fx.GraphModule)  # fuse returns a new GraphModule; torch annotates it as a Module
    fast = fused
    shared = {id(p) for p in tail.parameters()}
    for p in fast.parameters():
        if id(p) not in shared:  # the folded weights
            p.requires_grad_(False)
    return fast


def _call_site_modules(tail: fx.GraphModule, graph: fx.Graph) -> dict[str, Any]:
    """The modules and attributes ``graph`` (a copy of ``tail``'s) refers to, by name, shared with ``tail``.

    A foldable module (convolution, linear, BatchNorm) called more than once gets a shallow copy (sharing its
    parameters) under a new name at each further call site, so that ``fuse``, which replaces a folded module under
    its name, folds one call site without changing the others.
    """
    modules = dict(tail.named_modules())
    root: dict[str, Any] = {}
    seen: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            module = modules[node.target]
            calls = seen[node.target] = seen.get(node.target, 0) + 1
            if calls > 1 and type(module) in _FOLDABLE:
                node.target = f"{node.target}_call{calls}"
                module = copy.copy(module)
            root[node.target] = module
        elif node.op == "get_attr":
            root[node.target] = operator.attrgetter(node.target)(tail)
    return root


def _relu_after_max_pool(graph: fx.Graph, modules: dict[str, nn.Module]) -> None:
    """Rewrite ``max_pool(relu(x))`` as ``relu(max_pool(x))`` where the ReLU has no other user."""
    for node in list(graph.nodes):
        relu = node.args[0] if node.args else None
        if not (_is_max_pool(node, modules) and isinstance(relu, fx.Node) and _is_relu(relu, modules)):
            continue
        if len(relu.users) != 1:
            continue
        node.args = (relu.args[0], *node.args[1:])
        with graph.inserting_after(node):
            moved = graph.create_node(relu.op, relu.target, (node, *relu.args[1:]), dict(relu.kwargs))
        node.replace_all_uses_with(moved, delete_user_cb=lambda user, moved=moved: user is not moved)
        graph.erase_node(relu)


def _channels_last_input(graph: fx.Graph) -> None:
    """Convert the first placeholder (the feature maps ``z``) to ``channels_last`` before any use."""
    z = next(n for n in graph.nodes if n.op == "placeholder")
    with graph.inserting_after(z):
        nhwc = graph.call_method("contiguous", (z,), {"memory_format": torch.channels_last})
    z.replace_all_uses_with(nhwc, delete_user_cb=lambda user: user is not nhwc)


def _copy_graph(graph: fx.Graph) -> fx.Graph:
    new = fx.Graph()
    output = new.graph_copy(graph, {})
    new.output(output)
    return new
