"""The driver's side of ``study.optimize(..., callbacks=[...])``: callbacks run where Optuna runs them.

The study actor (:class:`pipeline.compat.optuna._StudyHolder`) queues the frozen trial of
every trial it finishes. :class:`StudyCallbacks`, a ``ray.tune.Callback`` in Tune's
controller loop (the driver process), drains that queue as Tune completes trials and after
each step, makes the user's study current and calls each callback as Optuna does:
``callback(study, frozen_trial)``, once per trial, in finishing order. :class:`~pipeline.compat._stopping.StopWhen`
ends the run once a callback called ``study.stop()`` or raised.
"""

from __future__ import annotations

import copy
from typing import Any, Callable

import ray
from ray import tune

from pipeline.compat._stopping import StopWhen


class StudyCallbacks(tune.Callback):
    """Runs the user's Optuna callbacks on the driver after each trial finishes.

    Tune pickles its run configuration (``tuner.pkl``, the experiment state): a pickled
    copy keeps none of the driver's objects and does nothing.
    """

    def __init__(self, study: Any, actor: Any, callbacks: list[Callable], in_memory: bool):
        self.study, self.actor, self.callbacks, self.in_memory = study, actor, callbacks, in_memory
        self.error: Exception | None = None  # the first exception a callback raised
        self.stopper = StopWhen(self)

    def __getstate__(self) -> dict[str, Any]:
        return {"study": None, "actor": None, "callbacks": [], "in_memory": True, "error": None,
                "stopper": StopWhen(None)}

    @property
    def stopping(self) -> bool:
        """A callback called ``study.stop()`` or raised: the run ends."""
        return self.error is not None or bool(self.study is not None and self.study._stop_requested)

    # Tune's hooks (the controller loop, on the driver)
    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._settle(trial.trial_id, "TERMINATED")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._settle(trial.trial_id, "ERROR")

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        self.drain()  # a trial the study finished before Tune saw it end (or a retried one)

    def _settle(self, tune_id: str, status: str) -> None:
        """Tune ended a trial: one its scheduler stopped is PRUNED in the study now."""
        if self.actor is None:
            return
        ray.get(self.actor.settle.remote(tune_id, status))
        self.drain()

    def drain(self) -> None:
        """Call the callbacks for the trials the study finished since the last call."""
        if self.actor is None or not self.callbacks:
            return
        finished, trials = ray.get(self.actor.drain.remote(self.in_memory))
        if not finished:
            return
        if trials is not None:
            self.study._sync(trials)
        for frozen in finished:
            if self.error is not None:  # Optuna calls no callback after one raised
                break
            for callback in self.callbacks:
                try:
                    callback(self.study, copy.deepcopy(frozen))
                except Exception as exc:  # noqa: BLE001 - re-raised by optimize once Ray wound down
                    self.error = exc
                    break
        if self.stopping:
            self.actor.close.remote()  # Tune trials starting before the stopper acts get no trial

