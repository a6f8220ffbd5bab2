"""A ``Tuner`` subclass's own ``run_trial``, on this front door.

KerasTuner calls ``tuner.run_trial(trial, *fit_args, **fit_kwargs)`` for each trial and
takes what it returns (a number, a dict of metrics, a ``History``, or a list of these, one
per execution) as the trial's result. Here each trial is a Ray Tune trial in a worker
process: the tuner object (a copy, without its results) travels to the worker and its
``run_trial`` is called there with a :class:`RunningTrial` whose ``hyperparameters`` hold
the trial's values, and with the search's fit arguments as keywords (``x``, ``y``,
``validation_data`` -- also for ``validation_split`` --, ``epochs``, ``callbacks`` ... as
given to ``search()``). The returned value is checked and reduced to metrics as KerasTuner
does (:func:`trial_metrics`) and reported to Tune once.

The search space must be known before the trials start. The hyperparameters the override
declares (``trial.hyperparameters.Int(...)``, with or without a hypermodel) are recorded by
:func:`dry_run_trial`: ``run_trial`` is called on the driver with a recording
``HyperParameters``, on two rows of the data, with the hypermodel's models replaced by ones
whose ``fit`` does nothing (like the dry run of a ``HyperModel.fit``); what it raises there
is ignored. So a ``run_trial`` is called on the driver during discovery, and must not count
on running only once per trial.

Not supported: ``self.oracle.update_trial(...)`` inside ``run_trial`` (KerasTuner's
deprecated way of reporting; the oracle here drives no trials: its error says so).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from pipeline.compat._hyperparameters import HyperParameters

log = logging.getLogger("pipeline.compat.keras_tuner")

WHERE = "Tuner.run_trial()"


@dataclass
class RunningTrial:
    """The ``trial`` a ``run_trial`` override receives (KerasTuner's ``Trial``, running)."""

    hyperparameters: HyperParameters
    trial_id: str
    status: str = "RUNNING"
    score: float | None = None
    best_step: int | None = None
    metrics: dict[str, Any] = field(default_factory=dict)


class _DryHyperModel:
    """The tuner's hypermodel during a dry run: builds record hyperparameters, models do nothing."""

    def __init__(self, real: Any):
        self._real = real

    def build(self, hp):
        if self._real is not None:
            self._real.build(hp)
        return _DryModel()

    def fit(self, hp, model, *args, **kwargs):
        if self._real is not None and hasattr(self._real, "fit"):
            return self._real.fit(hp, model, *args, **kwargs)
        return None

    def __getattr__(self, name):
        return getattr(self._real, name)


def dry_run_trial(tuner: Any, fit_kwargs: dict[str, Any]) -> Callable[[HyperParameters], None]:
    """A recorder for :func:`pipeline.compat._hyperparameters.discover`: calls the tuner's
    ``run_trial`` with ``fit_kwargs`` (two rows of the data) and a hypermodel whose models
    do nothing."""

    def extra(hp: HyperParameters) -> None:
        dry = copy.copy(tuner)
        dry.hypermodel = _DryHyperModel(tuner.hypermodel)
        try:
            type(tuner).run_trial(dry, RunningTrial(hp, "dry-run"), **copy.copy(fit_kwargs))
        except Exception as exc:  # noqa: BLE001 - user code may need a real model
            log.debug("dry run of Tuner.run_trial stopped: %s", exc)

    return extra


def shipped_tuner(tuner: Any) -> Any:
    """The tuner as it travels to the trials: a copy without results or Ray start."""
    out = copy.copy(tuner)
    out._results, out._early = None, None
    oracle = copy.copy(tuner._oracle)
    oracle._results, oracle._hp_of = None, None
    out._oracle = oracle
    return out


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool)


def check_result(result: Any, objective: str, objective_given: bool) -> None:
    """KerasTuner's checks of what ``run_trial`` returned (its error types and wording)."""
    import keras

    from pipeline.compat._kt_errors import FatalTypeError, FatalValueError

    if isinstance(result, list):
        for item in result:
            check_result(item, objective, objective_given)
        return
    if _is_number(result):
        return
    if result is None:
        raise FatalTypeError(f"The return value of {WHERE} is None. Did you forget to return the "
                             "metrics? ")
    if not objective_given:
        raise FatalTypeError(
            f"Expected the return value of {WHERE} to be a single float when `objective` is "
            f"left unspecified. Received return value: {result!r} of type {type(result)}.")
    if isinstance(result, dict):
        if objective not in result:
            raise FatalValueError(f"Expected the returned dictionary from {WHERE} to have the "
                                  f"specified objective, {objective}, as one of the keys. "
                                  f"Received: {result}.")
        return
    if not isinstance(result, keras.callbacks.History):
        raise FatalTypeError(
            f"Expected the return value of {WHERE} to be one of float, dict, "
            "keras.callbacks.History, or a list of one of these types. Received return "
            f"value: {result!r} of type {type(result)}.")


def trial_metrics(result: Any, objective: str, direction: str,
                  with_objective: Callable[[dict[str, Any]], dict[str, float]]) -> dict[str, float]:
    """What ``run_trial`` returned as one dict of metrics, as KerasTuner reduces it: a number is
    the objective; a History gives its best epoch's metrics; a list is averaged."""
    if isinstance(result, list):
        rows = [trial_metrics(r, objective, direction, with_objective) for r in result]
        keys = dict.fromkeys(k for r in rows for k in r)
        return {k: float(np.mean([r[k] for r in rows if k in r])) for k in keys}
    if _is_number(result):
        return {objective: float(result)}
    if isinstance(result, dict):
        return with_objective({k: v for k, v in result.items()})
    history = getattr(result, "history", {}) or {}
    n = max((len(v) for v in history.values()), default=0)
    epochs = [with_objective({k: v[i] for k, v in history.items() if i < len(v)}) for i in range(n)]
    scored = [e for e in epochs if objective in e]
    if not scored:
        return epochs[-1] if epochs else {}
    pick = min if direction == "min" else max
    return pick(scored, key=lambda e: e[objective])


def fit_keywords(data: Any, fit_kwargs: dict[str, Any], dataset_batch: int | None,
                 no_data: bool) -> dict[str, Any]:
    """The search's fit arguments, as keywords, over the trial's copy of the data."""
    out = dict(fit_kwargs)
    if no_data:
        return out
    if dataset_batch:
        import tensorflow as tf

        def pack(x, y):
            return tf.data.Dataset.from_tensor_slices((x, y)).batch(dataset_batch)

        out["x"] = pack(data.x_train, data.y_train)
        if len(data.x_val):
            out["validation_data"] = pack(data.x_val, data.y_val)
        return out
    out["x"], out["y"] = data.x_train, data.y_train
    if len(data.x_val):
        out["validation_data"] = (data.x_val, data.y_val)
    return out


class _DryModel:
    """Stands in for the model during the dry run of a HyperModel's ``fit``."""

    def fit(self, *args, **kwargs):
        return None

    def __getattr__(self, name):
        return lambda *args, **kwargs: None
