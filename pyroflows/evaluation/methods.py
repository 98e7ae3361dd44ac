"""The registry of attribution methods and their one contract: a Captum ``Attribution`` built from a model.

:data:`METHODS` (a :class:`~pyroflows.registry.Registry`) maps a name to a :class:`MethodFactory`,
``factory(model, context)`` returning a Captum ``Attribution`` (:func:`make_attribution`): every member, the
bottlenecks included, is called as ``attribute(inputs, target=..., additional_forward_args=...)`` and returns one
value per input position, ``[N, H, W]`` for images, ``[N, L]`` for sequences and token ids (token methods work on
the embedding layer). :func:`make_attribute_fn` turns a name into ``attribute_fn(model, inputs, target)``, building
the method for each model it is given, so the same function attributes the intact model and the randomised copies
of the sanity check. Multi-channel attributions ``[N, C, H, W]`` are reduced to ``[N, H, W]`` by summing over
channels with their sign (for the one-channel digits that is the map itself): methods whose sign carries meaning
(Integrated Gradients, guided backprop, LRP) keep it, and Saliency and SmoothGrad are absolute gradients by
definition.

The members live in :mod:`~pyroflows.evaluation.captum_methods` (Captum's methods),
:mod:`~pyroflows.evaluation.lrp` and :mod:`~pyroflows.evaluation.bottleneck_methods` (the information bottlenecks).
Adding one is one new file holding its factory and one :func:`register_method` line, imported by
``pyroflows/evaluation/__init__.py``. Each member declares the ``context.options`` it reads: an option no member
takes (a typo such as ``bata=``) is a :class:`~pyroflows.errors.DataError`, not silently ignored.

Example:
    >>> "saliency" in METHODS and METHODS.get("saliency").factory.options
    ()
    >>> make_attribute_fn("per-sample", bata=3.0)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    pyroflows.errors.DataError: per-sample: unknown option 'bata'; it takes active_threshold, batch_size, beta, ...
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from captum.attr import Attribution
from torch import nn

from pyroflows.errors import DataError, PyroflowsError
from pyroflows.evaluation._utils import seeded
from pyroflows.registry import Registry

__all__ = [
    "AttributeFn",
    "MethodContext",
    "MethodFactory",
    "MethodNotSupported",
    "METHODS",
    "available_methods",
    "check_methods",
    "make_attribute_fn",
    "make_attribution",
    "register_method",
    "reduce_channels",
    "ConfiguredAttribution",
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
        options: Extra keyword arguments for the methods (e.g. ``beta`` for ``per-sample``, ``window`` for
            ``occlusion``, ``pad`` for the token baselines' padding id). One context serves every method of an
            evaluation, so each method reads the options it declares and leaves the others' alone; an option that
            no registered method takes is an error.
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


@dataclass(frozen=True)
class MethodFactory:
    """A registered method: ``build(model, context)`` returns its Captum ``Attribution``.

    Attributes:
        build: The factory.
        options_of: The names of the ``context.options`` it reads: a tuple, or a function returning them (for
            options read from a class's signature when the method is built).

    Example:
        >>> factory = MethodFactory(lambda model, context: None, ("window",))
        >>> factory.options
        ('window',)
    """

    build: Callable[[nn.Module, MethodContext], Attribution]
    options_of: tuple[str, ...] | Callable[[], Iterable[str]] = ()

    @property
    def options(self) -> tuple[str, ...]:
        """The option names this method takes, sorted when computed."""
        names = self.options_of() if callable(self.options_of) else self.options_of
        return tuple(names) if isinstance(names, tuple) else tuple(sorted(names))

    def __call__(self, model: nn.Module, context: MethodContext) -> Attribution:
        """Build the method's ``Attribution`` for ``model``."""
        return self.build(model, context)


#: Every attribution method, by name (``pyroflows evaluate --methods`` reads it).
METHODS: Registry[MethodFactory] = Registry("attribution method")


def register_method(
    name: str,
    factory: Callable[[nn.Module, MethodContext], Attribution],
    description: str,
    *,
    options: tuple[str, ...] | Callable[[], Iterable[str]] = (),
    default: bool = False,
    overwrite: bool = False,
) -> MethodFactory:
    """Add a method: ``factory(model, context)`` returns a Captum ``Attribution``.

    Its ``attribute(inputs, target=..., additional_forward_args=...)`` gives ``[N, *positions]`` maps (e.g. a
    :class:`ConfiguredAttribution`).

    Args:
        name: The method's name (``--methods`` takes it).
        factory: Builds the method for a model.
        description: One line for ``--help`` and :func:`available_methods`.
        options: The ``context.options`` keys the factory reads (a tuple, or a function returning them).
        default: Make it the registry's default member.
        overwrite: Replace a method of the same name.

    Returns:
        The registered :class:`MethodFactory`.

    Raises:
        ValueError: ``name`` is taken and ``overwrite`` is false.

    Example:
        >>> from captum.attr import Saliency
        >>> register_method("saliency", lambda m, c: ConfiguredAttribution(Saliency(m)), "signed gradient")
        Traceback (most recent call last):
        ...
        ValueError: attribution method: 'saliency' is already registered (pass overwrite=True to replace it)

        A new method (in its own file, imported by ``pyroflows/evaluation/__init__.py``)::

            register_method("signed-gradient", lambda m, c: ConfiguredAttribution(Saliency(m)), "signed gradient")
    """
    entry = factory if isinstance(factory, MethodFactory) else MethodFactory(factory, options)
    METHODS.register(name, entry, description, default=default, overwrite=overwrite)
    return entry


def available_methods() -> dict[str, str]:
    """Registered method names and their one-line descriptions, in registration order.

    Example:
        >>> "saliency" in available_methods()
        True
    """
    return {name: METHODS.get(name).help for name in METHODS.names()}


def check_methods(methods: Iterable[str], name: str = "methods") -> list[str]:
    """``methods`` as a list, after checking it is not empty and every name is registered.

    Raises:
        DataError: naming ``name``, the unknown names and the choices.

    Example:
        >>> check_methods(["saliency", "gradcam"])  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        pyroflows.errors.DataError: methods: unknown ['gradcam']; choose from random, saliency, ...
    """
    methods = list(methods)
    if not methods:
        raise DataError(f"{name}: no method given; choose from {', '.join(METHODS.names())}")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise DataError(f"{name}: unknown {unknown}; choose from {', '.join(METHODS.names())}")
    return methods


def _known_options() -> set[str]:
    return {option for name in METHODS.names() for option in METHODS.get(name).factory.options}


def _context(name: str, context: MethodContext | None, options: dict[str, Any]) -> MethodContext:
    """A copy of ``context`` with ``options`` merged, after checking the name and every option.

    An explicit keyword option must be one ``name`` takes; a ``context.options`` key must be one some registered
    method takes (the context is shared by all the methods of an evaluation).
    """
    if name not in METHODS:
        raise DataError(f"unknown attribution method {name!r}; choose from {', '.join(METHODS.names())}")
    accepted = METHODS.get(name).factory.options
    takes = ", ".join(accepted) if accepted else "no options"
    for key in options:
        if key not in accepted:
            raise DataError(f"{name}: unknown option {key!r}; it takes {takes}")
    context = copy.copy(context) if context is not None else MethodContext()
    unknown = sorted(set(context.options) - _known_options())
    if unknown:
        raise DataError(
            f"{name}: unknown option {unknown[0]!r} in context.options; it takes {takes}, and the other registered "
            f"methods take {', '.join(sorted(_known_options() - set(accepted)))}"
        )
    context.options = {**context.options, **options}
    return context


def make_attribution(name: str, model: nn.Module, context: MethodContext | None = None, **options: Any) -> Attribution:
    """The registered method ``name`` for ``model``, as a Captum ``Attribution``.

    Raises:
        DataError: an unknown name, or an option the method does not take.

    Example:
        >>> model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(32, 3))
        >>> method = make_attribution("saliency", model)
        >>> method.attribute(torch.rand(2, 1, 4, 4), target=torch.tensor([0, 2])).shape
        torch.Size([2, 4, 4])
    """
    context = _context(name, context, options)
    return METHODS.get(name).factory(model, context)


def make_attribute_fn(name: str, context: MethodContext | None = None, **options: Any) -> AttributeFn:
    """A registered method as ``attribute_fn(model, inputs, target) -> [N, *positions]``.

    It is built for each model it is given (so the sanity check's randomised copies get their own).

    Args:
        name: A name from :func:`available_methods`.
        context: Layer names, estimation data and seed.
        **options: Options of the method, merged into ``context.options``.

    Raises:
        DataError: An unknown name, or an option the method does not take.

    Example:
        >>> model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(32, 3))
        >>> make_attribute_fn("saliency")(model, torch.rand(2, 1, 4, 4), torch.tensor([0, 2])).shape
        torch.Size([2, 4, 4])
    """
    context = _context(name, context, options)
    factory = METHODS.get(name).factory

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


class ConfiguredAttribution(Attribution):
    """A Captum attribution with its settings fixed: the registry's members, one contract for every method.

    ``attribute(inputs, target=None, additional_forward_args=None)`` runs ``method.attribute`` with the keyword
    arguments ``options(inputs)`` (window sizes, baselines or noise levels that depend on the inputs), under
    ``seed`` when given (the caller's random state is restored), and reduces the result to one value per input
    position, ``[N, *positions]``, with ``reduce``; floating-point inputs give maps in their dtype.

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
        """Captum's flag: no convergence delta."""
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
        if inputs.is_floating_point() and result.is_floating_point():
            result = result.to(inputs.dtype)  # Captum's Occlusion divides by counts made in torch's default dtype
        return (self.reduce(result, inputs) if self.reduce is not None else reduce_channels(result)).detach()


#: The methods of the paper's Table 1, in its order (bottlenecks last): ``pyroflows evaluate``'s default set.
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

#: The methods of the sequence tasks (``pyroflows evaluate --task motifs|keywords``): their default set.
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
