"""The Optuna door's study actor: the real ``optuna.Study``, held next to the driver.

:class:`_StudyHolder` runs as a Ray actor for one ``optimize`` call. Trials ask it for
their Optuna trial (``study.ask()``) and send it every ``Trial`` call
(:mod:`pipeline.compat._optuna_trial`); it tells the study how each trial ended and logs
it as ``study.optimize`` does, and queues the frozen trials for the driver's callbacks
(:mod:`pipeline.compat._optuna_driver`).
"""

from __future__ import annotations

import contextlib
import logging as logging_
import time
import warnings
from typing import Any, Iterator

import optuna as _optuna
from optuna.trial import TrialState

_SUGGEST = {"suggest_float", "suggest_int", "suggest_categorical", "suggest_uniform",
            "suggest_loguniform", "suggest_discrete_uniform"}
_TRIAL_CALLS = _SUGGEST | {"report", "should_prune", "set_user_attr", "params", "distributions",
                           "user_attrs", "datetime_start", "number", "_trial_id",
                           "set_constraint", "constraints"}
# What an objective may ask of the study's storage (``trial.storage``): attributes of trials
# and of the study, as Optuna's artifact and integration helpers do.
_STORAGE_CALLS = {"set_trial_system_attr", "set_trial_user_attr", "get_trial", "get_trial_params",
                  "get_trial_param", "get_trial_user_attrs", "get_trial_system_attrs",
                  "set_study_user_attr", "set_study_system_attr", "get_study_user_attrs",
                  "get_study_system_attrs", "get_all_trials", "get_n_trials", "get_best_trial",
                  "get_study_directions", "get_study_name_from_id", "get_study_id_from_name",
                  "get_trial_id_from_study_id_trial_number", "get_trial_number_from_id"}
# What an objective may read of its study (``trial.study``): attributes, and methods (True).
_STUDY_READS = {"best_value": False, "best_params": False, "best_trial": False,
                "best_trials": False, "trials": False, "direction": False, "directions": False,
                "user_attrs": False, "system_attrs": False, "study_name": False,
                "metric_names": False, "get_trials": True}


def _portable(exc: BaseException) -> BaseException:
    """``exc`` if it survives the trip to the driver, else a ``RuntimeError`` naming it.

    Ray carries it with cloudpickle, which sends a class the user's script defines by value
    and makes it the script's own class again there: ``except MyError`` around
    ``optimize`` catches a ``MyError`` an objective raised."""
    from ray import cloudpickle

    try:
        cloudpickle.loads(cloudpickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001 - unpicklable user exceptions travel as text
        return RuntimeError(f"{type(exc).__name__}: {exc}")


class _KeepLogs(logging_.Handler):
    """The study actor's Optuna log records, kept for the driver to print (with the time
    each was made: Optuna's lines carry it)."""

    def __init__(self, into: list[tuple[str, int, str, float]]):
        super().__init__()
        self.into = into

    def emit(self, record: logging_.LogRecord) -> None:
        self.into.append((record.name, record.levelno, record.getMessage(), record.created))


@contextlib.contextmanager
def _quietly() -> Iterator[None]:
    """Optuna's INFO lines off meanwhile (a study created again is not news to the user)."""
    verbosity = _optuna.logging.get_verbosity()
    _optuna.logging.set_verbosity(max(verbosity, _optuna.logging.WARNING))
    try:
        yield
    finally:
        _optuna.logging.set_verbosity(verbosity)


class _StudyHolder:
    """Holds the real ``optuna.Study``; runs as a Ray actor next to the driver."""

    def __init__(self, create_kwargs: dict[str, Any], prior: list, study_attrs: dict[str, Any],
                 queue: bool, verbosity: int, deadline: float | None = None):
        import optuna

        # Optuna's log lines ("Trial 3 finished with value ...") go to the driver, which
        # prints them as Optuna would (:meth:`drain`): not through Ray's worker log, which
        # prefixes them and folds lines that differ only in numbers
        self.logs: list[tuple[str, int, str, float]] = []
        optuna.logging.disable_default_handler()
        optuna.logging.get_logger("optuna").addHandler(_KeepLogs(self.logs))
        optuna.logging.set_verbosity(verbosity)
        with _quietly():  # the driver logged its creation already
            self.study = optuna.create_study(**create_kwargs)
        if prior:
            self.study.add_trials(prior)
        for key, value in study_attrs.get("user", {}).items():
            self.study.set_user_attr(key, value)
        if study_attrs.get("metric_names"):
            self.study.set_metric_names(study_attrs["metric_names"])
        self.queue: list | None = [] if queue else None  # finished trials, for the driver's callbacks
        self.trials: dict[int, Any] = {}
        self.by_tune_id: dict[str, int] = {}
        self.errors: list[tuple[int, BaseException]] = []  # raised, not in catch: (number, exception)
        self.closed = False
        self.deadline = deadline  # time.time() after which no trial starts (optimize's timeout)

    def ask(self, tune_trial_id: str) -> int | None:
        """The trial number of this Tune trial (a new Optuna trial, or its own if retried);
        None once the study stopped: the Tune trial then ends without one."""
        number = self.by_tune_id.get(tune_trial_id)
        if number is not None and number in self.trials:  # a retried Tune trial keeps its Optuna trial
            return number
        if self.closed or (self.deadline is not None and time.time() >= self.deadline):
            return None  # as Optuna: no trial starts after study.stop() or the timeout
        t = self.study.ask()
        self.trials[t.number] = t
        self.by_tune_id[tune_trial_id] = t.number
        return t.number

    def call(self, number: int, method: str, args: tuple, kwargs: dict) -> Any:
        if method not in _TRIAL_CALLS:
            raise AttributeError(f"Trial has no method {method!r} here")
        attr = getattr(self.trials[number], method)
        if not callable(attr):
            return attr
        with warnings.catch_warnings():  # deprecations are raised in the objective's process
            warnings.simplefilter("ignore", FutureWarning)
            return attr(*args, **kwargs)

    def finish(self, number: int, result: Any, state: str | None, error: BaseException | None = None,
               caught: bool = False) -> tuple[str, list[float] | None]:
        """Tell the study how the trial ended and log it as ``study.optimize`` does; its frozen
        trial is queued for the driver, which runs the callbacks (:meth:`drain`). ``error``:
        what the objective raised; ``caught``: it is in ``optimize``'s ``catch`` (only the
        trial fails), else ``optimize`` raises it (:attr:`errors`) and, as in Optuna, no
        callback is called for that trial."""
        from optuna.study._tell import _tell_with_warning

        t = self.trials.pop(number, None)
        if t is None:
            storage = self.study._storage
            frozen = storage.get_trial(
                storage.get_trial_id_from_study_id_trial_number(self.study._study_id, number))
            return frozen.state.name, frozen.values
        tell_state = {"PRUNED": TrialState.PRUNED, "FAIL": TrialState.FAIL}.get(state or "")
        new_state, values, warning = _tell_with_warning(
            study=self.study, trial=t, value_or_values=None if tell_state else result,
            state=tell_state, suppress_warning=True)
        params = t.params
        if new_state == TrialState.COMPLETE:
            self.study._log_completed_trial(values or [], number, params)
        elif new_state == TrialState.PRUNED:
            _optuna.logging.get_logger("optuna.study._optimize").info(f"Trial {number} pruned. ")
        else:
            message = repr(error) if error is not None else warning
            logger = _optuna.logging.get_logger("optuna.study._optimize")
            logger.warning(f"Trial {number} failed with parameters: {params} because of the "
                           f"following error: {message}.")
            logger.warning(f"Trial {number} failed with value {result!r}.")
            if error is not None and not caught:
                self.errors.append((number, error))
                return new_state.name, values  # as Optuna: no callback for it, optimize raises it
        if self.queue is not None:
            self.queue.append(self.study._storage.get_trial(t._trial_id))
        return new_state.name, values

    def study_read(self, name: str, args: tuple = (), kwargs: dict | None = None) -> Any:
        """What an objective reads of its study (``trial.study``, :class:`_StudyView`)."""
        if name not in _STUDY_READS:
            raise AttributeError(f"trial.study.{name} cannot be read from an objective")
        value = getattr(self.study, name)
        return value(*args, **(kwargs or {})) if _STUDY_READS[name] else value

    def storage_call(self, method: str, args: tuple, kwargs: dict) -> Any:
        """A call an objective makes on ``trial.storage`` (:class:`_StudyStorage`)."""
        if method not in _STORAGE_CALLS:
            raise AttributeError(f"the study's storage cannot be called for {method!r} from an objective")
        return getattr(self.study._storage, method)(*args, **kwargs)

    def settle(self, tune_id: str, status: str) -> None:
        """A Tune trial ended (``TERMINATED`` or ``ERROR``) without its objective telling the
        study (Tune's scheduler stopped it, or its worker was lost): PRUNED if it reported
        an intermediate value and Tune stopped it, FAIL otherwise."""
        number = self.by_tune_id.get(tune_id)
        if number is None or number not in self.trials:
            return
        t = self.trials[number]
        stopped = status == "TERMINATED"
        has_steps = bool(self.study._storage.get_trial(t._trial_id).intermediate_values)
        self.finish(number, None, "PRUNED" if stopped and has_steps else "FAIL")

    def reconcile(self, tune_status: dict[str, str]) -> None:
        """Trials Tune stopped (or lost) without the objective reporting back, at the end."""
        for tune_id in list(self.by_tune_id):
            self.settle(tune_id, tune_status.get(tune_id, "ERROR"))

    def close(self) -> None:
        """The study stopped: Tune trials that start from now on get no Optuna trial."""
        self.closed = True

    def raised(self, tune_id: str) -> bool:
        """Whether this Tune trial's objective raised an exception not in ``catch``."""
        number = self.by_tune_id.get(tune_id)
        return any(n == number for n, _ in self.errors)

    def drain(self, with_trials: bool) -> tuple[list, list | None, list[tuple[str, int, str, float]]]:
        """The frozen trials finished since the last call, in finishing order (then
        forgotten), and, if asked and there are any, all the study's trials now; and the
        Optuna log lines since the last call (logger name, level, message, time)."""
        logs, self.logs[:] = list(self.logs), []
        if self.queue is None:
            return [], None, logs
        finished, self.queue = self.queue, []
        trials = self.study.get_trials(deepcopy=True) if with_trials and finished else None
        return finished, trials, logs

    def export(self) -> tuple[list, Any, list[tuple[int, BaseException]]]:
        return self.study.get_trials(deepcopy=True), self.study.sampler, self.errors
