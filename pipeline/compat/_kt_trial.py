"""The KerasTuner front door's trial, on the Ray worker: build, fit, report, checkpoint.

What a trial needs from the tuner travels once as a :class:`_Job` (through the object
store); :func:`_trial` is the Tune function trainable. Driver-side code (the tuners)
lives in :mod:`pipeline.compat.keras_tuner`.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.compat._hyperparameters import HyperParameter, HyperParameters
from pipeline.data import Dataset
from pipeline.spec import Spec

log = logging.getLogger("pipeline.compat.keras_tuner")

# the metric a multi-objective trial reports: the sum of its objectives, each to minimize
MULTI_OBJECTIVE = "multi_objective"


# -- what a trial needs -----------------------------------------------------------------------


@dataclass
class _Job:
    """Everything of the tuner a trial needs (sent once through the object store)."""

    hypermodel: Any  # a keras_tuner.HyperModel
    defs: list[HyperParameter]
    objectives: list[tuple[str, str]]
    callbacks: list = field(default_factory=list)
    fit_kwargs: dict[str, Any] = field(default_factory=dict)  # as the user gave them to search()
    executions: int = 1
    compile_kwargs: dict[str, Any] = field(default_factory=dict)
    custom_fit: bool = False
    pass_epochs: bool = True
    dataset_batch: int | None = None  # search() got a tf.data dataset batched so: a custom fit gets one
    mirrored: bool = False  # distribution_strategy=MirroredStrategy: build under one in the worker
    no_data: bool = False  # search() got no data: the HyperModel's own fit finds it
    cwd: str | None = None  # the driver's folder: trials run there when their node has it
    objective_given: bool = True  # False: the tuner got no objective (a custom fit returns a float)
    max_model_size: int | None = None  # KerasTuner's: a model with more trainable parameters fails
    tuner: Any = None  # a Tuner subclass overriding run_trial (a copy): it runs each trial
    trial_kwargs: dict[str, Any] = field(default_factory=dict)  # its fit arguments, but the data


def _with_objective(job: _Job, logs: dict[str, Any] | None) -> dict[str, float]:
    out = {k: float(v) for k, v in (logs or {}).items() if np.ndim(v) == 0}
    if len(job.objectives) > 1 and all(name in out for name, _ in job.objectives):
        out[MULTI_OBJECTIVE] = sum(out[n] if d == "min" else -out[n] for n, d in job.objectives)
    return out


def _metric_name(job: _Job) -> str:
    return MULTI_OBJECTIVE if len(job.objectives) > 1 else job.objectives[0][0]


_CALLBACKS: dict[str, type] = {}


def _callback_classes():
    """Keras callback classes, defined on first use (keeps importing this module light)."""
    if _CALLBACKS:
        return _CALLBACKS["reporter"], _CALLBACKS["collector"]
    import keras

    from pipeline.trainable import report_callback

    class Reporter(keras.callbacks.Callback):
        """Reports each epoch to Tune (pipeline's reporter); checkpoints the final epoch,
        including one ended early by a user callback (``model.stop_training``)."""

        def __init__(self, spec: Spec, job: _Job, last_epoch: int,
                     history: list[dict[str, Any]] | None = None, report=None,
                     trial_id: str | None = None):
            super().__init__()
            self.spec, self.job, self.last = spec, job, last_epoch
            # a multi-worker trial's workers report to Ray Train (pipeline.distributed)
            self.send = {"report": report, "trial_id": trial_id}
            self.history = list(history or [])  # kept in each checkpoint (pipeline.trainable)
            self.reported, self.checkpointed = 0, 0
            self.last_logs: dict[str, float] = {}

        def on_epoch_end(self, epoch, logs=None):
            logs = _with_objective(self.job, logs)
            done = epoch + 1
            final = done >= self.last or bool(getattr(self.model, "stop_training", False))
            cb = report_callback(self.spec, done if final else self.last, self.history, **self.send)
            cb.set_model(self.model)
            self.reported, self.last_logs = done, logs
            every = self.spec.training.checkpoint_every
            if final or (every and done % every == 0):
                self.checkpointed = done
            cb.on_epoch_end(epoch, logs)

        def finish(self) -> None:
            """Checkpoint the last epoch when the user's own fit ended elsewhere than planned."""
            if self.reported and self.checkpointed != self.reported:
                # the last epoch is reported again, with a checkpoint: not a new history row
                cb = report_callback(self.spec, self.reported, self.history[:-1], **self.send)
                cb.set_model(self.model)
                self.checkpointed = self.reported
                cb.on_epoch_end(self.reported - 1, self.last_logs)

    class Collector(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.epochs: list[dict[str, Any]] = []

        def on_epoch_end(self, epoch, logs=None):
            self.epochs.append(dict(logs or {}))

    _CALLBACKS.update(reporter=Reporter, collector=Collector)
    return Reporter, Collector


def _history_epochs(result: Any) -> list[dict[str, Any]] | None:
    """Per-epoch logs of a ``History``, or None."""
    history = getattr(result, "history", None)
    if isinstance(history, dict) and history:
        n = max(len(v) for v in history.values())
        return [{k: v[i] for k, v in history.items() if i < len(v)} for i in range(n)]
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool)


def _check_returned(job: _Job, result: Any) -> None:
    """What KerasTuner accepts from a ``HyperModel.fit``: a number, a dict holding the
    objective, a ``History`` (a dict or a number only without ``objective``); anything else
    stops the search with KerasTuner's error types (``search()`` raises them)."""
    import keras

    from pipeline.compat._kt_errors import FatalTypeError, FatalValueError

    where = "HyperModel.fit()"
    if _is_number(result):
        return
    if result is None:
        raise FatalTypeError(f"The return value of {where} is None: return the History of "
                             "model.fit, a dict of metrics or a float")
    if not job.objective_given:
        raise FatalTypeError(
            f"Expected the return value of {where} to be a single float when `objective` is "
            f"left unspecified; got {type(result).__name__}: {result!r}. Return a float, or "
            "pass the tuner an `objective` naming one of the metrics")
    if isinstance(result, dict):
        name = _metric_name(job)
        wanted = [n for n, _ in job.objectives] if name == MULTI_OBJECTIVE else [name]
        missing = [n for n in wanted if n not in result]
        if missing:
            raise FatalValueError(f"Expected the dict returned by {where} to hold the objective "
                                  f"{', '.join(missing)} as a key; got {result!r}")
        return
    if not isinstance(result, keras.callbacks.History):
        raise FatalTypeError(
            f"Expected the return value of {where} to be one of float, dict or "
            f"keras.callbacks.History; got {type(result).__name__}: {result!r}")


def _returned_metrics(job: _Job, result: Any) -> dict[str, float] | None:
    """A HyperModel.fit return value (dict or number) as metrics; None for History/None."""
    if job.custom_fit:
        _check_returned(job, result)
    if isinstance(result, dict):
        return {k: float(v) for k, v in result.items()}
    if _is_number(result):
        return {_metric_name(job): float(result)}
    return None


def _strategy_scope(job: _Job):
    """The scope models of this trial are built (and restored) in: the user's strategy, if any."""
    if not job.mirrored:
        return contextlib.nullcontext()
    import tensorflow as tf

    return tf.distribute.MirroredStrategy().scope()  # over the devices this worker was given


def _build(job: _Job, hp: HyperParameters, values: dict[str, Any], spec: Spec):
    with _strategy_scope(job):
        return build_model(job, hp, values, spec)


def build_model(job: _Job, hp: HyperParameters, values: dict[str, Any], spec: Spec):
    import keras

    from pipeline.compat._kt_errors import FatalTypeError
    from pipeline.trainable import compile_model

    model = job.hypermodel.build(hp)
    if not isinstance(model, keras.Model):  # KerasTuner stops the search there
        raise FatalTypeError(not_a_model(model))
    if job.max_model_size:
        _check_size(model, job.max_model_size)
    if job.compile_kwargs:
        kwargs = dict(job.compile_kwargs)
        opt = kwargs.get("optimizer")
        if opt is not None and not isinstance(opt, str):
            kwargs["optimizer"] = opt.__class__.from_config(opt.get_config())
        model.compile(**kwargs)
    elif not model.compiled:
        compile_model(model, spec, values)
    if hp._unknown:
        log.warning("hyperparameters %s were not seen when the search space was discovered; "
                    "they take their default in this trial", sorted(set(hp._unknown)))
    return model


def _check_size(model: Any, limit: int) -> None:
    """KerasTuner's ``max_model_size``: a built model with more trainable parameters than
    ``limit`` fails its trial (``FailedTrialError``; the search goes on)."""
    from pipeline.compat._kt_errors import FailedTrialError

    if not model.built:  # KerasTuner counts only a built model's weights
        return
    size = int(sum(np.prod(w.shape) for w in model.trainable_weights))
    if size > limit:
        raise FailedTrialError(f"Oversized model: {size} parameters. Skip model.")


def not_a_model(model: Any) -> str:
    return ("Expected the model-building function, or HyperModel.build(), to return a Keras "
            f"Model; it returned {model!r} of type {type(model).__name__}")


# fit() arguments that the tf.data inputs of the pipeline's trainable carry as well
_PLAIN_FIT = {"batch_size", "shuffle"}


def _fit(job: _Job, hp: HyperParameters, model, data: Dataset, spec: Spec, callbacks: list,
         initial_epoch: int):
    kwargs = dict(job.fit_kwargs)
    kwargs["callbacks"] = callbacks
    if initial_epoch:
        kwargs["initial_epoch"] = initial_epoch
    if job.custom_fit:
        if job.pass_epochs:
            kwargs["epochs"] = spec.training.epochs
        if job.no_data:
            return job.hypermodel.fit(hp, model, **kwargs)
        if job.dataset_batch:  # as the user passed it: tf.data datasets of (x, y) batches
            import tensorflow as tf

            def batches(x, y):
                return tf.data.Dataset.from_tensor_slices((x, y)).batch(job.dataset_batch)

            if len(data.x_val):
                kwargs["validation_data"] = batches(data.x_val, data.y_val)
            return job.hypermodel.fit(hp, model, batches(data.x_train, data.y_train), **kwargs)
        if len(data.x_val):
            kwargs["validation_data"] = (data.x_val, data.y_val)
        return job.hypermodel.fit(hp, model, data.x_train, data.y_train, **kwargs)
    if job.no_data:  # search() got no data: the model's fit gets what search() got, as KerasTuner
        if job.pass_epochs:
            kwargs["epochs"] = spec.training.epochs
        return model.fit(**kwargs)
    return model.fit(**_fit_arguments(job, data, spec, kwargs))


def _fit_arguments(job: _Job, data: Dataset, spec: Spec, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``model.fit``'s arguments for the user's fit arguments ``kwargs`` (callbacks and
    ``initial_epoch`` included) over the trial's data, when no HyperModel.fit of theirs runs."""
    from pipeline.trainable import fit_inputs

    kwargs = dict(kwargs)
    batch_size = kwargs.pop("batch_size", None) or spec.training.batch_size
    kwargs.update(epochs=spec.training.epochs, verbose=spec.training.verbose)
    if set(job.fit_kwargs) <= _PLAIN_FIT and job.fit_kwargs.get("shuffle", True) in (True, False):
        # the same epochs as fit over the arrays, without rebuilding iterators every epoch
        inputs = fit_inputs(data, batch_size, spec.seed, shuffle=kwargs.pop("shuffle", True))
        return {**inputs, **kwargs}
    if len(data.x_val):
        kwargs["validation_data"] = (data.x_val, data.y_val)
    return {"x": data.x_train, "y": data.y_train, "batch_size": batch_size, **kwargs}


def _trial(config: dict[str, Any], data: Dataset, spec: Spec, job: _Job) -> None:
    """Ray Tune function trainable for one KerasTuner trial (on the worker's trial thread)."""
    from pipeline.trainable import on_trial_thread

    on_trial_thread(_run_trial, config, data, spec, job)


def _run_trial(config: dict[str, Any], data: Dataset, spec: Spec, job: _Job) -> None:
    from pipeline.trainable import trial_session

    res = spec.resources
    with trial_session(res.cpu, res.gpu, memory_growth=res.gpu_memory_growth, seed=spec.seed,
                       cwd=job.cwd):
        _run_job(config, data, spec, job)


def _run_job(config: dict[str, Any], data: Dataset, spec: Spec, job: _Job) -> None:
    import keras
    from ray import tune

    from pipeline.trainable import hyperparameters, report_restored_end, restore_trial

    Reporter, Collector = _callback_classes()
    values = hyperparameters(spec, config)
    values.pop("__default__", None)  # the placeholder of a build without hyperparameters
    epochs = spec.training.epochs

    if job.tuner is not None:
        _run_override(job, values, data)
        return
    if job.executions == 1:
        hp = HyperParameters.replay(job.defs, values)
        with _strategy_scope(job):  # a restored trial's model is rebuilt, as KerasTuner's
            model, done, history, _ = restore_trial(
                spec, values, rebuild=lambda: build_model(job, hp, values, spec), rebuild_first=True)
        if model is None:
            model = _build(job, hp, values, spec)
        if done >= epochs:
            if history:  # Tune may hold no result of it (a driver killed before its state saved)
                report_restored_end(history)
            return
        reporter = Reporter(spec, job, epochs, history)
        result = _fit(job, hp, model, data, spec, [*copy.deepcopy(job.callbacks), reporter], done)
        returned = _returned_metrics(job, result)
        if not reporter.reported:  # the user's fit trained without our callback
            per_epoch = _history_epochs(result) or ([returned] if returned else None)
            if not per_epoch:
                raise ValueError("HyperModel.fit neither passed `callbacks` to model.fit nor "
                                 "returned a History, a dict of metrics or a number")
            reporter.set_model(model)
            reporter.last = len(per_epoch)
            for epoch, logs in enumerate(per_epoch):
                reporter.on_epoch_end(epoch, logs)
        elif returned:  # KerasTuner takes a returned value as the trial's result
            tune.report({**_with_objective(job, returned), "epoch": reporter.reported})
        reporter.finish()
        return

    histories, model = [], None
    for i in range(job.executions):
        keras.backend.clear_session()
        keras.utils.set_random_seed(spec.seed + i)
        hp = HyperParameters.replay(job.defs, values)
        model = _build(job, hp, values, spec)
        collector = Collector()
        result = _fit(job, hp, model, data, spec, [*copy.deepcopy(job.callbacks), collector], 0)
        returned = _returned_metrics(job, result)
        epochs_logs = collector.epochs or _history_epochs(result) or []
        if returned:
            epochs_logs = [*epochs_logs[:-1], {**(epochs_logs[-1] if epochs_logs else {}), **returned}]
        histories.append(epochs_logs)
    n = max(len(h) for h in histories)
    if n == 0:
        raise ValueError("no execution of the trial reported any metric")
    reporter = Reporter(spec, job, n)
    reporter.set_model(model)
    for epoch in range(n):
        rows = [h[epoch] for h in histories if len(h) > epoch]
        keys = set().union(*rows)
        mean = {k: float(np.mean([r[k] for r in rows if k in r])) for k in keys}
        reporter.on_epoch_end(epoch, mean)


def _run_override(job: _Job, values: dict[str, Any], data: Dataset) -> None:
    """A Tuner subclass's own run_trial: called with the trial and the search's fit arguments;
    what it returns, checked and reduced as KerasTuner does, is the trial's one result."""
    from ray import tune

    from pipeline.compat._kt_run_trial import (
        RunningTrial,
        check_result,
        fit_keywords,
        trial_metrics,
    )

    kwargs = dict(job.trial_kwargs)
    if "callbacks" in kwargs:  # each trial its own copy, as in KerasTuner
        kwargs["callbacks"] = copy.deepcopy(kwargs["callbacks"])
    kwargs = fit_keywords(data, kwargs, job.dataset_batch, job.no_data)
    hp = HyperParameters.replay(job.defs, values)
    trial = RunningTrial(hp, tune.get_context().get_trial_id() or "trial")
    result = job.tuner.run_trial(trial, **kwargs)
    name = _metric_name(job)
    direction = "min" if name == MULTI_OBJECTIVE else job.objectives[0][1]
    check_result(result, name, job.objective_given)
    metrics = trial_metrics(result, name, direction, lambda logs: _with_objective(job, logs))
    if hp._unknown:
        log.warning("hyperparameters %s were not seen when the search space was discovered; "
                    "they took their default in this trial", sorted(set(hp._unknown)))
    tune.report({**metrics, "epoch": 1})


def worker_trial(job: _Job, worker: Any, cfg: dict[str, Any]) -> None:
    """One Ray Train worker of a multi-worker trial (``distribution_strategy=
    MultiWorkerMirroredStrategy``): the body :func:`pipeline.distributed.train_multiworker`
    runs once ``worker.strategy`` exists. Builds (or restores) the model under the strategy
    and fits it with the user's fit arguments, every tf.data input sharded by data; every
    worker reports each epoch, rank 0's checkpoint is kept. ``batch_size`` is the global
    batch, as for ``model.fit`` under any strategy. No HyperModel.fit, one execution
    (the tuner refuses the others).
    """
    from pipeline.distributed import build_before_fit, sharded
    from pipeline.trainable import RESTORED_AT_END, hyperparameters, restore_trial

    Reporter, _ = _callback_classes()
    spec: Spec = cfg["spec"]
    values = hyperparameters(spec, cfg["config"])
    values.pop("__default__", None)
    epochs = spec.training.epochs
    hp = HyperParameters.replay(job.defs, values)
    with worker.strategy.scope():  # variables (restored or new) are mirrored across the workers
        model, done, history, _ = restore_trial(spec, values, worker.checkpoint, worker.trial_id,
                                                rebuild=lambda: build_model(job, hp, values, spec),
                                                rebuild_first=True)
        if model is None:
            model = build_model(job, hp, values, spec)
    if done >= epochs:
        if history:  # as _run_job: the restored end is reported again, marked
            worker.report({**history[-1], RESTORED_AT_END: True}, None)
        return
    reporter = Reporter(spec, job, epochs, history, report=worker.report, trial_id=worker.trial_id)
    args = sharded(_fit_arguments(job, cfg["data"], spec, {
        **job.fit_kwargs, "callbacks": [*copy.deepcopy(job.callbacks), reporter],
        **({"initial_epoch": done} if done else {})}))
    if worker.rank:
        args["verbose"] = 0
    with worker.strategy.scope():
        build_before_fit(model, args)
        model.fit(**args)
