"""The layer split: finding a layer by name, freezing a model during an attribution, splitting it at the layer.

A bottleneck needs the network in two parts: the *head*, from the input up to the layer's output :math:`R`,
which it runs once per image, and the *tail*, from the (noisy) feature map :math:`Z` to the logits, which it runs
at every optimisation step. :class:`LayerSplit` obtains both without changing the model:

* **Graph split** (the default): the model is traced with :mod:`torch.fx`, treating the chosen layer as one
  opaque call. Every traced operation that depends on the layer's output belongs to the tail; everything else
  (including values that bypass the layer, such as a residual block's identity branch when the layer sits inside
  the block) is computed once by the head and handed to the tail. This works whether or not the layer is a
  top-level split point of an ``nn.Sequential``. The split is checked against the full model's output at the first
  head after each :meth:`LayerSplit.refresh` (the bottlenecks refresh at each call), and traced again if they differ.
* **Optimised tail** (graph split only, on by default): the tail runs 10 times per image for each noise copy, so
  it is run as a new graph module built for the job (see :func:`~pyroflows.attribution.tail.optimize_tail`):
  eval-mode BatchNorm folded into the preceding convolution, each ReLU followed by a max-pool moved after the pool,
  and 4-d feature maps passed in the ``channels_last`` memory format. The model itself is never changed: the new
  module shares the model's un-folded modules and holds new weights only for the folded convolutions, rebuilt from
  the current weights (rebuilt when a parameter or buffer changes). It is checked against the plain tail at each head.
* **Re-run fallback**: a model that ``torch.fx`` cannot trace (data-dependent Python control flow) is run whole at
  each step with a forward hook replacing the layer's output, as the official implementation does; a
  :class:`LayerSplitWarning` (a :class:`UserWarning`) says so. The head is still cut short: capturing :math:`R`
  stops the forward pass at the layer.

Example:
    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).eval()
    >>> split = LayerSplit(model, "1")
    >>> head = split.head(torch.randn(5, 3))
    >>> torch.allclose(split.tail(head.features, head), model(head.inputs))
    True
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn

from pyroflows.attribution.tail import optimize_tail
from pyroflows.errors import DataError, PyroflowsWarning

__all__ = [
    "resolve_layer",
    "frozen",
    "replace_output",
    "LayerSplit",
    "HeadOutput",
    "LayerNotFoundError",
    "LayerSplitError",
    "LayerSplitWarning",
]


def resolve_layer(model: nn.Module, layer: str | nn.Module) -> tuple[str, nn.Module]:
    """The dotted name and the module for ``layer`` (a name such as ``"features.4"``, or the module itself).

    Raises:
        LayerNotFoundError: no such layer (a :class:`~pyroflows.errors.DataError`; the message lists close and
            valid names), or ``layer`` is not a sub-module.
        ValueError: ``layer`` is the model itself.
        TypeError: ``layer`` is neither a string nor a module.

    Example:
        >>> model = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
        >>> resolve_layer(model, "1")
        ('1', ReLU())
    """
    modules = dict(model.named_modules())
    if isinstance(layer, str):
        if layer == "":
            raise ValueError("layer must name a sub-module of the model, not the model itself ('')")
        if layer not in modules:
            names = [name for name in modules if name]
            close = difflib.get_close_matches(layer, names, n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            shown = ", ".join(repr(n) for n in names[:8]) + (", ..." if len(names) > 8 else "")
            raise LayerNotFoundError(
                f"the model has no layer named {layer!r}.{hint} Valid layer names include: {shown}"
            )
        return layer, modules[layer]
    if isinstance(layer, nn.Module):
        for name, module in modules.items():
            if module is layer:
                if name == "":
                    raise ValueError("layer must be a sub-module of the model, not the model itself")
                return name, module
        raise LayerNotFoundError(f"layer {type(layer).__name__} is not a sub-module of the model")
    raise TypeError(f"layer must be a dotted module name or an nn.Module, got {type(layer).__name__}")


@contextmanager
def frozen(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and ``requires_grad=False`` for every parameter; both restored on exit, also after an error.

    Example:
        >>> model = nn.Linear(2, 2).train()
        >>> with frozen(model):
        ...     model.training, model.weight.requires_grad
        (False, False)
        >>> model.training, model.weight.requires_grad
        (True, True)
    """
    flags = [(p, p.requires_grad) for p in model.parameters()]
    modes = [(m, m.training) for m in model.modules()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        model.eval()
        yield model
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        for m, mode in modes:
            m.training = mode  # per module: a model may deliberately mix train and eval sub-modules


@contextmanager
def replace_output(module: nn.Module, value: torch.Tensor) -> Iterator[None]:
    """Within the block, ``module``'s forward returns ``value`` instead of its own output (hook removed on exit)."""
    handle = module.register_forward_hook(lambda _m, _inputs, _output: value)
    try:
        yield
    finally:
        handle.remove()


class _StopForward(Exception):
    """Raised by a capture hook so the rest of the network does not run."""


@dataclass
class HeadOutput:
    """What the head computed for a batch of ``N`` inputs.

    Attributes:
        inputs: The inputs ``[N, ...]``.
        features: The layer's output :math:`R`, ``[N, *feature]``.
        carried: Values the tail needs besides :math:`Z` (graph split only), in the tail's placeholder order.
        batched: For each carried value, whether it has the batch dimension and must be repeated per noise copy.
        args: Further arguments of the model's forward (e.g. an attention mask), for the re-run path.
        tail_module: The optimised tail for these inputs, chosen at the first :meth:`LayerSplit.tail` call (kept from
            an earlier call or built from the current weights, and checked against the plain tail on these
            features), or ``None``.
    """

    inputs: torch.Tensor
    features: torch.Tensor
    carried: tuple[Any, ...] = ()
    batched: tuple[bool, ...] = ()
    tail_module: nn.Module | None = field(default=None, repr=False)
    args: tuple[Any, ...] = ()  # the model's further forward arguments (re-run path), batch-first tensors repeated


class _LeafTracer(fx.Tracer):
    def __init__(self, leaf: str) -> None:
        super().__init__()
        self.leaf = leaf

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if qualname == self.leaf:
            return True
        if self.leaf.startswith(qualname + ".") or not qualname:
            return False  # a container of the layer (e.g. nn.TransformerEncoder) is traced into, not kept opaque
        return super().is_leaf_module(m, qualname)


class LayerSplit:
    """A model seen as ``tail(head(x))`` around one layer, without modifying the model.

    Args:
        model: The network; traced in eval mode (the bottlenecks always run it in eval mode).
        layer: Dotted name of the split layer, or the module.
        graph_split: Try the ``torch.fx`` graph split (``False`` forces the re-run fallback).
        optimize_tail: With the graph split, run the tail as a module optimised for many forward and backward
            passes (see :func:`optimize_tail`; it costs memory for the folded convolutions' weights, about 90 MB for
            ResNet-50's tail after ``layer2``). Ignored by the re-run fallback, and skipped while any module of the
            tail has hooks (they should see their module called as usual).

    Attributes:
        mode: ``"graph"`` or ``"rerun"``.
        layer_name: The resolved dotted name.
        optimize_tail: Whether the tail is optimised (set to ``False`` if the optimised tail ever disagrees with
            the plain one).
    """

    def __init__(
        self, model: nn.Module, layer: str | nn.Module, *, graph_split: bool = True, optimize_tail: bool = True
    ) -> None:
        self.model = model
        self.layer_name, self.layer = resolve_layer(model, layer)
        self.mode = "rerun"
        self.optimize_tail = bool(optimize_tail)
        self._checked = False
        self._fresh = True  # whether the graph was traced since the last refresh()
        self._optimized: tuple[tuple[Any, ...], nn.Module] | None = None  # (weights' fingerprint, optimised tail)
        if graph_split:
            try:
                with frozen(model):
                    self._build_graph_split()
                self.mode = "graph"
            except _NotCalledError as exc:  # e.g. a layer called inside an untraceable container: hooks reach it
                self._warn_fallback(str(exc))
            except _SplitError:
                raise
            except Exception as exc:  # torch.fx raises many kinds of errors on untraceable code
                self._warn_fallback(f"torch.fx could not trace it ({type(exc).__name__}: {str(exc)[:120]})")

    def refresh(self) -> None:
        """Have the next head checked against the whole model, and traced again if they disagree.

        ``forward`` may read Python-level state (a flag, a mode, a list of active branches) that the trace froze. The
        bottlenecks call this at each ``attribute``: the next :meth:`head` compares the split network's output on its
        inputs with the whole model's, and only when they differ is the model traced again (with the state it has
        now) and compared once more; a fresh trace that still differs falls back to the re-run path. So a model whose
        state did not change is not traced again for every call.
        """
        if self.mode == "graph":
            self._checked = False
            self._fresh = False

    def _retrace(self) -> None:
        """Trace the split again; fall back to the re-run path if ``torch.fx`` no longer can."""
        try:
            with frozen(self.model):
                self._build_graph_split()
        except _SplitError:
            raise
        except Exception as exc:  # torch.fx raises many kinds of errors on untraceable code
            self._warn_fallback(f"torch.fx could not trace it ({type(exc).__name__}: {str(exc)[:120]})")
            return
        self._fresh = True
        self._optimized = None

    def _warn_fallback(self, why: str) -> None:
        self.mode = "rerun"
        warnings.warn(
            f"the model cannot be split at {self.layer_name!r}: {why}. Falling back to running the whole model at "
            "every optimisation step (correct, but slower).",
            LayerSplitWarning,
            stacklevel=3,
        )

    def _build_graph_split(self) -> None:
        """Trace the model with the layer opaque and cut the graph there into ``self._head`` and ``self._tail``."""
        graph = _LeafTracer(self.layer_name).trace(self.model)
        cut = _cut_node(graph, self.layer_name)
        nodes = list(graph.nodes)
        tail = _downstream(nodes, cut)
        if next(n for n in nodes if n.op == "output") not in tail:
            raise _SplitError(f"the model's output does not depend on layer {self.layer_name!r}")
        # Which values depend on the input (and so carry the batch dimension)?
        from_input: set[fx.Node] = set()
        for node in nodes:
            if node.op == "placeholder" or any(i in from_input for i in node.all_input_nodes):
                from_input.add(node)
        needed = _tail_inputs(nodes, tail, cut)
        carried = [n for n in needed if n.op != "get_attr"]
        self._head = fx.GraphModule(self.model, _head_graph(nodes, tail, cut, carried))
        self._head.graph.eliminate_dead_code()  # e.g. a layer after the cut that only the tail uses
        self._head.recompile()
        self._tail = fx.GraphModule(self.model, _tail_graph(nodes, tail, cut, needed, carried))
        self._batched = tuple(n in from_input for n in carried)
        if sum(1 for n in nodes if n.op == "placeholder") != 1:
            raise _NotCalledError("the model's forward takes more than one argument (the graph split takes one)")

    def head(self, inputs: torch.Tensor, *args: Any) -> HeadOutput:
        """Run the network up to the layer (no gradients): :math:`R` and whatever the tail needs.

        ``args`` are the model's further forward arguments (``model(inputs, *args)``); they need the re-run path.
        """
        with torch.no_grad():
            if self.mode == "graph" and args:
                self._warn_fallback("the model is called with further forward arguments")
            if self.mode == "graph":
                head = self._graph_head(inputs)
                if not self._checked:
                    self._checked = True
                    why = self._disagreement(head)
                    if why is not None and not self._fresh:  # traced before the model's Python state changed?
                        self._retrace()
                        if self.mode == "graph":
                            head = self._graph_head(inputs)
                            why = self._disagreement(head)
                    if why is not None and self.mode == "graph":
                        self._warn_fallback(why)
                if self.mode == "graph":
                    return head
            captured: list[torch.Tensor] = []

            def capture(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
                captured.append(output)
                raise _StopForward

            handle = self.layer.register_forward_hook(capture)
            try:
                self.model(inputs, *args)
            except _StopForward:
                pass
            finally:
                handle.remove()
            if not captured:
                raise RuntimeError(f"layer {self.layer_name!r} did not run during the model's forward pass")
            if not isinstance(captured[0], torch.Tensor):
                raise TypeError(f"layer {self.layer_name!r} returns a {type(captured[0]).__name__}, not a tensor")
            return HeadOutput(inputs, captured[0], args=tuple(args))

    def _graph_head(self, inputs: torch.Tensor) -> HeadOutput:
        features, *carried = self._head(inputs)
        return HeadOutput(inputs, features, tuple(carried), self._batched)

    def _disagreement(self, head: HeadOutput) -> str | None:
        """Why the split network's output on ``head``'s inputs is not the whole model's, or ``None`` if it is."""
        try:
            ok = _same_output(self._tail(head.features, *head.carried), self.model(head.inputs))
        except Exception as exc:
            return f"the split graph failed on real inputs ({type(exc).__name__}: {str(exc)[:120]})"
        return None if ok else "the split graph's output differs from the model's"

    def tail(self, z: torch.Tensor, head: HeadOutput) -> torch.Tensor:
        """Logits for feature maps ``z`` ``[c * N, *feature]``: ``c`` copies of the ``N`` inputs, copy-major."""
        n = head.features.shape[0]
        copies, remainder = divmod(z.shape[0], n)
        if remainder:
            raise ValueError(f"z holds {z.shape[0]} feature maps, not a multiple of the {n} inputs")
        if self.mode == "graph":
            carried = [
                value.repeat(copies, *([1] * (value.ndim - 1))) if batched and copies > 1 else value
                for value, batched in zip(head.carried, head.batched, strict=True)
            ]
            return self._tail_for(head)(z, *carried)
        inputs, *args = (_repeat_batch(value, copies, n) for value in (head.inputs, *head.args))
        with replace_output(self.layer, z):
            return self.model(inputs, *args)

    def _tail_for(self, head: HeadOutput) -> nn.Module:
        """The plain tail, or the optimised one, checked against the plain tail on this head's features.

        The optimised tail is kept between calls while the tail's weights keep their identity, storage and in-place
        version, and reused only after it reproduces the plain tail on the head's features (which also catches an
        edit through ``.data``, which no version counter sees); otherwise it is built again from the current weights.
        """
        if self.optimize_tail and head.tail_module is None:
            if _has_hooks(self._tail):  # checked once per head(): hooks should see the modules they were put on
                head.tail_module = self._tail
            else:
                key = (head.features.ndim, *_fingerprint(self._tail))
                if self._optimized is not None and self._optimized[0] == key:
                    head.tail_module = self._optimized[1]
                    if self._optimized_disagreement(head) is None:
                        return head.tail_module
                with torch.no_grad():
                    self._optimized = (key, optimize_tail(self._tail, head.features.ndim))
                head.tail_module = self._optimized[1]
                why = self._optimized_disagreement(head)
                if why is not None:
                    warnings.warn(
                        f"the optimised tail after {self.layer_name!r} is not used: {why}",
                        LayerSplitWarning,
                        stacklevel=4,
                    )
                    self.optimize_tail = False
                    self._optimized = None
                    head.tail_module = None
        if self.optimize_tail and head.tail_module is not None:  # built above while optimize_tail holds
            return head.tail_module
        return self._tail

    def _optimized_disagreement(self, head: HeadOutput) -> str | None:
        """Why the optimised tail's output on ``head``'s features is not the plain tail's, or ``None`` if it is."""
        optimized = head.tail_module
        assert optimized is not None  # _tail_for set it just before
        try:
            with torch.no_grad():
                plain = self._tail(head.features, *head.carried)
                ok = _same_output(optimized(head.features, *head.carried), plain)
        except Exception as exc:
            return f"it failed ({type(exc).__name__}: {str(exc)[:120]})"
        return None if ok else "its output differs from the plain tail's"


def _cut_node(graph: fx.Graph, layer_name: str) -> fx.Node:
    """The one node calling the layer (it must be called exactly once)."""
    calls = [n for n in graph.nodes if n.op == "call_module" and n.target == layer_name]
    if not calls:
        raise _NotCalledError(f"the traced graph never calls layer {layer_name!r} as a module")
    if len(calls) > 1:
        raise _SplitError(
            f"layer {layer_name!r} is called {len(calls)} times in the model's forward; a bottleneck needs "
            "a layer that runs once per input"
        )
    return calls[0]


def _downstream(nodes: list[fx.Node], cut: fx.Node) -> set[fx.Node]:
    """The tail: the layer's node and everything that depends on it (``nodes`` in topological order)."""
    tail = {cut}
    for node in nodes:
        if node is not cut and any(i in tail for i in node.all_input_nodes):
            tail.add(node)
    return tail


def _tail_inputs(nodes: list[fx.Node], tail: set[fx.Node], cut: fx.Node) -> list[fx.Node]:
    """Values computed outside the tail that the tail reads (besides the layer's output), in first-use order."""
    needed: list[fx.Node] = []
    for node in nodes:
        if node in tail and node is not cut:
            for i in node.all_input_nodes:
                if i not in tail and i not in needed:
                    needed.append(i)
    return needed


def _tail_graph(
    nodes: list[fx.Node], tail: set[fx.Node], cut: fx.Node, needed: list[fx.Node], carried: list[fx.Node]
) -> fx.Graph:
    """The tail as a graph of its own: placeholders ``bottleneck_z, carried_0, ...``, the model's attributes read."""
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {cut: graph.placeholder("bottleneck_z")}
    for k, node in enumerate(carried):
        env[node] = graph.placeholder(f"carried_{k}")
    for node in needed:
        if node.op == "get_attr":
            env[node] = graph.get_attr(str(node.target))  # a get_attr target is the attribute's name
    for node in nodes:
        if node in tail and node is not cut:
            env[node] = graph.node_copy(node, lambda n: env[n])
    return graph


def _head_graph(nodes: list[fx.Node], tail: set[fx.Node], cut: fx.Node, carried: list[fx.Node]) -> fx.Graph:
    """The head as a graph: everything outside the tail, plus the layer; returns ``(R, *carried)``."""
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for node in nodes:
        if (node is cut or node not in tail) and node.op != "output":
            env[node] = graph.node_copy(node, lambda n: env[n])
    graph.output((env[cut], *[env[n] for n in carried]))
    return graph


def _same_output(candidate: torch.Tensor, reference: Any) -> bool:
    """Whether ``candidate`` equals the tensor ``reference`` up to float rounding (the splits' one-time checks)."""
    atol = 1e-5 * (1 + float(reference.abs().max())) if isinstance(reference, torch.Tensor) else 0.0
    return (
        isinstance(reference, torch.Tensor)
        and candidate.shape == reference.shape
        and torch.allclose(candidate, reference, rtol=1e-4, atol=atol)
    )


_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


def _fingerprint(module: nn.Module) -> tuple[Any, ...]:
    """Identity, storage and in-place version of every parameter and buffer (an edit through ``.data`` keeps it)."""
    tensors = [*module.parameters(), *module.buffers()]
    return tuple((id(t), t.data_ptr(), t._version, t.dtype, t.device) for t in tensors)


def _has_hooks(module: nn.Module) -> bool:
    return any(getattr(m, name, None) for m in module.modules() for name in _HOOK_DICTS)


class LayerSplitError(DataError):
    """The layer cannot serve as a bottleneck at all.

    It is called twice per forward, or the output does not depend on it; not a tracing limitation, which falls back to
    hooks.
    """


_SplitError = LayerSplitError


class LayerSplitWarning(PyroflowsWarning):
    """The layer split runs a slower but correct path.

    Either the model cannot be split at the layer (the whole model runs at every step), or the optimised tail
    disagrees with the plain one (the plain tail runs).
    """


class LayerNotFoundError(DataError):
    """The model has no sub-module of that name (the one error for a name that does not exist)."""


class _NotCalledError(_SplitError):
    """The traced graph does not reach the layer as one module call: the hook path may still reach it."""


def _repeat_batch(value: Any, copies: int, n: int) -> Any:
    """A batch-first tensor of ``n`` rows repeated ``copies`` times, copy-major; anything else unchanged."""
    if copies > 1 and isinstance(value, torch.Tensor) and value.ndim >= 1 and value.shape[0] == n:
        return value.repeat(copies, *([1] * (value.ndim - 1)))
    return value
