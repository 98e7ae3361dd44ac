"""One registry class for every extensible family (flow layers, schedules, networks, samplers, attribution methods).

A :class:`Registry` holds, per name, the factory, a one-line help text and whether it is the family's default.
The library builds objects through it, the CLI takes its ``choices`` and ``--help`` text from it, and the shared
property tests iterate over it, so adding a member is one new file plus one ``register`` line.

Example:
    >>> shapes = Registry("shape")
    >>> _ = shapes.register("square", lambda side: side * side, "side squared", default=True)
    >>> _ = shapes.register("circle", lambda side: 3.14159 * side * side / 4, "inscribed circle")
    >>> shapes.names(), shapes.default
    (('square', 'circle'), 'square')
    >>> shapes.build("square", 3)
    9
    >>> shapes.get("hexagon")
    Traceback (most recent call last):
    ...
    pyroflows.errors.DataError: shape: unknown 'hexagon'; expected one of square, circle
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pyroflows.errors import DataError

__all__ = ["Registry", "Entry"]

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Entry(Generic[F]):
    """One member of a family: its name, factory and one-line help text."""

    name: str
    factory: F
    help: str


class Registry(Generic[F]):
    """Names, factories, help texts and the default of one family.

    Args:
        family: What the members are (``"transform"``, ``"schedule"``, ...); errors name it as the argument.
    """

    def __init__(self, family: str) -> None:
        self.family = family
        self._entries: dict[str, Entry[F]] = {}
        self._default: str | None = None

    def register(self, name: str, factory: F, help: str, *, default: bool = False, overwrite: bool = False) -> F:
        """Add ``name``; returns ``factory`` (so it can decorate a class or function).

        Raises:
            ValueError: ``name`` is taken and ``overwrite`` is false, or ``help`` is empty.
        """
        if name in self._entries and not overwrite:
            raise ValueError(f"{self.family}: {name!r} is already registered (pass overwrite=True to replace it)")
        if not help.strip():
            raise ValueError(f"{self.family} {name!r}: a one-line help text is required")
        self._entries[name] = Entry(name, factory, help.strip())
        if default or self._default is None:
            self._default = name
        return factory

    def __call__(self, name: str, help: str, *, default: bool = False) -> Callable[[F], F]:
        """Decorator form of :meth:`register`."""
        return lambda factory: self.register(name, factory, help, default=default)

    @property
    def default(self) -> str:
        """The default member's name (the first registered unless one says ``default=True``)."""
        if self._default is None:
            raise LookupError(f"{self.family}: nothing registered")
        return self._default

    def names(self) -> tuple[str, ...]:
        """Registered names, in registration order (the order of CLI choices)."""
        return tuple(self._entries)

    def get(self, name: str) -> Entry[F]:
        """The entry for ``name``.

        Raises:
            DataError: ``name`` is not registered (the message lists the choices).
        """
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise DataError(f"{self.family}: unknown {name!r}; expected one of {', '.join(self._entries)}") from None

    def build(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """``get(name).factory(*args, **kwargs)``."""
        return self.get(name).factory(*args, **kwargs)

    def help_text(self) -> str:
        """``name: help`` for every member, the default marked, for ``--help``."""
        return "; ".join(
            f"{e.name}{' (default)' if e.name == self._default else ''}: {e.help}" for e in self._entries.values()
        )

    def __contains__(self, name: object) -> bool:
        """Whether ``name`` is registered."""
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        """The names, in registration order."""
        return iter(self._entries)

    def __len__(self) -> int:
        """The number of members."""
        return len(self._entries)

    def __repr__(self) -> str:
        """The family and its names."""
        return f"Registry({self.family!r}, {list(self._entries)})"
