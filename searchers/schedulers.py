"""Trial schedulers: early stopping (ASHA, HyperBand, median) and PBT."""

from __future__ import annotations

from searchers._space import tune_domains
from searchers.registry import SCHEDULERS

_TIME = "training_iteration"


def _asha(spec, space):
    from ray.tune.schedulers import ASHAScheduler

    opts = {"grace_period": 1, "reduction_factor": 3, **spec.scheduler.options}
    return ASHAScheduler(time_attr=_TIME, max_t=spec.training.epochs, **opts)


def _hyperband(spec, space):
    from ray.tune.schedulers import HyperBandScheduler

    opts = {"reduction_factor": 3, **spec.scheduler.options}
    return HyperBandScheduler(time_attr=_TIME, max_t=spec.training.epochs, **opts)


def _median(spec, space):
    from ray.tune.schedulers import MedianStoppingRule

    opts = {"grace_period": 1, "min_samples_required": 3, **spec.scheduler.options}
    return MedianStoppingRule(time_attr=_TIME, **opts)


def pbt_mutations(spec) -> list[str]:
    return list(spec.scheduler.options.get("mutate", ["learning_rate"]))


def _pbt(spec, space):
    from ray.tune.schedulers import PopulationBasedTraining

    opts = {k: v for k, v in spec.scheduler.options.items() if k != "mutate"}
    opts.setdefault("perturbation_interval", 2)
    domains = tune_domains(space)
    return PopulationBasedTraining(
        time_attr=_TIME,
        hyperparam_mutations={name: domains[name] for name in pbt_mutations(spec)},
        **opts,
    )


SCHEDULERS.add("fifo", lambda spec, space: None, "No early stopping: every trial runs all epochs")
SCHEDULERS.add("asha", _asha, "Asynchronous successive halving (early stopping)")
SCHEDULERS.add("hyperband", _hyperband, "HyperBand (pauses and resumes trials from checkpoints)",
               needs_checkpoints=True)
SCHEDULERS.add("median", _median, "Median stopping rule")
SCHEDULERS.add("pbt", _pbt, "Genetic: population-based training over checkpoints",
               needs_checkpoints=True)
