"""The Optuna door's worker side: the ``trial`` an objective receives, and the trainable.

:class:`Trial` is an ``optuna.trial.Trial`` whose calls go to the study actor
(:mod:`pipeline.compat._optuna_actor`); :func:`_objective_trainable` is the Ray Tune
function trainable that runs one Optuna trial of the user's objective.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Sequence

import optuna as _optuna
from optuna.exceptions import TrialPruned

from pipeline.compat._optuna_actor import _STORAGE_CALLS, _STUDY_READS, _portable


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


class _StudyView:
    """``trial.study`` in an objective: the study's trials, best trial, directions and
    attributes (:data:`_STUDY_READS`), read from the study actor when asked. It changes
    nothing: ``stop()`` and the setters are refused, naming what to do instead."""

    def __init__(self, actor):
        self._actor = actor

    def __getattr__(self, name: str) -> Any:
        import ray

        if name.startswith("__") or name == "_actor":
            raise AttributeError(name)
        if name == "stop":
            raise AttributeError("trial.study.stop() is not supported inside an objective here (it "
                                 "runs in a Ray worker): call study.stop() from a callback of "
                                 "optimize(..., callbacks=[...]), which runs on the driver")
        if name not in _STUDY_READS:
            raise AttributeError(
                f"trial.study.{name} is not available in an objective here: it runs in a Ray "
                f"worker, and reads only {', '.join(sorted(_STUDY_READS))} of the study "
                "(use trial.set_user_attr, or the study after optimize; a study created with "
                "in_process=True runs its objective in the script's process)")
        if not _STUDY_READS[name]:
            return ray.get(self._actor.study_read.remote(name))

        def call(*args: Any, **kwargs: Any) -> Any:
            return ray.get(self._actor.study_read.remote(name, args, kwargs))

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
        return _StudyView(self._actor)

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

    def _finish(self, result: Any, state: str | None, error: BaseException | None = None,
                caught: bool = False):
        import ray

        if self._told:
            return None, None
        self._told = True
        return ray.get(self._actor.finish.remote(self._number, result, state, error, caught))


def _as_sent(result: Any) -> Any:
    """The objective's value(s) made plain floats here, in the worker, where Optuna would read
    them so (``float(v)``, each of a sequence): a TensorFlow or NumPy scalar sent as it is
    makes the study actor import its library to unpickle it (TensorFlow: seconds of CPU
    beside the trials, and its start-up lines on the user's console). What ``float`` does
    not take goes as it is, for Optuna's own checks and messages.

    >>> import numpy as np
    >>> _as_sent(np.float32(0.5)), _as_sent((np.int64(2), 0.25)), _as_sent("abc"), _as_sent(None)
    (0.5, [2.0, 0.25], 'abc', None)
    """
    def one(value: Any) -> Any:
        if type(value) in (float, int):
            return value
        try:
            return float(value)
        except (TypeError, ValueError):
            return value

    if isinstance(result, str):
        return result
    if isinstance(result, Sequence):
        return [one(v) for v in result]
    return one(result)


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
        t._finish(None, "FAIL", _portable(exc), caught=isinstance(exc, setup["catch"]))
        raise
    state, values = t._finish(_as_sent(result), None)
    if state == "COMPLETE" and values:
        tune.report({**dict(zip(setup["metrics"], values)), "epoch": t._reports})
