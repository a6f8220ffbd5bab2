"""Optuna samplers (TPE, GP, CMA-ES, NSGA-II, random) through Ray's OptunaSearch."""

from __future__ import annotations

from pipeline.portable import portable_locks
from searchers._space import OptunaDefineByRun
from searchers.registry import SEARCHERS, keyword_problems

_DATABASES = ("sqlite:///", "postgresql://", "mysql://")


def _storage_problem(url) -> str | None:
    if not isinstance(url, str) or not url.startswith(_DATABASES):
        return f"storage must be a database URL such as sqlite:///optuna.db, got {url!r}"
    return None


def _storage(url: str):
    """An Optuna RDB storage (sqlite or PostgreSQL) that optuna-dashboard can watch live."""
    import optuna

    problem = _storage_problem(url)
    if problem:
        raise ValueError(problem)
    return optuna.storages.RDBStorage(url)


def _options_check(sampler_name: str):
    def check(options):
        """Option names the sampler takes and the storage URL's form; connects to nothing."""
        import optuna

        sampler = getattr(optuna.samplers, sampler_name)
        problems = keyword_problems(sampler, options, set_here=("seed",), read_here=("storage",))
        if "storage" in options:
            problems += [p for p in [_storage_problem(options["storage"])] if p]
        return problems

    return check


def _optuna(sampler_name: str):
    def build(spec, space):
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        options = dict(spec.searcher.options)
        storage_url = options.pop("storage", None)  # e.g. sqlite:///optuna.db for optuna-dashboard
        # Tune pickles the searcher (and --resume unpickles it); Optuna 5.1's NSGA-II keeps a lock.
        sampler = portable_locks(getattr(optuna.samplers, sampler_name)(seed=spec.seed, **options))
        objective = spec.objective
        return OptunaSearch(
            space=OptunaDefineByRun(space),
            metric=objective.metric,
            mode=objective.mode,
            sampler=sampler,
            points_to_evaluate=spec.searcher.points_to_evaluate or None,
            storage=_storage(storage_url) if storage_url else None,
            study_name=spec.name if storage_url else None,
        ), {}

    return build


for _name, _sampler, _summary in [
    ("tpe", "TPESampler", "Bayesian: Optuna TPE (default); conditional spaces; multi-objective"),
    ("gp", "GPSampler", "Bayesian: Optuna Gaussian process"),
    ("cmaes", "CmaEsSampler", "Evolutionary: Optuna CMA-ES (numeric parameters)"),
    ("nsga2", "NSGAIISampler", "Genetic: Optuna NSGA-II; multi-objective"),
    ("optuna-random", "RandomSampler", "Random sampling through Optuna (conditions kept exactly)"),
]:
    SEARCHERS.add(_name, _optuna(_sampler), _summary, multi_objective=_name != "cmaes",
                  check_options=_options_check(_sampler),
                  requires=("torch", "gp (Optuna's GPSampler) needs PyTorch: pip install -e '.[gp]', "
                                     "or use tpe or hyperopt") if _name == "gp" else None)
