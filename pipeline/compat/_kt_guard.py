"""The driver's watch over a KerasTuner search (:class:`SearchGuard`, a Tune callback).

It stops the run as soon as Tune reports a trial that raised a ``kt.errors.FatalError``
(no new trial starts; trials still running are stopped), and ``search()`` then raises that
error; and once ``max_consecutive_failed_trials`` trials failed in a row, as KerasTuner
stops, instead of finishing the remaining trials first.
"""

from __future__ import annotations

from typing import Any

from ray import tune

from pipeline.compat._kt_errors import FatalError
from pipeline.compat._stopping import StopWhen


def _cause(error: BaseException | None) -> BaseException | None:
    """The user's exception inside Ray's wrappers (RayTaskError and the like; a multi-worker
    trial's Ray Train error holds each failed worker's, by rank)."""
    seen = 0
    while error is not None and not isinstance(error, FatalError) and seen < 5:
        failures = getattr(error, "worker_failures", None)
        error = ((next(iter(failures.values())) if isinstance(failures, dict) and failures else None)
                 or getattr(error, "cause", None) or error.__cause__)
        seen += 1
    return error


def _trial_error(trial: Any) -> BaseException | None:
    """The exception the trial raised, as Tune pickled it on the driver (its storage copy
    comes only with the next sync)."""
    import cloudpickle

    try:
        path = trial.pickled_error_file
        if path:
            with open(path, "rb") as f:
                return cloudpickle.load(f)
        return trial.get_pickled_error()
    except Exception:  # noqa: BLE001 - an error that cannot be read back is a plain failure
        return None


class SearchGuard(tune.Callback):
    """Stops the run at a trial's :class:`FatalError` or at too many failures in a row.

    Tune pickles its run configuration (the experiment state): a pickled copy forgets the
    driver's findings and never stops anything.
    """

    def __init__(self, max_consecutive_failed_trials: int | None):
        self.limit = max_consecutive_failed_trials or 0
        self.fatal: BaseException | None = None
        self.failed_in_a_row = 0
        self.too_many: str | None = None  # the last error, once the limit was reached
        self.stopper = StopWhen(self)

    def __getstate__(self) -> dict[str, Any]:
        return {"limit": 0, "fatal": None, "failed_in_a_row": 0, "too_many": None,
                "stopper": StopWhen(None)}

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.failed_in_a_row = 0

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        error = _trial_error(trial)
        cause = _cause(error)
        if isinstance(cause, FatalError) and self.fatal is None:
            self.fatal = cause
        self.failed_in_a_row += 1
        if self.limit and self.failed_in_a_row >= self.limit and self.too_many is None:
            self.too_many = str(cause or error or "")

    @property
    def stopping(self) -> bool:
        return self.fatal is not None or self.too_many is not None

