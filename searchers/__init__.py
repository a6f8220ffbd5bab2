"""Spec sections -> Ray Tune search algorithms and schedulers, by name.

Every public module of this package is imported here, and registers its methods
as it loads (``SEARCHERS.add(...)`` / ``SCHEDULERS.add(...)``): a new searcher is
a new module (or one more ``add`` call), with nothing to list anywhere else.

Three checks, one per validation layer of :mod:`pipeline.spec`: :func:`check`
(combinations, schema only), :func:`check_environment` (packages and option
names, nothing built) and :func:`check_build` (builds them, when a run starts).

Example:
    >>> from searchers import SEARCHERS, SCHEDULERS
    >>> "tpe" in SEARCHERS and "asha" in SCHEDULERS
    True
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING, Any

from searchers.registry import SCHEDULERS, SEARCHERS, Method
from searchers.schedulers import pbt_mutations

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")  # registers its methods

if TYPE_CHECKING:
    from pipeline.space import SearchSpace

__all__ = ["SEARCHERS", "SCHEDULERS", "Method", "check", "check_environment", "check_build", "build"]

_SECTIONS = (("searcher", SEARCHERS), ("scheduler", SCHEDULERS))


def check(spec: Any, space: "SearchSpace") -> list[str]:
    """Combinations the registries rule out, as ``field: message`` lines (schema only: no imports)."""
    searcher, scheduler = SEARCHERS[spec.searcher.name], SCHEDULERS[spec.scheduler.name]
    errors: list[str] = []
    if spec.objective.multi:
        if not searcher.multi_objective:
            errors.append(f"searcher.name: '{searcher.name}' optimizes one metric; "
                          "use tpe or nsga2 for a list of objectives")
        if scheduler.name != "fifo":
            errors.append("scheduler.name: schedulers need a single objective metric; use fifo")
    if scheduler.name == "pbt":
        if not searcher.variant_generator:
            errors.append("scheduler.name: pbt cannot be combined with search algorithms; "
                          "use searcher random, grid or manual")
        for name in pbt_mutations(spec):
            if name not in space.params:
                errors.append(f"scheduler.options.mutate: '{name}' is not in space")
            elif space.params[name].when:
                errors.append(f"scheduler.options.mutate: '{name}' is conditional; PBT needs "
                              "parameters active in every trial")
    if searcher.name == "grid":
        for name, p in space:
            try:
                p.grid_values()
            except ValueError as exc:
                errors.append(f"space.{name}: {exc}")
    if spec.searcher.restore_from and spec.searcher.warm_start:
        errors.append("searcher.restore_from: a restored searcher already knows the earlier "
                      "results; use either restore_from or warm_start")
    if spec.searcher.restore_from and searcher.variant_generator:
        errors.append(f"searcher.restore_from: '{searcher.name}' keeps no state to restore")
    if searcher.name == "manual" and not spec.searcher.points_to_evaluate:
        errors.append("searcher.points_to_evaluate: manual search needs at least one config")
    if searcher.name == "hyperopt":
        from searchers._space import HyperoptSpace

        if spec.searcher.points_to_evaluate and HyperoptSpace(space).nested:
            errors.append("searcher.points_to_evaluate: not supported by hyperopt with conditional parameters")
    return errors


def check_environment(spec: Any) -> list[str]:
    """Packages the chosen methods need and options they would refuse; nothing is built."""
    return [f"{section}.{line}" for section, registry in _SECTIONS
            for line in registry[getattr(spec, section).name].environment_problems(
                getattr(spec, section).options)]


def check_build(spec: Any, space: "SearchSpace") -> list[str]:
    """Build the searcher and scheduler once, so that the libraries reject bad options now.

    Building may have effects (an Optuna ``storage`` database is created), so only a
    starting run calls this, before it writes anything else.
    """
    errors = []
    for section, registry in _SECTIONS:
        try:
            registry[getattr(spec, section).name].build(spec, space)
        except Exception as exc:  # noqa: BLE001 - a library may refuse an option with anything
            text = (str(exc).strip().splitlines() or [""])[0]
            kind = "" if isinstance(exc, (TypeError, ValueError)) else f"{type(exc).__name__}: "
            errors.append(f"{section}.options: {kind}{text}")
    return errors


def build(spec: Any, space: "SearchSpace") -> tuple[Any, dict[str, Any], Any]:
    """(search algorithm, Tune param_space, scheduler) for a validated spec.

    The search algorithm is whole: it limits concurrency itself (``search.max_concurrent``)
    and keeps its state in Tune's experiment state (:mod:`searchers._state`).
    """
    search_alg, param_space = SEARCHERS[spec.searcher.name].build(spec, space)
    if spec.searcher.restore_from:  # the searcher's own state, not its trial count
        search_alg.restore_from_dir(spec.searcher.restore_from)
    if not SEARCHERS[spec.searcher.name].variant_generator:
        from ray.tune.search import ConcurrencyLimiter

        from searchers._state import StatefulSearchGenerator

        if spec.search.max_concurrent:
            search_alg = ConcurrencyLimiter(search_alg, max_concurrent=spec.search.max_concurrent)
        search_alg = StatefulSearchGenerator(search_alg)
    scheduler = SCHEDULERS[spec.scheduler.name].build(spec, space)
    return search_alg, param_space, scheduler
