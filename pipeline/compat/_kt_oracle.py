"""``tuner.oracle`` of the KerasTuner front door: a read-only view of the finished trials.

KerasTuner code reads its search's trials through the oracle (``tuner.oracle.trials``,
``tuner.oracle.get_best_trials(n)``, ``trial.score``, ``trial.hyperparameters``,
``trial.status``, ``trial.metrics.get_history(...)``). Here the trials ran as Ray Tune
trials and live in the pipeline's :class:`~pipeline.results.Results`; this module answers
those calls from them. Nothing is sampled through it: the oracle's driving methods
(``create_trial``, ``update_trial``, ``end_trial``, ...) raise an error that says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

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


class Oracle:
    """``tuner.oracle``: the trials of the last ``search()`` (or of the reloaded project).

    ``objective`` is the tuner's ``Objective`` (a ``MultiObjective`` for several, whose
    scores are then the pipeline's combined value), ``max_trials`` what the tuner was given.
    """

    def __init__(self, results: Any, objective: Any, max_trials: int | None,
                 space: Any, hyperparameters_of: Callable[[str], Any]):
        self.objective = objective
        self.max_trials = max_trials
        self.hyperparameters = space
        self._results = results
        self._hp_of = hyperparameters_of

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
                names = [c for c in history.columns if c not in ("epoch", "from_checkpoint")
                         and history[c].dtype.kind in "fi"]
                for name in names:
                    tracker.history[name] = [
                        MetricObservation([float(v)], int(e) - 1)
                        for e, v in zip(history["epoch"], history[name]) if not _missing(v)]
            score = row.get(metric)
            score = None if _missing(score) else float(score)
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


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))
