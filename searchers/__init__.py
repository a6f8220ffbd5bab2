"""Spec sections -> Ray Tune search algorithms and schedulers, by name.

Example:
    >>> from searchers import SEARCHERS, SCHEDULERS
    >>> "tpe" in SEARCHERS and "asha" in SCHEDULERS
    True
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from searchers import basic, hyperopt_search, optuna_search, schedulers  # noqa: F401  (registration)
from searchers.registry import SCHEDULERS, SEARCHERS, Method

if TYPE_CHECKING:
    from pipeline.space import SearchSpace
    from pipeline.spec import Spec

__all__ = ["SEARCHERS", "SCHEDULERS", "Method", "check", "build"]


def check(spec: "Spec", space: "SearchSpace") -> list[str]:
    """Combinations the registries or Ray would reject, as ``field: message`` lines."""
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
        for name in schedulers.pbt_mutations(spec):
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
    if searcher.name == "gp":
        import importlib.util

        if importlib.util.find_spec("torch") is None:
            errors.append("searcher.name: gp (Optuna's GPSampler) needs PyTorch: "
                          "pip install -e '.[gp]', or use tpe or hyperopt")
    if searcher.name == "manual" and not spec.searcher.points_to_evaluate:
        errors.append("searcher.points_to_evaluate: manual search needs at least one config")
    if searcher.name == "hyperopt":
        from searchers._space import HyperoptSpace

        if spec.searcher.points_to_evaluate and HyperoptSpace(space).nested:
            errors.append("searcher.points_to_evaluate: not supported by hyperopt with conditional parameters")
    if errors:
        return errors
    # Let the libraries reject bad options now, before Ray starts.
    for section, registry in (("searcher", SEARCHERS), ("scheduler", SCHEDULERS)):
        try:
            registry[getattr(spec, section).name].build(spec, space)
        except (TypeError, ValueError) as exc:
            errors.append(f"{section}.options: {exc}")
    return errors


def build(spec: "Spec", space: "SearchSpace") -> tuple[Any, dict[str, Any], Any]:
    """(search algorithm, Tune param_space, scheduler) for a validated spec."""
    search_alg, param_space = SEARCHERS[spec.searcher.name].build(spec, space)
    if spec.searcher.restore_from:
        search_alg.restore_from_dir(spec.searcher.restore_from)
    scheduler = SCHEDULERS[spec.scheduler.name].build(spec, space)
    return search_alg, param_space, scheduler
