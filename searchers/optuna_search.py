"""Optuna samplers (TPE, GP, CMA-ES, NSGA-II, random) through Ray's OptunaSearch."""

from __future__ import annotations

from searchers._space import OptunaDefineByRun
from searchers.registry import SEARCHERS


def _optuna(sampler_name: str):
    def build(spec, space):
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        sampler = getattr(optuna.samplers, sampler_name)(seed=spec.seed, **spec.searcher.options)
        objective = spec.objective
        return OptunaSearch(
            space=OptunaDefineByRun(space),
            metric=objective.metric,
            mode=objective.mode,
            sampler=sampler,
            points_to_evaluate=spec.searcher.points_to_evaluate or None,
        ), {}

    return build


for _name, _sampler, _summary in [
    ("tpe", "TPESampler", "Bayesian: Optuna TPE (default); conditional spaces; multi-objective"),
    ("gp", "GPSampler", "Bayesian: Optuna Gaussian process"),
    ("cmaes", "CmaEsSampler", "Evolutionary: Optuna CMA-ES (numeric parameters)"),
    ("nsga2", "NSGAIISampler", "Genetic: Optuna NSGA-II; multi-objective"),
    ("optuna-random", "RandomSampler", "Random sampling through Optuna (conditions kept exactly)"),
]:
    SEARCHERS.add(_name, _optuna(_sampler), _summary, multi_objective=_name != "cmaes")
