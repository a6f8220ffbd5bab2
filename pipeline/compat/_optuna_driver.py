"""The driver's side of ``study.optimize(..., callbacks=[...])``: callbacks run where Optuna runs them.

The study actor (:class:`pipeline.compat._optuna_actor._StudyHolder`) queues the frozen trial of
every trial it finishes. :class:`StudyCallbacks`, a ``ray.tune.Callback`` in Tune's
controller loop (the driver process), drains that queue as Tune completes trials and after
each step, makes the user's study current and calls each callback as Optuna does:
``callback(study, frozen_trial)``, once per trial, in finishing order. Once a callback
called ``study.stop()`` or raised, or an objective raised an exception not in ``catch``,
the run starts no new trial (:attr:`StudyCallbacks.stopping`, given to
:class:`pipeline.soft_stop.SoftStop`) and ends when the running ones end, as Optuna's
``optimize`` with ``n_jobs > 1`` does. The study's Optuna log lines
("Trial 3 finished with value ...") are printed here too, by the driver's Optuna logger.
"""

from __future__ import annotations

import copy
import logging
import time
from typing import Any, Callable

import ray
from ray import tune


class StudyCallbacks(tune.Callback):
    """Runs the user's Optuna callbacks on the driver after each trial finishes, and prints
    the study's Optuna log lines there.

    Tune pickles its run configuration (``tuner.pkl``, the experiment state): a pickled
    copy keeps none of the driver's objects and does nothing.
    """

    def __init__(self, study: Any, actor: Any, callbacks: list[Callable], in_memory: bool,
                 verbosity: int = logging.INFO):
        self.study, self.actor, self.callbacks, self.in_memory = study, actor, callbacks, in_memory
        self.verbosity = verbosity  # Optuna's, as the user's script set it
        self.error: Exception | None = None  # the first exception a callback raised
        self.failed = False  # an objective raised an exception not in ``catch``
        self._asked = 0.0  # when a step last asked the study
        self._pending: Any = None  # that question, until answered

    def __getstate__(self) -> dict[str, Any]:
        return {"study": None, "actor": None, "callbacks": [], "in_memory": True, "error": None,
                "failed": False, "_asked": 0.0,
                "_pending": None, "verbosity": self.verbosity}

    @property
    def stopping(self) -> bool:
        """A callback called ``study.stop()`` or raised, or an objective raised an exception
        not in ``catch``: no trial starts any more."""
        return (self.error is not None or self.failed
                or bool(self.study is not None and self.study._stop_requested))

    # Tune's hooks (the controller loop, on the driver)
    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._settle(trial.trial_id, "TERMINATED")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._settle(trial.trial_id, "ERROR")
        # its objective raised an exception not in optimize's ``catch`` (judged in the trial's
        # worker, where the user's classes are the objective's): optimize raises it at the end
        if self.actor is not None and not self.failed and ray.get(self.actor.raised.remote(trial.trial_id)):
            self.failed = True
            self.actor.close.remote()

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        # a trial the study finished before Tune saw it end (or a retried one), and the log
        # lines; without waiting on the study (Tune warns of a slow step, and the study
        # actor may still be starting): its answer is taken at a later step
        if self._pending is not None:
            ready, _ = ray.wait([self._pending], timeout=0)
            if not ready:
                return
            pending, self._pending = self._pending, None
            self._handle(*ray.get(pending))
        if self.actor is not None and (self.callbacks or time.monotonic() - self._asked > 0.25):
            self._asked = time.monotonic()  # with no callbacks, a few times a second will do
            self._pending = self.actor.drain.remote(self.in_memory)

    def _settle(self, tune_id: str, status: str) -> None:
        """Tune ended a trial: one its scheduler stopped is PRUNED in the study now."""
        if self.actor is None:
            return
        ray.get(self.actor.settle.remote(tune_id, status))
        self.drain()

    def drain(self) -> None:
        """Print the study's Optuna log lines since the last call, as Optuna prints them
        (here, in the script's process), and call the callbacks for the trials the study
        finished since then."""
        if self.actor is None:
            return
        if self._pending is not None:  # asked at a step: its answer comes first
            pending, self._pending = self._pending, None
            self._handle(*ray.get(pending))
        self._handle(*ray.get(self.actor.drain.remote(self.in_memory)))

    def _handle(self, finished: list, trials: list | None,
                logs: list[tuple[str, int, str, float]]) -> None:
        for name, level, message, created in logs:  # at the user's verbosity (Tune's searcher lowers it)
            if level >= self.verbosity:
                logger = logging.getLogger(name)
                record = logger.makeRecord(name, level, "(study)", 0, message, (), None)
                record.created, record.msecs = created, (created % 1) * 1000  # when it happened
                logger.handle(record)
        if not finished or not self.callbacks:
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
        if self.stopping and self.actor is not None:
            self.actor.close.remote()  # Tune trials starting after this get no Optuna trial

