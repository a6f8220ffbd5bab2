"""Trial schedulers: early stopping (ASHA, HyperBand, median) and PBT."""

from __future__ import annotations

from pipeline.space import FloatParam, IntParam
from searchers._space import tune_domains
from searchers.registry import SCHEDULERS, keyword_problems

_TIME = "training_iteration"


def _asha(spec, space):
    from ray.tune.schedulers import ASHAScheduler

    opts = {"grace_period": 1, "reduction_factor": 3, **spec.scheduler.options}
    return ASHAScheduler(time_attr=_TIME, max_t=spec.training.epochs, **opts)


def _stops_paused_trials_for_good(cls):
    """``cls`` (a Tune scheduler that pauses trials), whose stops of paused trials are saved.

    Ray 2.60: when a scheduler stops a PAUSED trial (HyperBand stopping the rest of a
    finished bracket), Tune marks it TERMINATED in memory but, since the trial has no
    actor, skips marking it for the next experiment-state snapshot. If a snapshot was
    taken while it was paused, the stored experiment (what ``Results`` and ``--resume``
    read) keeps it PAUSED for ever, and a resume would run it again. Tune calls
    ``on_trial_remove`` for exactly these trials, just before it sets TERMINATED.
    """

    class Scheduler(cls):
        def on_trial_remove(self, tune_controller, trial):
            super().on_trial_remove(tune_controller, trial)
            mark = getattr(tune_controller, "_mark_trial_to_checkpoint", None)
            if mark is not None:  # private in Ray; snapshot is taken later, after the stop
                mark(trial)

    Scheduler.__name__ = Scheduler.__qualname__ = cls.__name__
    return Scheduler


def hyperband_scheduler(**options):
    """Ray Tune's synchronous ``HyperBandScheduler`` with ``options``, corrected twice.

    Besides :func:`_stops_paused_trials_for_good`: Ray 2.60 stops the trials a bracket
    paused at its last milestone only when the bracket is processed after a result. A
    trial that ends on its own (its last result marked done) is removed instead, and a
    removal that leaves the bracket finished processes nothing, so a trial paused at
    ``max_t`` beside it stayed PAUSED and the run never ended (seen in CI: HyperBand, 4
    trials of 3 epochs, the run still stepping after 8 minutes with no trial running).
    Here such a removal stops them as the bracket's processing would have: they have no
    epochs left to run.
    """
    from ray.tune.schedulers import HyperBandScheduler

    class HyperBand(_stops_paused_trials_for_good(HyperBandScheduler)):  # type: ignore[misc]
        def on_trial_remove(self, tune_controller, trial):
            super().on_trial_remove(tune_controller, trial)
            bracket = self._trial_info[trial][0]
            if bracket.finished():
                bracket.cleanup_full(tune_controller)  # stops the trials it paused

    HyperBand.__name__ = HyperBand.__qualname__ = "HyperBandScheduler"
    return HyperBand(**options)


def _hyperband(spec, space):
    opts = {"reduction_factor": 3, **spec.scheduler.options}
    return hyperband_scheduler(time_attr=_TIME, max_t=spec.training.epochs, **opts)


def _median(spec, space):
    from ray.tune.schedulers import MedianStoppingRule

    opts = {"grace_period": 1, "min_samples_required": 3, **spec.scheduler.options}
    return _stops_paused_trials_for_good(MedianStoppingRule)(time_attr=_TIME, **opts)


def pbt_mutations(spec) -> list[str]:
    return list(spec.scheduler.options.get("mutate", ["learning_rate"]))


def within_space(space, names: list[str]):
    """PBT's explore step for ``names``, kept inside the declared space.

    Ray's PBT perturbs a number by multiplying it by 0.8 or 1.2, which can leave the
    parameter's range (a learning rate declared 1e-3..3e-2 became 9.2e-4); the value is
    brought back with the parameter's own ``clipped``: into ``[low, high]``, onto its step
    grid, integers as integers.

        >>> from pipeline.space import SearchSpace
        >>> space = SearchSpace.from_dict({
        ...     "lr": {"type": "float", "low": 1e-3, "high": 3e-2, "log": True},
        ...     "units": {"type": "int", "low": 8, "high": 32, "step": 8}})
        >>> within_space(space, ["lr", "units"])({"lr": 9.2e-4, "units": 38, "other": 5})
        {'lr': 0.001, 'units': 32, 'other': 5}
    """
    params = {name: p for name, p in space if name in names and isinstance(p, (IntParam, FloatParam))}

    def explore(config: dict) -> dict:
        for name, p in params.items():
            value = config.get(name)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                config[name] = p.clipped(value)
        return config

    return explore


_PBT_LIST_MAX = 1000


def pbt_domains(space, names: list[str]) -> dict:
    """PBT's ``hyperparam_mutations``: a list for what takes listed values (a choice, a
    bool, a stepped number), which PBT perturbs by moving to a neighbouring value, and the
    Tune domain for a continuous number, which PBT multiplies by 0.8 or 1.2.

    Given a domain, Ray multiplies any value: a choice of batch sizes [32, 64, 128] gave 38,
    a choice of strings failed inside the scheduler.

        >>> from pipeline.space import SearchSpace
        >>> space = SearchSpace.from_dict({
        ...     "batch": {"type": "choice", "values": [32, 64, 128]},
        ...     "units": {"type": "int", "low": 12, "high": 36, "step": 8},
        ...     "lr": {"type": "float", "low": 1e-3, "high": 3e-2, "log": True}})
        >>> mutations = pbt_domains(space, ["batch", "units", "lr"])
        >>> mutations["batch"], mutations["units"], type(mutations["lr"]).__name__
        ([32, 64, 128], [12, 20, 28, 36], 'Float')
    """
    domains = tune_domains(space)
    out = {}
    for name in names:
        p = space.params[name]
        if isinstance(p, (IntParam, FloatParam)):
            n = p.n_steps()  # a long grid is perturbed as a number, then put back on it
            out[name] = p.steps() if n is not None and n <= _PBT_LIST_MAX else domains[name]
        else:
            out[name] = p.grid_values()
    return out


def _pbt(spec, space):
    from ray.tune.schedulers import PopulationBasedTraining

    opts = {k: v for k, v in spec.scheduler.options.items() if k != "mutate"}
    opts.setdefault("perturbation_interval", 2)
    opts.setdefault("custom_explore_fn", within_space(space, pbt_mutations(spec)))
    return _stops_paused_trials_for_good(PopulationBasedTraining)(
        time_attr=_TIME, hyperparam_mutations=pbt_domains(space, pbt_mutations(spec)), **opts)


def _takes(class_name: str, *set_here: str, read_here: tuple[str, ...] = ()):
    """Option check: names the Ray scheduler ``class_name`` takes (imported on use)."""
    def check(options):
        from ray.tune import schedulers

        return keyword_problems(getattr(schedulers, class_name), options,
                                set_here=("time_attr", *set_here), read_here=read_here)

    return check


SCHEDULERS.add("fifo", lambda spec, space: None, "No early stopping: every trial runs all epochs")
SCHEDULERS.add("asha", _asha, "Asynchronous successive halving (early stopping)",
               check_options=_takes("ASHAScheduler", "max_t"))
SCHEDULERS.add("hyperband", _hyperband, "HyperBand (pauses and resumes trials from checkpoints)",
               needs_checkpoints=True, check_options=_takes("HyperBandScheduler", "max_t"))
# Ray's median rule also pauses a trial ("yields time") while others wait and too few
# results are in; without a checkpoint the paused trial would start again from epoch 1.
SCHEDULERS.add("median", _median, "Median stopping rule (pauses trials; resumes them from checkpoints)",
               needs_checkpoints=True, check_options=_takes("MedianStoppingRule"))
SCHEDULERS.add("pbt", _pbt, "Genetic: population-based training over checkpoints",
               needs_checkpoints=True,
               check_options=_takes("PopulationBasedTraining", "hyperparam_mutations",
                                    read_here=("mutate",)))
