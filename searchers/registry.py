"""Registries of search algorithms and schedulers, looked up by spec name."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from pipeline.registry import Registry

if TYPE_CHECKING:
    from pipeline.space import SearchSpace
    from pipeline.spec import Spec


@dataclass(frozen=True)
class Method:
    """A named search algorithm or scheduler and what it can be combined with."""

    name: str
    build: Callable[["Spec", "SearchSpace"], Any]
    summary: str
    multi_objective: bool = False  # searchers: accepts a list of metrics
    variant_generator: bool = False  # searchers: Ray's BasicVariantGenerator (PBT needs it)
    needs_checkpoints: bool = False  # schedulers: pause/exploit trials from checkpoints


class MethodRegistry(Registry[Method]):
    def add(self, name: str, build: Callable, summary: str, **traits: bool) -> None:
        self.register(name)(Method(name, build, summary, **traits))

    def table(self) -> list[tuple[str, str]]:
        return [(name, self[name].summary) for name in self]


SEARCHERS = MethodRegistry("searcher")
SCHEDULERS = MethodRegistry("scheduler")
