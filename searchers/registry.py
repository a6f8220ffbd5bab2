"""Registries of search algorithms and schedulers, looked up by spec name.

Searchers sit below the spec: they read a validated :class:`pipeline.spec.Spec`
(typed ``Any`` here, so that the spec, which checks names against these
registries, and the searchers import nothing of each other's).
"""

from __future__ import annotations

import importlib.util
import inspect
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from pipeline.registry import Registry

Options = dict[str, Any]


def keyword_problems(target: Callable[..., Any], options: Options, *,
                     set_here: Iterable[str] = (), read_here: Iterable[str] = ()) -> list[str]:
    """Options ``target`` (a class or function) would refuse by name, from its signature alone.

    ``set_here``: arguments the pipeline fills from other spec sections; ``read_here``:
    options the pipeline itself consumes. Nothing is built or called.
    """
    params = inspect.signature(target).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return []
    set_here = set(set_here)
    known = sorted({n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
                   - set_here | set(read_here))
    problems = []
    for key in options:
        if key in set_here:
            problems.append(f"'{key}' is set by the pipeline from the rest of the spec")
        elif key not in known:
            problems.append(f"unknown option '{key}' (known: {', '.join(known)})")
    return problems


@dataclass(frozen=True)
class Method:
    """A named search algorithm or scheduler and what it can be combined with."""

    name: str
    build: Callable[[Any, Any], Any]  # (spec, search space) -> the Tune object
    summary: str
    multi_objective: bool = False  # searchers: accepts a list of metrics
    variant_generator: bool = False  # searchers: Ray's BasicVariantGenerator (PBT needs it)
    needs_checkpoints: bool = False  # schedulers: pause/exploit trials from checkpoints
    # Checked before anything is built (validate): the options' names and forms...
    check_options: Callable[[Options], list[str]] | None = None
    # ...and a package that must be installed: (module, what to tell the user).
    requires: tuple[str, str] | None = None

    def environment_problems(self, options: Options) -> list[str]:
        """``name: ...`` / ``options: ...`` lines: what this machine or these options lack."""
        if self.requires and importlib.util.find_spec(self.requires[0]) is None:
            return [f"name: {self.requires[1]}"]
        return [f"options: {p}" for p in self.check_options(options)] if self.check_options else []


class MethodRegistry(Registry[Method]):
    def add(self, name: str, build: Callable, summary: str, **traits: Any) -> None:
        self.register(name)(Method(name, build, summary, **traits))


SEARCHERS = MethodRegistry("searcher")
SCHEDULERS = MethodRegistry("scheduler")
