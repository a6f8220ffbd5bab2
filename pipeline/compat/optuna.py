"""Optuna's API on this pipeline: ``from pipeline.compat import optuna``.

``create_study(...)`` and ``study.optimize(objective, n_trials=..., timeout=...)``
run each trial of a define-by-run objective as a Ray Tune trial. The objective
itself is the Tune trainable (it may train Keras models or be any Python
function); its ``trial`` is a proxy whose calls go to one driver-side Ray actor
holding a real ``optuna.Study`` with the user's sampler:

* ``trial.suggest_*`` (also the deprecated ``suggest_uniform``,
  ``suggest_loguniform``, ``suggest_discrete_uniform``) are answered by that
  study's ``Trial`` (``study.ask()``), so distributions, log scales, steps,
  conditional (define-by-run) parameters and the sampler's behaviour are
  Optuna's own, and trials run in parallel (``n_jobs``);
* ``trial.report(value, step)`` records the intermediate value in the study and
  reports ``{"value": value, "step": step}`` to Tune, whose scheduler stops
  trials: ``SuccessiveHalvingPruner``/``HyperbandPruner`` -> ``asha``,
  ``MedianPruner`` -> ``median``, ``NopPruner`` -> ``fifo``. With these,
  ``trial.should_prune()`` is False (Tune stops the trial itself; the study
  records it as PRUNED). With no pruner or another one (Percentile, Threshold,
  Patient, Wilcoxon) the scheduler is ``fifo`` and ``should_prune()`` asks the
  study's real pruner, exactly as in Optuna;
* the value returned by the objective is told to the study and reported to Tune.

After ``optimize`` the study is an ordinary Optuna study on the driver:
``best_params``, ``best_value``, ``best_trial``, ``trials``,
``trials_dataframe()``... are Optuna's. Tune's results are stored under
``results_path/<study_name>`` (``study.results`` opens them). ``storage`` is
Optuna's (e.g. ``sqlite:///study.db``); with it ``load_if_exists`` works as in
Optuna.

Differences from Optuna: ``n_jobs`` runs Tune trials in parallel, and when it is
not given as many at a time as the cluster's CPUs hold (said on stderr when
``optimize`` starts; ``n_jobs=1`` runs them one after another, in Optuna's
order); Tune's schedulers count reports, not ``step`` values; an objective
failing with an exception not in ``catch`` re-raises it after all trials ran
(Optuna stops at once); ``study.stop()`` is not supported inside objectives (it raises
there; call it from a callback). ``callbacks`` run as in Optuna: on the driver, in the
process calling ``optimize``, as ``callback(study, frozen_trial)`` once after each trial
finishes (COMPLETE, PRUNED or FAIL), in finishing order, with ``study`` (this object)
up to date (:mod:`pipeline.compat._optuna_driver`); they need not be picklable. A
callback calling ``study.stop()`` (e.g. ``optuna.study.MaxTrialsCallback``) ends
``optimize`` as in Optuna: no new trial starts, and trials still running finish
(:mod:`pipeline.soft_stop`); ``timeout`` does the same at its deadline, counted from the
call to ``optimize``. A callback that raises stops the run the same way, and
``optimize`` raises its exception once the running trials ended, with the finished
trials in the study. An objective that changes state
outside itself (a global list of scores, a dict of models, ``self.`` attributes of a
callable object) changes it in another process: ``optimize`` warns, naming it
(:mod:`pipeline.compat._driver_state`). Each worker unpickles the objective once per
``optimize`` and runs all its trials on that copy: state the objective keeps carries
over between one worker's trials, not between workers.
"""

from __future__ import annotations

import contextlib
import logging as logging_
import os
import pickle
import re
import sys
import time
import uuid
import warnings
from typing import Any, Callable, Iterable, Iterator, Sequence

import optuna as _optuna
from optuna import (  # noqa: F401  (re-exported: code uses optuna.samplers.TPESampler etc.)
    distributions,
    exceptions,
    logging,
    pruners,
    samplers,
    storages,
    trial,
)
from optuna.exceptions import TrialPruned
from optuna.trial import TrialState

from cluster.connect import EarlyStart

__all__ = ["create_study", "load_study", "Study", "Trial", "TrialPruned", "samplers", "pruners",
           "SAMPLER_SEARCHERS"]

SAMPLER_SEARCHERS = {
    "TPESampler": "tpe",
    "RandomSampler": "optuna-random",
    "GPSampler": "gp",
    "CmaEsSampler": "cmaes",
    "NSGAIISampler": "nsga2",
}
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


def __getattr__(name: str) -> Any:  # anything else of Optuna's top level
    return getattr(_optuna, name)


# -- pruners and samplers -> schedulers and searchers ------------------------------------------


def searcher_for(sampler: Any, multi: bool) -> str:
    """The pipeline searcher name matching an Optuna sampler (what the spec records)."""
    name = SAMPLER_SEARCHERS.get(type(sampler).__name__, "optuna-random")
    if multi and name in ("cmaes",):
        return "tpe"
    return name


def scheduler_for(pruner: Any) -> tuple[str, dict[str, Any], int | None, bool]:
    """(scheduler name, options, max_t or None, should_prune asks the study's pruner)."""
    P = _optuna.pruners
    if pruner is None:
        return "fifo", {}, None, True  # Optuna's default MedianPruner, consulted by should_prune()
    if isinstance(pruner, P.NopPruner):
        return "fifo", {}, None, False
    if isinstance(pruner, P.HyperbandPruner):
        rf = int(pruner._reduction_factor)
        max_r = pruner._max_resource
        opts = {"grace_period": int(pruner._min_resource), "reduction_factor": rf}
        return "asha", opts, (int(max_r) + 1 if isinstance(max_r, int) else None), False
    if isinstance(pruner, P.SuccessiveHalvingPruner):
        rf = int(pruner._reduction_factor)
        grace = int(pruner._min_resource or 1) * rf ** int(pruner._min_early_stopping_rate)
        return "asha", {"grace_period": grace, "reduction_factor": rf}, None, False
    if type(pruner) is P.MedianPruner:
        opts = {"grace_period": int(pruner._n_warmup_steps),
                "min_samples_required": max(1, int(pruner._n_startup_trials), int(pruner._n_min_trials))}
        return "median", opts, None, False
    return "fifo", {}, None, True


# -- the study actor (driver side) --------------------------------------------------------------


def _portable(exc: BaseException) -> BaseException:
    try:
        pickle.loads(pickle.dumps(exc))
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
        self.errors: list[tuple[int, BaseException]] = []
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

    def finish(self, number: int, result: Any, state: str | None,
               error: BaseException | None = None) -> tuple[str, list[float] | None]:
        """Tell the study how the trial ended and log it as ``study.optimize`` does; its frozen
        trial is queued for the driver, which runs the callbacks (:meth:`drain`)."""
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
            if error is not None:
                self.errors.append((number, error))
        if self.queue is not None:
            self.queue.append(self.study._storage.get_trial(t._trial_id))
        return new_state.name, values

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


# -- the trial proxy (worker side) ---------------------------------------------------------------


def _deprecated(method: str, args: str) -> None:
    """Optuna's deprecation warning, pointing at the objective's line."""
    warnings.warn(f"{method} has been deprecated in v3.0.0. This feature will be removed in "
                  "v6.0.0. See https://github.com/optuna/optuna/releases/tag/v3.0.0. "
                  f"Use suggest_float{args} instead.", FutureWarning, stacklevel=3)


class _StudyStorage:
    """The study's storage as an objective reaches it (``trial.storage``), e.g. through
    ``optuna.artifacts.upload_artifact(study_or_trial=trial, ...)``: its calls run on the
    study actor, where the storage is (an in-memory one included)."""

    def __init__(self, actor):
        self._actor = actor

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name not in _STORAGE_CALLS:
            raise AttributeError(f"the study's storage cannot be called for {name!r} from an objective")

        def call(*args: Any, **kwargs: Any) -> Any:
            import ray

            return ray.get(self._actor.storage_call.remote(name, args, kwargs))

        return call


class Trial(_optuna.trial.Trial):
    """What the objective receives: Optuna's ``Trial`` API, answered by the study actor.

    It is an ``optuna.trial.Trial`` (code that checks for one, such as Optuna's artifact
    upload, takes it); its state lives in the study actor, never in this object.
    """

    def __init__(self, actor, number: int, metric: str, multi: bool, ask_pruner: bool):
        # no super().__init__: every call goes to the study actor
        self._actor, self._number = actor, number
        self._metric, self._multi, self._ask_pruner = metric, multi, ask_pruner
        self._reports = 0
        self._told = False

    @property
    def number(self) -> int:
        return self._number

    @property
    def _trial_id(self) -> int:  # type: ignore[override]  # the storage's id, for storage calls
        return self._call("_trial_id")

    @property
    def storage(self) -> Any:  # type: ignore[override]
        return _StudyStorage(self._actor)

    @property
    def study(self) -> Any:  # type: ignore[override]
        raise AttributeError("trial.study is not available in an objective here: the objective runs "
                             "in a Ray worker and the study on the driver (use trial.set_user_attr, "
                             "or read the study after optimize)")

    @property
    def relative_params(self) -> dict[str, Any]:
        return {}  # the study actor's Trial samples relative parameters itself

    def set_constraint(self, key: str, value: float) -> None:
        self._call("set_constraint", key, value)

    @property
    def constraints(self) -> dict[str, float]:
        return self._call("constraints")

    def _call(self, method: str, *args, **kwargs) -> Any:
        import ray

        return ray.get(self._actor.call.remote(self._number, method, args, kwargs))

    # suggestions: Optuna's own Trial methods, run in the study
    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None,
                      log: bool = False) -> float:
        return self._call("suggest_float", name, low, high, step=step, log=log)

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int:
        return self._call("suggest_int", name, low, high, step=step, log=log)

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        return self._call("suggest_categorical", name, list(choices))

    def suggest_uniform(self, name: str, low: float, high: float) -> float:
        _deprecated("suggest_uniform", "")
        return self._call("suggest_uniform", name, low, high)

    def suggest_loguniform(self, name: str, low: float, high: float) -> float:
        _deprecated("suggest_loguniform", "(..., log=True)")
        return self._call("suggest_loguniform", name, low, high)

    def suggest_discrete_uniform(self, name: str, low: float, high: float, q: float) -> float:
        _deprecated("suggest_discrete_uniform", "(..., step=...)")
        return self._call("suggest_discrete_uniform", name, low, high, q)

    def report(self, value: float, step: int) -> None:
        """Record an intermediate value; Tune's scheduler may stop the trial here."""
        from ray import tune

        if self._multi:
            raise NotImplementedError("Trial.report is not supported for multi-objective optimization.")
        value = float(value)
        self._call("report", value, int(step))
        self._reports += 1
        try:
            tune.report({self._metric: value, "step": int(step), "epoch": self._reports})
        except SystemExit:  # Tune stopped this trial (the scheduler pruned it)
            self._finish(None, "PRUNED")
            raise

    def should_prune(self) -> bool:
        return bool(self._call("should_prune")) if self._ask_pruner else False

    def set_user_attr(self, key: str, value: Any) -> None:
        self._call("set_user_attr", key, value)

    @property
    def params(self) -> dict[str, Any]:
        return self._call("params")

    @property
    def distributions(self) -> dict[str, Any]:
        return self._call("distributions")

    @property
    def user_attrs(self) -> dict[str, Any]:
        return self._call("user_attrs")

    @property
    def datetime_start(self):
        return self._call("datetime_start")

    def _finish(self, result: Any, state: str | None, error: BaseException | None = None):
        import ray

        if self._told:
            return None, None
        self._told = True
        return ray.get(self._actor.finish.remote(self._number, result, state, error))


def _warn_outer_changes(func: Callable) -> None:
    """Say where ``optimize`` is called that changes the objective makes outside itself are lost.

    Callbacks run on the driver (:mod:`pipeline.compat._optuna_driver`): what they change is
    the script's own state, so they are not checked.
    """
    from pipeline.compat._driver_state import changes_message, outer_changes

    changed = outer_changes(func)
    if changed:
        warnings.warn(changes_message("the objective", changed), UserWarning, stacklevel=3)


# The objective each worker process runs, by ``optimize`` call: the copy its first trial got.
_OBJECTIVES: dict[str, Callable] = {}


def _same_objective(objective: Callable, run_id: str) -> Callable:
    """The objective as this worker first deserialized it in this ``optimize`` call.

    ``tune.with_parameters`` unpickles the objective again for every trial, and an
    objective defined in the user's script (pickled by value) then brings new code
    objects each time. TensorFlow interns the Python stack trace of every op it traces in
    a process-wide map keyed by the frames (code object, instruction) and never drops an
    entry: the same code traces to the same entries, a new copy's code to new ones. A
    ``model.fit`` called from a new copy each trial grew a reused worker ~1.2 MB per
    trial (``benchmarks/compare.py --only D.optuna_front``). Running every trial of a
    worker on one copy also matches Optuna, which calls one objective for all its trials
    (state the objective keeps in its closure carries over between a worker's trials).
    """
    kept = _OBJECTIVES.get(run_id)
    if kept is None:
        _OBJECTIVES.clear()  # an earlier optimize call's objective is not needed again
        _OBJECTIVES[run_id] = kept = objective
    return kept


def _objective_trainable(config: dict[str, Any], objective: Callable, actor,
                         setup: dict[str, Any]) -> None:
    """Ray Tune function trainable: one Optuna trial of the user's objective.

    Runs on the worker's one trial thread (:func:`pipeline.trainable.on_trial_thread`),
    so a Keras objective does not leave TensorFlow's per-thread state behind per trial,
    and always on the worker's first copy of the objective (:func:`_same_objective`).
    """
    from pipeline.trainable import on_trial_thread

    objective = _same_objective(objective, setup["run_id"])
    on_trial_thread(_run_objective, config, objective, actor, setup)


def _run_objective(config: dict[str, Any], objective: Callable, actor,
                   setup: dict[str, Any]) -> None:
    from pipeline.trainable import trial_session

    # fenced, clean session and graphs released as every trial; Keras only if the objective uses it
    with trial_session(setup["cpu"], setup["gpu"], keras_only_if_loaded=True, cwd=setup["cwd"]):
        _objective_trial(config, objective, actor, setup)


def _objective_trial(config: dict[str, Any], objective: Callable, actor,
                     setup: dict[str, Any]) -> None:
    import ray
    from ray import tune

    number = ray.get(actor.ask.remote(tune.get_context().get_trial_id()))
    if number is None:  # study.stop() was called: no new trials
        return
    t = Trial(actor, number, setup["metrics"][0], len(setup["metrics"]) > 1, setup["ask_pruner"])
    try:
        result = objective(t)
    except TrialPruned as exc:
        t._finish(None, "PRUNED", exc)
        return
    except SystemExit:
        t._finish(None, "PRUNED")
        raise
    except Exception as exc:
        t._finish(None, "FAIL", _portable(exc))
        raise
    state, values = t._finish(result, None)
    if state == "COMPLETE" and values:
        tune.report({**dict(zip(setup["metrics"], values)), "epoch": t._reports})


# -- the study ---------------------------------------------------------------------------------


def _direction_name(d: Any) -> str:
    return d.name.lower() if hasattr(d, "name") else str(d).lower()


def _optuna_storage(storage: Any) -> Any:
    """Relative sqlite paths made absolute (the actor may not share the driver's directory)."""
    import os

    if (isinstance(storage, str) and storage.startswith("sqlite:///")
            and not storage.startswith("sqlite:////")):
        return "sqlite:///" + os.path.abspath(storage.removeprefix("sqlite:///"))
    return storage


def _experiment_name(study_name: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", study_name).lstrip("_.-") or "study"
    return name[:63]


class Study(_optuna.Study):
    """An Optuna study whose ``optimize`` runs on Ray Tune; everything else is Optuna's.

    It is an ``optuna.Study`` (so ``optuna.visualization`` and any code that checks
    ``isinstance(study, optuna.Study)`` take it), built around the real study it wraps:
    Optuna's own methods and properties run on it and read that study's state (its
    storage, id, sampler, pruner), which the wrapper never copies.
    """

    _optimize_pid: int | None = None  # the driver's process while optimize runs
    _stop_requested = False  # study.stop() was called in this optimize

    def __init__(self, study: "_optuna.Study", *, storage: Any, pruner: Any, results_path: str,
                 address: str | None, resources_per_trial: dict[str, float] | None):
        # no super().__init__: the attributes Optuna's methods read come from ``study``
        self._study = study
        self._storage_arg = storage
        self._pruner_arg = pruner
        self.results_path = os.fspath(results_path)  # a str or a pathlib.Path
        self.address = address
        self.resources_per_trial = dict(resources_per_trial or {})
        self.results_list: list = []
        # Ray starts while the script goes on, and the first trials' workers with it; with
        # Keras imported, the objective is taken to train Keras models: they import
        # TensorFlow meanwhile
        keras = "keras" in sys.modules or "tensorflow" in sys.modules
        warm = (10**6, float(self.resources_per_trial.get("cpu", 1)))
        self._early: EarlyStart | None = EarlyStart.claim(address, warm, warm_env=keras)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "_study":
            raise AttributeError(name)
        return getattr(self._study, name)

    def __getstate__(self) -> dict[str, Any]:  # Optuna's drops an attribute only it has
        return self.__dict__.copy()

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def __repr__(self) -> str:
        n = len(self._study.trials)
        return f"<pipeline.compat.optuna.Study {self._study.study_name!r} ({n} trials)>"

    def stop(self) -> None:
        """Optuna's ``Study.stop``, from a callback: ``optimize`` starts no new trial and returns.

        Callbacks run on the driver after each trial (as in Optuna). Trials still running
        when a callback calls it finish (as in Optuna, and as with ``timeout``).
        Outside ``optimize`` it raises Optuna's ``RuntimeError``; inside an objective, which
        runs in a Ray worker, it is not supported and raises a ``RuntimeError`` saying so.
        """
        import os

        if self._optimize_pid is None:
            raise RuntimeError("`Study.stop` is supposed to be invoked inside an objective "
                               "function or a callback.")
        if os.getpid() != self._optimize_pid:
            raise RuntimeError(
                "study.stop() inside an objective is not supported here: the objective runs "
                "in a Ray worker. Call it from a callback (study.optimize(..., callbacks=[...]) "
                "runs them on the driver after each trial, e.g. optuna.study.MaxTrialsCallback).")
        self._stop_requested = True

    @property
    def results(self):
        """The pipeline :class:`~pipeline.results.Results` of the last ``optimize``."""
        if not self.results_list:
            raise RuntimeError("no results yet: call optimize() first")
        return self.results_list[-1]

    def _spec(self, n_trials: int | None, timeout: float | None, concurrency: int, name: str):
        from pipeline.spec import parse_spec

        directions = [_direction_name(d) for d in self._study.directions]
        multi = len(directions) > 1
        metrics = ["value"] if not multi else [f"values_{i}" for i in range(len(directions))]
        modes = ["min" if d == "minimize" else "max" for d in directions]
        scheduler, options, max_t, ask_pruner = scheduler_for(self._pruner_arg)
        if multi:
            scheduler, options, max_t = "fifo", {}, None
        raw = {
            "name": name,
            "data": {"source": "external"},  # arrays passed from Python
            # The objective asks the study actor for its parameters; Tune only counts trials.
            "space": {"optuna_trial": {"type": "fixed", "value": "study"}},
            "training": {"epochs": max_t or 1000},
            "objective": {"metric": metrics if multi else metrics[0],
                          "mode": modes if multi else modes[0]},
            "searcher": {"name": searcher_for(self._study.sampler, multi)},
            "scheduler": {"name": scheduler, "options": options},
            "resources": {"cpu": 1, "gpu": 0, **self.resources_per_trial},
            "search": {"trials": int(n_trials) if n_trials else 10 ** 9, "max_concurrent": concurrency,
                       **({"start_trials_for_s": float(timeout)} if timeout else {})},
            "storage": {"path": self.results_path},
        }
        return parse_spec(raw, source="optuna study"), metrics, ask_pruner

    def _concurrency(self, n_jobs: int | None) -> tuple[int, str]:
        """Trials at a time, and why: ``n_jobs`` as given (-1: what the cluster holds);
        not given: what the cluster holds (Optuna itself would run one at a time)."""
        import ray

        if n_jobs is not None and n_jobs > 0:
            return int(n_jobs), f"n_jobs={n_jobs}"
        if n_jobs == 0:
            raise ValueError("n_jobs must be a positive number, -1 or None, not 0")
        cpus = ray.cluster_resources().get("CPU", 1)
        per = float(self.resources_per_trial.get("cpu", 1)) or 1
        n = max(1, int(cpus // per))
        why = ("n_jobs=-1: as many as the cluster's CPUs hold" if n_jobs == -1 else
               "n_jobs not given: as many as the cluster's CPUs hold; n_jobs=1 runs them one "
               "after another as Optuna does")
        return n, why

    def _free_name(self) -> str:
        from pipeline.storage import locate

        base = _experiment_name(self._study.study_name)
        name, k = base, 1
        while locate(self.results_path, name).exists():
            k += 1
            name = f"{base[:58]}-{k}"
        return name

    def optimize(self, func: Callable, n_trials: int | None = None, timeout: float | None = None,
                 n_jobs: int | None = None, catch: Iterable[type[Exception]] | type[Exception] = (),
                 callbacks: Iterable[Callable] | None = None, gc_after_trial: bool = False,
                 show_progress_bar: bool = False) -> None:
        """Run ``n_trials`` trials of ``func`` (or until ``timeout`` seconds) as Ray Tune trials.

        As in Optuna, ``timeout`` counts from this call; no trial starts after it, and
        trials running then finish.

        ``callbacks`` are called on the driver as Optuna calls them: ``callback(study,
        frozen_trial)`` once after each trial finishes (COMPLETE, PRUNED or FAIL), in
        finishing order, with this study brought up to date. A callback may call
        :meth:`stop`; one that raises stops the run, and its exception is raised here once
        the running trials ended (the finished trials are in the study).
        """
        import os

        since = time.monotonic()  # timeout counts from here, as in Optuna
        if n_trials is None and timeout is None:
            raise ValueError("give n_trials or timeout (a Tune search needs an end)")
        catch = tuple(catch) if isinstance(catch, Iterable) else (catch,)
        callbacks = list(callbacks or [])
        _warn_outer_changes(func)
        self._check_shippable(func)
        self._optimize_pid, self._stop_requested = os.getpid(), False
        try:
            self._optimize(func, n_trials, timeout, n_jobs, catch, callbacks, show_progress_bar,
                           since)
        finally:
            self._optimize_pid, self._stop_requested = None, False

    def _optimize(self, func: Callable, n_trials: int | None, timeout: float | None,
                  n_jobs: int | None, catch: tuple[type[Exception], ...], callbacks: list[Callable],
                  show_progress_bar: bool, since: float) -> None:
        import ray
        from ray import tune

        from cluster.connect import ray_session
        from pipeline.compat._optuna_driver import StudyCallbacks
        from pipeline.runner import run

        verbosity = _optuna.logging.get_verbosity()
        in_memory = self._storage_arg is None or isinstance(self._storage_arg, _optuna.storages.InMemoryStorage)
        early, self._early = self._early, None
        with ray_session(self.address, early=early):
            concurrency, why = self._concurrency(n_jobs)
            if n_trials:
                concurrency = min(concurrency, int(n_trials))
            print(f"optimize: {concurrency} trial(s) at a time ({why})", file=sys.stderr, flush=True)
            name = self._free_name()
            spec, metrics, ask_pruner = self._spec(n_trials, timeout, concurrency, name)
            create = {"directions": list(self._study.directions), "sampler": self._study.sampler,
                      "pruner": self._study.pruner, "study_name": self._study.study_name}
            if not in_memory:
                create.update(storage=self._storage_arg, load_if_exists=True)
            attrs = {"user": dict(self._study.user_attrs), "metric_names": self._study.metric_names}
            prior = [t for t in self._study.get_trials(deepcopy=True)] if in_memory else []
            options: dict[str, Any] = {"num_cpus": 0}
            try:
                from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

                options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(
                    ray.get_runtime_context().get_node_id(), soft=True)
            except Exception:  # noqa: BLE001 - placement is only a preference
                pass
            deadline = time.time() + timeout - (time.monotonic() - since) if timeout else None
            actor: Any = ray.remote(_StudyHolder).options(**options).remote(
                create, prior, attrs, bool(callbacks), verbosity, deadline)
            driver = StudyCallbacks(self, actor, callbacks, in_memory, verbosity)
            try:
                trainable = tune.with_parameters(
                    _objective_trainable, objective=func, actor=actor,
                    setup={"run_id": uuid.uuid4().hex, "metrics": metrics, "ask_pruner": ask_pruner,
                           "cwd": os.getcwd(),
                           "cpu": spec.resources.cpu, "gpu": spec.resources.gpu})
                try:
                    results = run(spec, address=self.address, progress=show_progress_bar,
                                  trainable=trainable, callbacks=[driver],
                                  stop_starting=lambda: driver.stopping, since=since)
                finally:
                    _optuna.logging.set_verbosity(verbosity)  # the searcher quietens Optuna
                from pipeline.results import Results

                results = Results(results.where)
                self.results_list.append(results)
                status = {row.trial_id: row.status for row in results.dataframe().itertuples()}
                ray.get(actor.reconcile.remote(status))
                driver.drain()  # the callbacks of the trials only the end settled
                trials, sampler, errors = ray.get(actor.export.remote())
            finally:
                ray.kill(actor)
        self._absorb(trials, sampler, in_memory)
        if driver.error is not None:
            raise driver.error
        for _, error in errors:
            if not isinstance(error, catch):
                raise error

    def _check_shippable(self, func: Callable) -> None:
        """Fail before Ray starts, naming the object, if what the trials need cannot travel.

        The sampler, pruner and storage go to the study actor, the objective to every
        trial, all pickled by Ray (callbacks stay on the driver). Locks the sampler keeps (Optuna 5.1's NSGA-II) are
        made portable first; anything else that cannot be pickled is a ``TypeError``.
        """
        from pipeline.portable import check_portable, portable_locks

        portable_locks(self._study.sampler)
        portable_locks(self._study.pruner)
        shipped = {"sampler": self._study.sampler, "pruner": self._study.pruner,
                   "objective": func}
        if self._storage_arg is not None:
            shipped["storage"] = self._storage_arg
        check_portable(shipped)

    def _sync(self, trials: list) -> None:
        """During ``optimize``, with in-memory storage: the actor's trials, for callbacks."""
        self._absorb(trials, self._study.sampler, True)

    def _absorb(self, trials: list, sampler: Any, in_memory: bool) -> None:
        """Make the driver's study what the actor's became (same trials, sampler state)."""
        old = self._study
        if in_memory:
            with _quietly():  # the user saw the study created once
                new = _optuna.create_study(directions=list(old.directions), sampler=sampler,
                                           pruner=old.pruner, study_name=old.study_name)
            new.add_trials(trials)
            for key, value in old.user_attrs.items():
                new.set_user_attr(key, value)
            if old.metric_names:
                new.set_metric_names(old.metric_names)
        else:
            new = _optuna.load_study(study_name=old.study_name, storage=self._storage_arg,
                                     sampler=sampler, pruner=old.pruner)
        self._study = new


def create_study(*, storage: Any = None, sampler: Any = None, pruner: Any = None,
                 study_name: str | None = None, direction: Any = None, load_if_exists: bool = False,
                 directions: Sequence[Any] | None = None, results_path: str = "results",
                 address: str | None = None,
                 resources_per_trial: dict[str, float] | None = None) -> Study:
    """Optuna's ``create_study`` (same arguments) whose ``optimize`` runs on Ray Tune.

    Extra arguments: ``results_path`` (where Tune stores the trials, a folder or
    URI), ``address`` (a Ray cluster to join), ``resources_per_trial``
    (``{"cpu": 1, "gpu": 0.5}``).
    """
    storage = _optuna_storage(storage)
    if study_name is None and storage is None:
        study_name = f"no-name-{uuid.uuid4()}"
    study = _optuna.create_study(storage=storage, sampler=sampler, pruner=pruner,
                                 study_name=study_name, direction=direction,
                                 load_if_exists=load_if_exists, directions=directions)
    return Study(study, storage=storage, pruner=pruner, results_path=results_path,
                 address=address, resources_per_trial=resources_per_trial)


def load_study(*, study_name: str | None, storage: Any, sampler: Any = None, pruner: Any = None,
               results_path: str = "results", address: str | None = None,
               resources_per_trial: dict[str, float] | None = None) -> Study:
    """Optuna's ``load_study`` returning a study whose ``optimize`` runs on Ray Tune."""
    storage = _optuna_storage(storage)
    study = _optuna.load_study(study_name=study_name, storage=storage, sampler=sampler, pruner=pruner)
    return Study(study, storage=storage, pruner=pruner, results_path=results_path,
                 address=address, resources_per_trial=resources_per_trial)


# A script importing this door starts Ray now, while it goes on (cluster.connect.EarlyStart);
# whether its objective trains Keras models is known only when the study is made.
EarlyStart.at_import(warm_env=None)  # workers import TensorFlow if the script imports Keras
