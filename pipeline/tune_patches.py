"""Where Ray Tune (2.60) loses a trial it could retry, or waits on a worker nobody needs, and
the corrections the runner installs.

**A retried trial.** A reused actor takes its next trial with a ``reset`` task (and a
``restore`` task when the trial has a checkpoint) while the trial is still PENDING; Tune
marks it RUNNING only once they succeed. If the worker dies in that moment (a node lost, a
process killed, the OOM killer), ``TuneController._process_trial_failure`` retries only
RUNNING trials, so the PENDING one ends ERROR at once, whatever ``FailureConfig(max_failures)``
says (found by ``benchmarks/chaos_soak.py``: a trial SIGKILLed as its reused worker took it
over was lost, 0 epochs run). The correction makes such a failure what it is, the failure
of a trial that had started: retried from its checkpoint while ``max_failures`` allows.

**A run's end.** Tune asks for a trial's actor, and while that actor's process starts
(seconds: it imports TensorFlow) another trial's actor finishes and, reused, takes the
trial over. The actor still starting is then asked to end, but an actor ends only once it
has started, and when the run ends ``TuneController._cleanup_trials`` waits for it, up to
5 s: a back-to-back search of 3 small trials on 2 CPUs took 13.3 s instead of 9.3 s. The
correction ends at once, as the run ends, each actor that Tune has already let go of
and whose creation is still under way: it has run nothing, so nothing is lost.

**A run's last actors.** Tune ends them with the run; in a front door's session they are
parked for the next run instead (:mod:`pipeline.worker_park`, whose hooks this installs
too; they do nothing where no park is active).

    >>> install(); install()  # idempotent
    >>> from ray.tune.execution.tune_controller import TuneController
    >>> from pipeline._patch import is_wrapped
    >>> is_wrapped(TuneController, "_process_trial_failure", _retry_pending_trials)
    True
    >>> is_wrapped(TuneController, "_cleanup_trials", _end_unstarted_actors)
    True
"""

from __future__ import annotations

import logging
from typing import Any

from pipeline import worker_park
from pipeline._patch import wrap_once

log = logging.getLogger(__name__)


def install() -> None:
    """Patch ``TuneController`` in this process (once)."""
    from ray.tune.execution.tune_controller import TuneController

    wrap_once(TuneController, "_process_trial_failure", _retry_pending_trials)
    wrap_once(TuneController, "_cleanup_trials", _end_unstarted_actors)
    worker_park.install(TuneController)  # inert unless the run's session has a park


def _retry_pending_trials(original: Any) -> Any:
    from ray.exceptions import RayActorError
    from ray.tune.experiment import Trial

    def _process_trial_failure(self: Any, trial: Any, exception: Any) -> None:
        if trial.status == Trial.PENDING and isinstance(exception, RayActorError):
            # Its actor died: Tune's handler of a dead actor retries a PENDING trial as one
            # that failed in its creation task; the task's failure is left to it.
            self._resetting_trials.discard(trial)
            return
        original(self, trial, exception)

    return _process_trial_failure


def _end_unstarted_actors(original: Any) -> Any:
    def _cleanup_trials(self: Any) -> None:
        try:
            for ray_actor in _let_go_while_starting(self):
                _kill(ray_actor)
        except Exception:  # noqa: BLE001 - Tune's own cleanup below ends them anyway, later
            log.debug("ending the actors still starting failed", exc_info=True)
        original(self)

    return _cleanup_trials


def _let_go_while_starting(tune_controller: Any) -> list[Any]:
    """The actors Tune asked to end (no trial holds them) whose creation is still under way."""
    from ray._private import state

    manager = tune_controller._actor_manager
    live = manager._live_actors_to_ray_actors_resources
    held = set(tune_controller._actor_to_trial)
    starting = []
    for tracked in list(tune_controller._stopping_actors):
        if tracked in held or tracked not in live:
            continue
        ray_actor = live[tracked][0]
        info = state.actors(actor_id=ray_actor._actor_id.hex())
        if info and info.get("State") in ("DEPENDENCIES_UNREADY", "PENDING_CREATION"):
            starting.append(ray_actor)
    return starting


def _kill(ray_actor: Any) -> None:
    import ray

    # Tune's stop request for it then fails, which Tune takes as the actor having ended
    ray.kill(ray_actor, no_restart=True)
