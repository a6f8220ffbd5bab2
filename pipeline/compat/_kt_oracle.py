"""``tuner.oracle`` of the KerasTuner front door: KerasTuner's oracle classes, as what a search
is, and once searched a read-only view of its trials.

``kt.oracles.RandomSearchOracle(...)`` and the others take KerasTuner's arguments (and make its
checks); ``kt.Tuner(oracle=...)`` searches as the matching tuner class would with them, and
each tuner's ``tuner.oracle`` is an oracle of its class. KerasTuner code reads its search's
trials through the oracle (``tuner.oracle.trials``, ``tuner.oracle.get_best_trials(n)``,
``trial.score``, ``trial.hyperparameters``, ``trial.status``,
``trial.metrics.get_history(...)``). Here the trials ran as Ray Tune trials and live in the
pipeline's :class:`~pipeline.results.Results`; this module answers those calls from them.
Nothing is sampled through it: the oracle's driving methods (``create_trial``,
``update_trial``, ``end_trial``, ...) raise an error that says so, and an oracle subclass
overriding one of them (:func:`custom_driving`) is refused by the tuner.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

# Columns of a trial's history that are not its metrics: the pipeline's and Ray Tune's own
# bookkeeping (the trial's config is there too, as config/<name>).
_NOT_METRICS = {"epoch", "from_checkpoint", "num_params", "node_id", "timestamp",
                "training_iteration", "time_this_iter_s", "time_total_s", "time_since_restore",
                "iterations_since_restore", "pid", "done", "node_ip", "hostname", "date",
                "trial_id", "checkpoint_dir_name", "should_checkpoint", "episodes_total",
                "timesteps_total"}

# Ray Tune's trial states as KerasTuner's ``TrialStatus`` names them.
_STATUS = {"TERMINATED": "COMPLETED", "ERROR": "FAILED", "RUNNING": "RUNNING",
           "PENDING": "IDLE", "PAUSED": "IDLE"}


@dataclass(frozen=True)
class MetricObservation:
    """One epoch's value of a metric (``value`` is a list, one entry per execution, as in KerasTuner)."""

    value: list[float]
    step: int

    def mean(self) -> float:
        return sum(self.value) / len(self.value)


@dataclass
class MetricsTracker:
    """A trial's per-epoch metrics (KerasTuner's ``trial.metrics``); steps count epochs from 0."""

    history: dict[str, list[MetricObservation]] = field(default_factory=dict)
    directions: dict[str, str] = field(default_factory=dict)

    @property
    def metrics(self) -> dict[str, list[MetricObservation]]:
        return self.history

    def exists(self, name: str) -> bool:
        return name in self.history

    def get_history(self, name: str) -> list[MetricObservation]:
        return list(self.history.get(name, []))

    def get_direction(self, name: str) -> str:
        return self.directions.get(name) or ("max" if "acc" in name else "min")

    def get_best_value(self, name: str) -> float | None:
        values = [o.mean() for o in self.history.get(name, [])]
        if not values:
            return None
        return max(values) if self.get_direction(name) == "max" else min(values)

    def get_best_step(self, name: str) -> int | None:
        best = self.get_best_value(name)
        return next((o.step for o in self.history.get(name, []) if o.mean() == best), None)

    def get_last_value(self, name: str) -> float | None:
        history = self.history.get(name)
        return history[-1].mean() if history else None


@dataclass
class Trial:
    """One finished (or failed) trial, as KerasTuner's ``Trial`` presents it."""

    trial_id: str
    hyperparameters: Any  # the front door's HyperParameters, answering with the trial's values
    score: float | None
    best_step: int | None
    status: str
    metrics: MetricsTracker
    message: str | None = None

    def display_hyperparameters(self) -> None:
        values = self.hyperparameters.values
        for name, value in values.items():
            print(f"{name}:", value)
        if not values:
            print("default configuration")

    def summary(self) -> None:
        print(f"Trial {self.trial_id} summary")
        print("Hyperparameters:")
        self.display_hyperparameters()
        if self.score is not None:
            print(f"Score: {self.score}")
        if self.message is not None:
            print(self.message)


# What drives a KerasTuner oracle's trials; a subclass that overrides one of them has a
# search of its own, which this front door cannot run (Tuner(oracle=...) refuses it).
DRIVING = ("populate_space", "_populate_space", "create_trial", "update_trial", "end_trial",
           "score_trial", "_score_trial", "update_space", "get_state", "set_state")


class Oracle:
    """KerasTuner's ``Oracle``: here, what a search is (objective, ``max_trials``, space, seed,
    retries), and once its tuner has searched, a read-only view of the trials.

    The tuner classes make theirs (``tuner.oracle`` is a ``RandomSearchOracle`` of a
    ``RandomSearch`` ...); ``kt.Tuner(oracle=kt.oracles.RandomSearchOracle(...),
    hypermodel=...)`` searches as ``kt.RandomSearch`` with the oracle's arguments would.
    Trials are sampled by the searcher on Ray Tune, not through the oracle: its driving
    methods (``create_trial``, ``update_trial``, ...) raise an error that says so, and an
    oracle subclass that overrides one of them is refused by the tuner.

    ``objective`` is the tuner's ``Objective`` (a ``MultiObjective`` for several, whose
    scores are then the pipeline's combined value).
    """

    def __init__(self, objective=None, max_trials=None, hyperparameters=None,
                 allow_new_entries=True, tune_new_entries=True, seed=None,
                 max_retries_per_trial=0, max_consecutive_failed_trials=3):
        from pipeline.compat._hyperparameters import HyperParameters

        if not hyperparameters:  # KerasTuner's checks (its messages)
            if not tune_new_entries:
                raise ValueError("If you set `tune_new_entries=False`, you must specify the "
                                 "search space via the `hyperparameters` argument.")
            if not allow_new_entries:
                raise ValueError("If you set `allow_new_entries=False`, you must specify the "
                                 "search space via the `hyperparameters` argument.")
        self.objective_arg = objective  # as given: the tuner reads it
        self.objective = None if objective is None else _objective(objective)
        self.max_trials = max_trials
        self.declared = hyperparameters or None
        self.hyperparameters = hyperparameters or HyperParameters()
        self.allow_new_entries, self.tune_new_entries = allow_new_entries, tune_new_entries
        self.seed = seed
        self.max_retries_per_trial = max_retries_per_trial
        self.max_consecutive_failed_trials = max_consecutive_failed_trials
        self._results: Any = None
        self._hp_of: Callable[[str], Any] | None = None

    def _attach(self, results: Any, objective: Any, max_trials: int | None, space: Any,
                hyperparameters_of: Callable[[str], Any]) -> "Oracle":
        """Show the trials of ``results`` (the tuner's, after ``search()`` or a reload)."""
        self._results, self._hp_of = results, hyperparameters_of
        self.objective, self.max_trials, self.hyperparameters = objective, max_trials, space
        return self

    def get_space(self) -> Any:
        return self.hyperparameters.copy()

    @property
    def trials(self) -> dict[str, Trial]:
        """Every trial by id, in the order they were created."""
        if self._results is None:
            return {}
        res = self._results
        metric = res.metric
        directions = dict(zip(res.spec.objective.metrics, res.spec.objective.modes))
        histories = res.histories
        out: dict[str, Trial] = {}
        for row in res.dataframe().to_dict("records"):
            tid = row["trial_id"]
            history = histories.get(tid)
            tracker = MetricsTracker(directions=directions)
            if history is not None and len(history):
                names = [c for c in history.columns if c not in _NOT_METRICS
                         and not c.startswith("config/") and history[c].dtype.kind in "fi"]
                for name in names:
                    tracker.history[name] = [
                        MetricObservation([float(v)], int(e) - 1)
                        for e, v in zip(history["epoch"], history[name]) if not _missing(v)]
            score = row.get(metric)
            score = None if _missing(score) else float(score)
            assert self._hp_of is not None
            out[tid] = Trial(tid, self._hp_of(tid), score,
                             tracker.get_best_step(metric) if score is not None else None,
                             _STATUS.get(row.get("status"), "INVALID"), tracker,
                             row.get("error") or None)
        return out

    def get_trial(self, trial_id: str) -> Trial:
        return self.trials[trial_id]

    def get_best_trials(self, num_trials: int = 1) -> list[Trial]:
        """The completed trials with a score, best first (KerasTuner's order)."""
        done = [t for t in self.trials.values() if t.status == "COMPLETED" and t.score is not None]
        reverse = self._results is not None and self._results.mode == "max"
        return sorted(done, key=lambda t: t.score, reverse=reverse)[:num_trials]

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise AttributeError(
            f"tuner.oracle.{name}: not available in this front door. Its oracle is a read-only "
            "view of the trials (trials, get_trial, get_best_trials, objective, max_trials, "
            "hyperparameters, get_space); trials are sampled by the searcher on Ray Tune "
            "(Tuner(searcher=...)), not driven through the oracle")


class RandomSearchOracle(Oracle):
    """KerasTuner's random search oracle (``kt.RandomSearch``'s)."""

    def __init__(self, objective=None, max_trials=10, seed=None, hyperparameters=None,
                 allow_new_entries=True, tune_new_entries=True, max_retries_per_trial=0,
                 max_consecutive_failed_trials=3):
        super().__init__(objective, max_trials, hyperparameters, allow_new_entries,
                         tune_new_entries, seed, max_retries_per_trial,
                         max_consecutive_failed_trials)


class GridSearchOracle(Oracle):
    """KerasTuner's grid search oracle (``kt.GridSearch``'s); ``max_trials`` None: the whole grid."""

    def __init__(self, objective=None, max_trials=None, seed=None, hyperparameters=None,
                 allow_new_entries=True, tune_new_entries=True, max_retries_per_trial=0,
                 max_consecutive_failed_trials=3):
        super().__init__(objective, max_trials, hyperparameters, allow_new_entries,
                         tune_new_entries, seed, max_retries_per_trial,
                         max_consecutive_failed_trials)


class BayesianOptimizationOracle(Oracle):
    """KerasTuner's Bayesian optimization oracle (``kt.BayesianOptimization``'s)."""

    def __init__(self, objective=None, max_trials=10, num_initial_points=None, alpha=1e-4,
                 beta=2.6, seed=None, hyperparameters=None, allow_new_entries=True,
                 tune_new_entries=True, max_retries_per_trial=0, max_consecutive_failed_trials=3):
        super().__init__(objective, max_trials, hyperparameters, allow_new_entries,
                         tune_new_entries, seed, max_retries_per_trial,
                         max_consecutive_failed_trials)
        self.num_initial_points, self.alpha, self.beta = num_initial_points, alpha, beta


class HyperbandOracle(Oracle):
    """KerasTuner's Hyperband oracle (``kt.Hyperband``'s)."""

    def __init__(self, objective=None, max_epochs=100, factor=3, hyperband_iterations=1,
                 seed=None, hyperparameters=None, allow_new_entries=True, tune_new_entries=True,
                 max_retries_per_trial=0, max_consecutive_failed_trials=3):
        super().__init__(objective, None, hyperparameters, allow_new_entries, tune_new_entries,
                         seed, max_retries_per_trial, max_consecutive_failed_trials)
        if factor < 2:
            raise ValueError("factor needs to be a int larger than 1.")
        self.max_epochs, self.factor = max_epochs, factor
        self.hyperband_iterations = hyperband_iterations or float("inf")


def custom_driving(oracle: Oracle) -> list[str]:
    """The driving methods a user's oracle subclass overrides (empty for this module's)."""
    mine = {Oracle, RandomSearchOracle, GridSearchOracle, BayesianOptimizationOracle,
            HyperbandOracle, object}
    return [name for cls in type(oracle).__mro__ if cls not in mine
            for name in DRIVING if name in vars(cls)]


def _objective(objective: Any) -> Any:
    from pipeline.compat._kt_objective import _as_objective

    return _as_objective(objective, True)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))
