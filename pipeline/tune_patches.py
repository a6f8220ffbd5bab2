"""Where Ray Tune (2.60) loses a trial it could retry, and the correction the runner installs.

A reused actor takes its next trial with a ``reset`` task (and a ``restore`` task when the
trial has a checkpoint) while the trial is still PENDING; Tune marks it RUNNING only once
they succeed. If the worker dies in that moment (a node lost, a process killed, the OOM
killer), ``TuneController._process_trial_failure`` retries only RUNNING trials, so the
PENDING one ends ERROR at once, whatever ``FailureConfig(max_failures)`` says (found by
``benchmarks/chaos_soak.py``: a trial SIGKILLed as its reused worker took it over was
lost, 0 epochs run). :func:`install` makes such a failure what it is, the failure of a
trial that had started: retried from its checkpoint while ``max_failures`` allows.

    >>> install(); install()  # idempotent
    >>> from ray.tune.execution.tune_controller import TuneController
    >>> getattr(TuneController._process_trial_failure, "corrected", False)
    True
"""

from __future__ import annotations

from typing import Any


def install() -> None:
    """Patch ``TuneController._process_trial_failure`` in this process (once)."""
    from ray.exceptions import RayActorError
    from ray.tune.execution.tune_controller import TuneController
    from ray.tune.experiment import Trial

    original = TuneController._process_trial_failure
    if getattr(original, "corrected", False):
        return

    def _process_trial_failure(self: Any, trial: Any, exception: Any) -> None:
        if trial.status == Trial.PENDING and isinstance(exception, RayActorError):
            # Its actor died: Tune's handler of a dead actor retries a PENDING trial as one
            # that failed in its creation task; the task's failure is left to it.
            self._resetting_trials.discard(trial)
            return
        original(self, trial, exception)

    _process_trial_failure.corrected = True  # type: ignore[attr-defined]
    TuneController._process_trial_failure = _process_trial_failure  # type: ignore[method-assign]
