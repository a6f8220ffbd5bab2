"""A small name -> factory registry (searchers, schedulers, data sources, builders)."""

from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

F = TypeVar("F")  # what is registered: a loader, a builder, a method


class Registry(Generic[F]):
    """Maps names to factories; ``register`` is a decorator.

    Example:
        >>> reg = Registry("color")
        >>> @reg.register("red")
        ... def make_red():
        ...     return "#f00"
        >>> reg["red"]()
        '#f00'
        >>> reg.check("blue")
        Traceback (most recent call last):
        ...
        ValueError: unknown color 'blue' (known: red)
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, F] = {}

    def register(self, *names: str) -> Callable[[F], F]:
        def deco(fn: F) -> F:
            for name in names:
                if name in self._items:
                    raise KeyError(f"{self.kind} '{name}' registered twice")
                self._items[name] = fn
            return fn

        return deco

    def check(self, name: str) -> None:
        if name not in self._items:
            raise ValueError(f"unknown {self.kind} '{name}' (known: {', '.join(self._items)})")

    def __getitem__(self, name: str) -> F:
        self.check(name)
        return self._items[name]

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)
