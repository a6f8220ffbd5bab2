"""The Keras trainable: one Ray Tune trial = build, compile, fit, report.

``train_keras(config, data=..., spec=...)`` is a Ray Tune function trainable.
The dataset arrives through ``tune.with_parameters`` (in the object store once),
the hyperparameters through ``config``. Every epoch reports all Keras logs plus
``epoch``; checkpoints (``model.keras`` + ``state.json``) are written every
``training.checkpoint_every`` epochs and at the end. A restarted, resumed
(HyperBand) or exploited (PBT) trial continues from ``tune.get_checkpoint()``.
Actors are reused, so each trial starts with ``keras.backend.clear_session()``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import queue
import threading
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple

from pipeline.checkpoints import (
    MODEL_FILE,
    STATE_FILE,
    WEIGHTS_FILE,
    build_config,
    load_weights_into,
    own_checkpoint,
    save_model,
)
from pipeline.data import Dataset
from pipeline.models import build_model, resolve_callable
from pipeline.optimizers import build_optimizer, steps_per_epoch
from pipeline.scratch import scratch
from pipeline.spec import Spec
from pipeline.storage import patiently
from pipeline.streaming import StreamedDataset

# A trial restored with all its epochs done reports its last epoch again, so marked
# (Tune needs a result from it; the results leave the repeat out of the history).
RESTORED_AT_END = "restored_at_end"


class TrialDiverged(FloatingPointError):
    """The loss became NaN or infinite."""


class MetricNotReported(KeyError):
    """The objective metric is not among the model's logs."""

    def __str__(self) -> str:  # KeyError quotes its message otherwise
        return str(self.args[0])


def hyperparameters(spec: Spec, config: dict[str, Any]) -> dict[str, Any]:
    """The trial's active hyperparameters over the spec's fixed model options."""
    return {**spec.model.options, **spec.search_space().active(config)}


def compile_model(model, spec: Spec, hp: dict[str, Any],
                  steps_per_epoch: int | None = None) -> None:
    """Compile with the trial's optimizer and learning-rate schedule (:mod:`pipeline.optimizers`).

    ``steps_per_epoch`` (ceil(n_train / batch_size)) sizes the schedules.
    """
    model.compile(
        optimizer=build_optimizer(hp, spec.training, steps_per_epoch),
        loss=spec.training.loss or "sparse_categorical_crossentropy",
        metrics=list(spec.training.metrics),
        steps_per_execution=spec.training.steps_per_execution,
    )


def report_callback(spec: Spec, last_epoch: int, history: list[dict[str, Any]],
                    extra: dict[str, Any] | None = None, *,
                    report: Callable[[dict[str, Any], str | None], None] | None = None,
                    trial_id: str | None = None):
    """The Keras callback that reports each epoch and writes the trial's checkpoints.

    ``report(metrics, checkpoint_dir_or_None)`` replaces ``tune.report`` (a multi-worker
    trial's workers report to Ray Train, :mod:`pipeline.distributed`); ``trial_id`` is
    then the Tune trial's id, which the workers cannot ask Tune for.
    """
    import keras
    import ray
    from ray import tune

    objectives = spec.objective.metrics
    every = spec.training.checkpoint_every
    tolerance = spec.storage.outage_tolerance_s
    node_id = ray.get_runtime_context().get_node_id()  # where the trial ran (multi-node runs)
    if trial_id is None:
        trial_id = tune.get_context().get_trial_id()

    def to_tune(metrics: dict[str, Any], ckpt_dir: str | None) -> None:
        tune.report(metrics, checkpoint=None if ckpt_dir is None
                    else tune.Checkpoint.from_directory(ckpt_dir))

    send = report or to_tune

    class TuneReport(keras.callbacks.Callback):
        """Reports every epoch to Tune; checkpoints at the configured cadence.

        Each checkpoint's ``state.json`` also holds the trial's history so far, so the
        results can be repaired if storage lost Tune's copy (:attr:`Results.histories`).
        """

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            metrics: dict[str, Any] = {k: float(v) for k, v in (logs or {}).items()}
            if self.model.built:  # a HyperModel.fit of its own may train no Keras model
                metrics["num_params"] = self.model.count_params()
            missing = [m for m in objectives if m not in metrics]
            if missing:
                raise MetricNotReported(
                    f"objective.metric: the model never reports {missing}; "
                    f"it reports {sorted(metrics)}"
                )
            loss = metrics.get("loss", 0.0)
            if not math.isfinite(loss):
                raise TrialDiverged(f"loss became {loss} at epoch {epoch + 1}: trial diverged")
            metrics["epoch"] = epoch + 1
            metrics["node_id"] = node_id
            metrics.update(extra or {})
            done = epoch + 1
            history.append(metrics)
            if done == last_epoch or (every and done % every == 0):
                with scratch("ckpt-") as tmp:  # removed even if this process is killed meanwhile
                    save_model(self.model, tmp)
                    Path(tmp, STATE_FILE).write_text(json.dumps({
                        "epoch": done, "history": history, "trial_id": trial_id,
                        "build_config": build_config(self.model)}))
                    # Uploading to storage happens inside report: an outage stalls, not fails, it
                    # (a failed attempt leaves a gap in the checkpoint numbering, nothing else).
                    patiently(lambda: send(metrics, tmp),
                              f"saving the checkpoint of epoch {done}", tolerance)
            else:
                send(metrics, None)

    return TuneReport()


class Restored(NamedTuple):
    """What a trial starts from: its checkpoint's model, epochs done and history."""

    model: Any  # None: no checkpoint, build a new model
    epoch: int
    history: list[dict[str, Any]]
    own: bool  # the checkpoint is this trial's (False: PBT's donor, or none)


def restore_trial(spec: Spec, hp: dict[str, Any], checkpoint: Any = None,
                  trial_id: str | None = None, rebuild: Callable[[], Any] | None = None,
                  rebuild_first: bool = False) -> Restored:
    """The trial's latest checkpoint (a PBT donor's after an exploit), or ``Restored(None, 0, [], False)``.

    ``checkpoint`` and ``trial_id`` default to Tune's (``tune.get_checkpoint()``, the trial's
    id); a multi-worker trial's workers pass them, as they cannot ask Tune. ``rebuild``
    builds the trial's model anew, to be given the checkpoint's weights: used when the
    checkpoint holds the weights only (:func:`pipeline.checkpoints.save_model`), and, with
    ``rebuild_first`` (KerasTuner's way, its front door's), always but under PBT, whose
    exploits may bring another trial's model; else the saved model is loaded whole.
    """
    import keras
    from ray import tune

    if trial_id is None:
        checkpoint = tune.get_checkpoint()
        trial_id = tune.get_context().get_trial_id()
    if spec.scheduler.name != "pbt":  # PBT's exploits may lower a trial's epoch: Tune's choice
        checkpoint = own_checkpoint(checkpoint, trial_id)
    if checkpoint is None:
        return Restored(None, 0, [], False)
    import pipeline.preprocessing  # noqa: F401  (registers the custom preprocessing layers)

    # Only the download waits out a storage outage (retries rewrite the same folder, which
    # Ray leaves in place when a download into an existing folder fails); a bad file fails at once.
    with scratch("restore-") as d:
        patiently(lambda: checkpoint.to_directory(d), "reading the trial's checkpoint",
                  spec.storage.outage_tolerance_s)
        whole = os.path.join(d, MODEL_FILE)
        stored_whole = os.path.exists(whole)
        if rebuild is not None and (not stored_whole or (rebuild_first and spec.scheduler.name != "pbt")):
            model = load_weights_into(rebuild(), d)
        elif stored_whole:
            model = keras.models.load_model(whole)
        else:
            raise RuntimeError(f"the checkpoint holds the weights only ({WEIGHTS_FILE}: Keras "
                               "could not save the model whole) and nothing here rebuilds it")
        state = json.loads(Path(d, STATE_FILE).read_text())
    schedule = isinstance(model.optimizer._learning_rate,
                          keras.optimizers.schedules.LearningRateSchedule)
    if "learning_rate" in hp and not schedule:  # PBT may have mutated it since the checkpoint
        model.optimizer.learning_rate.assign(float(hp["learning_rate"]))
    own = state.get("trial_id") == trial_id
    return Restored(model, state["epoch"], list(state.get("history", [])), own)


def report_restored_end(history: list[dict[str, Any]]) -> None:
    """Report the restored trial's last epoch again, marked :data:`RESTORED_AT_END`."""
    from ray import tune

    tune.report({**history[-1], RESTORED_AT_END: True})


def fit_inputs(data: Dataset, batch_size: int, seed: int, shuffle: bool = True) -> dict[str, Any]:
    """``model.fit`` inputs: with TensorFlow, repeated tf.data pipelines built once per trial.

    Keras builds two new iterators over NumPy inputs every epoch, which costs more than
    the training steps of a small model (profiled: ~0.1 s of a 0.17 s digits epoch).
    Batching before repeating keeps each epoch exactly one pass, last partial batch included;
    validation runs on the same batch size, as ``fit`` does. Without validation rows,
    no validation.
    """
    import keras

    n, n_val = len(data.x_train), len(data.x_val)
    if keras.backend.backend() != "tensorflow":
        out = {"x": data.x_train, "y": data.y_train, "batch_size": batch_size, "shuffle": shuffle}
        if n_val:
            out["validation_data"] = (data.x_val, data.y_val)
        return out
    import tensorflow as tf

    train = tf.data.Dataset.from_tensor_slices((data.x_train, data.y_train))
    if shuffle:
        train = train.shuffle(n, seed=seed, reshuffle_each_iteration=True)
    out = {"x": train.batch(batch_size).repeat().prefetch(2),
           "steps_per_epoch": steps_per_epoch(n, batch_size), "shuffle": False}
    if n_val:
        out["validation_data"] = (tf.data.Dataset.from_tensor_slices((data.x_val, data.y_val))
                                  .batch(batch_size).repeat())
        out["validation_steps"] = steps_per_epoch(n_val, batch_size)
    return out


@contextmanager
def _released_graphs():
    """Free the traced graphs TensorFlow's gradient registry would keep after each trial.

    Every traced train step registers a ``CustomGradient-N`` entry in TF's global gradient
    registry that pins the whole graph, and nothing removes it (tensorflow#97697): a reused
    worker grew ~5 MB per trial. Entries added during the trial are dropped at its end.
    """
    try:
        from tensorflow.python.framework import ops as tf_ops

        registry = tf_ops._gradient_registry._registry
    except (ImportError, AttributeError):  # another backend, or TF moved it: nothing to do
        yield
        return
    before = set(registry)
    try:
        yield
    finally:
        for name in [k for k in registry if k not in before and k.startswith("CustomGradient-")]:
            del registry[name]


def freeze_long_lived() -> None:
    """Leave the objects alive now (imports: Ray, Tune, TensorFlow, pandas...) out of Python's
    garbage collections from now on, once per process (``gc.freeze``).

    A trial worker holds ~0.5 M such objects, and every full collection walks them all:
    ``keras.backend.clear_session()``, which user code calls before each build, collects
    (0.3-0.6 s here, 0.05 s frozen), and so do the collections tracing sets off. What trials
    create later is collected as before.
    """
    import gc

    if gc.get_freeze_count() == 0:
        gc.collect()
        gc.freeze()


def release_freed_memory() -> None:
    """Hand the C heap's free pages back to the OS (glibc's ``malloc_trim``; a no-op elsewhere).

    A reused worker frees the last trial's tensors and graphs with ``clear_session``, but
    glibc may keep the freed pages in its arenas, counted in the worker's RSS. Called once
    per trial, after ``clear_session`` (measured alone: ~2 MB less growth over 100 trials).
    """
    import ctypes

    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to trim
        return
    trim(0)



@contextmanager
def trial_session(cpu: float, gpu: float = 0, *, memory_growth: bool = False,
                  seed: int | None = None, keras_only_if_loaded: bool = False,
                  cwd: str | None = None) -> Iterator[None]:
    """The start and end every trial shares, whichever door it came through.

    The spec path, the KerasTuner and the Optuna front doors all run their trials in
    this: quiet storage logs; threads (and a GPU share) fenced to the trial's resources;
    a clean Keras session (reused actors run many trials); Keras' training state built
    before its first trace (:mod:`pipeline.keras_build`); freed C heap returned to the
    OS; the seed set (when given); TensorFlow's traced graphs released at the end.
    ``keras_only_if_loaded``: for objectives that may not use Keras at all (Optuna's),
    touch Keras only when the trial's code has already imported it. ``cwd``: a front
    door's driver folder, where the trial runs when this node has it (so user code finds
    relative paths where its script does).

    >>> with trial_session(cpu=1, seed=0):
    ...     pass  # build, fit and report here
    """
    import sys

    logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)
    if cwd and os.path.isdir(cwd):
        os.chdir(cwd)
    if keras_only_if_loaded and not ("keras" in sys.modules or "tensorflow" in sys.modules):
        yield
        return
    from pipeline.devices import configure

    configure(cpu, gpu, memory_growth)
    import keras

    from pipeline import keras_build

    keras_build.install()  # each fit traces its train step once, not twice
    keras.backend.clear_session()
    release_freed_memory()
    freeze_long_lived()
    if seed is not None:
        keras.utils.set_random_seed(seed)
    with _released_graphs():
        yield


def _installed_roots() -> list[str]:
    import site
    import sysconfig

    paths = sysconfig.get_paths()
    roots = {paths.get(k) for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    roots |= set(site.getsitepackages()) | {site.getusersitepackages()}
    return [os.path.join(os.path.realpath(r), "") for r in roots if r]


def callback_factory(ref: str) -> Any:
    """The factory a ``training.callbacks`` entry names, if a spec may name it.

    A spec is code, but a callback entry may only name a Keras callback class (a
    ``keras.callbacks.Callback`` subclass) or a callable defined in the user's own module
    (not the standard library, not an installed package, not the pipeline itself):
    ``subprocess:getoutput`` or ``os:system`` would otherwise run with the trial's
    environment, storage credentials included. Checked before anything is called.
    """
    import sys

    import keras

    module = ref.partition(":")[0]
    obj = resolve_callable(ref)
    if isinstance(obj, type) and issubclass(obj, keras.callbacks.Callback):
        return obj
    defined_in = sys.modules.get(getattr(obj, "__module__", None) or "")
    file = getattr(defined_in, "__file__", None)
    own = (
        getattr(obj, "__module__", None) == module
        and module.split(".")[0] not in ("pipeline", "searchers", "cluster")
        and file is not None
        and not any(os.path.realpath(file).startswith(r) for r in _installed_roots())
    )
    if not own:
        raise ValueError(
            f"training.callbacks: '{ref}' is neither a Keras callback class nor a callable "
            "defined in your own module; name a keras.callbacks class or a factory in your "
            "project's code")
    return obj


def _user_callbacks(spec: Spec) -> list:
    return [callback_factory(cb.factory)(**cb.kwargs) for cb in spec.training.callbacks]


# Before a reused actor takes its next trial, Tune waits for the stopped trial's thread to
# exit, 2 s by default, and fails the *next* trial if it has not (seen here: ASHA on mnist1d
# CNNs, 2 trials on 2 CPUs; unwinding Keras' fit and freeing the trial's graphs took longer).
# Waiting longer costs nothing when the thread exits at once. Read by Tune in this process.
REUSE_WAIT_S = "300"


def prepare_worker() -> None:
    """Process-level settings for a trial worker (every trial, by :func:`on_trial_thread`)."""
    os.environ.setdefault("TUNE_FUNCTION_THREAD_TIMEOUT_S", REUSE_WAIT_S)


class _TrialThread:
    """The one long-lived thread of a worker process that runs every trial's training.

    Tune runs each trial of a reused actor in a new thread, and TensorFlow keeps native
    per-thread state that outlives the thread: a reused worker's RSS grew ~0.28 MB per
    trial that way, ~0.02 MB when the same trials share one thread
    (``benchmarks/leak_keras_only.py --thread-per-trial``). Tune's thread hands the trial
    to this one and waits; whatever the trial raises (Tune stops a trial by raising
    ``SystemExit`` inside ``tune.report``) is raised again in Tune's thread.
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` on the trial thread, after :func:`prepare_worker`."""
        prepare_worker()
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._serve, name="trials", daemon=True)
                self._thread.start()
        done: Future = Future()
        self._jobs.put((done, fn, args, kwargs))
        return done.result()

    def _serve(self) -> None:
        while True:
            done, fn, args, kwargs = self._jobs.get()
            try:
                done.set_result(fn(*args, **kwargs))
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread as is
                done.set_exception(exc)
            del done, fn, args, kwargs  # the finished trial's objects are not kept alive


# Per worker process, like TensorFlow's own runtime it exists to spare; created on import.
on_trial_thread = _TrialThread().run


def train_keras(config: dict[str, Any], data: Dataset | StreamedDataset, spec: Spec,
                build_fn: Callable[..., Any] | None = None) -> None:
    """Ray Tune function trainable for one Keras trial.

    ``build_fn`` (a Python callable taking the hyperparameters) replaces
    ``spec.model.builder`` when given, for front doors such as KerasTuner's.
    """
    on_trial_thread(_train_keras, config, data, spec, build_fn)


def _train_keras(config: dict[str, Any], data: Dataset | StreamedDataset, spec: Spec,
                 build_fn: Callable[..., Any] | None) -> None:
    res = spec.resources
    with trial_session(res.cpu, res.gpu, memory_growth=res.gpu_memory_growth, seed=spec.seed):
        _fit_trial(config, data, spec, build_fn)


def new_trial_model(spec: Spec, hp: dict[str, Any], data: Dataset | StreamedDataset,
                    build_fn: Callable[..., Any] | None, batch_size: int):
    """The trial's model, built by the spec's builder (or ``build_fn``) and compiled unless
    the builder compiled it; ``batch_size``: the global batch (sizes the LR schedules)."""
    values = dict(hp)
    builder = values.pop("builder", spec.model.builder)  # the builder itself may be searched
    # the training split only: preprocessing fitted inside the model never sees val/test;
    # streamed data hands the statistics computed once on the driver instead of arrays
    train: dict[str, Any] = ({"train_stats": data.train_stats} if isinstance(data, StreamedDataset)
                             else {"x_train": data.x_train, "y_train": data.y_train})
    model = build_model(build_fn or builder, values, data.input_shape, data.num_classes, **train)
    if not model.compiled:
        n_train = data.rows("train") if isinstance(data, StreamedDataset) else len(data.x_train)
        compile_model(model, spec, values, steps_per_epoch(n_train, batch_size))
    return model


def _fit_trial(config: dict[str, Any], data: Dataset | StreamedDataset, spec: Spec,
               build_fn: Callable[..., Any] | None) -> None:
    hp = hyperparameters(spec, config)
    batch_size = int(hp.get("batch_size", spec.training.batch_size))

    def new_model():
        return new_trial_model(spec, hp, data, build_fn, batch_size)

    model, done, history, own = restore_trial(spec, hp, rebuild=new_model)
    if model is None:
        model = new_model()
    epochs = spec.training.epochs
    if done >= epochs and own and history:
        # Its own last checkpoint (paused on its last epoch by the median rule, or a driver
        # killed before Tune's state named that checkpoint): Tune may hold no result of it,
        # so the last epoch is reported again, marked, and left out of the stored history.
        report_restored_end(history)
        return
    if done >= epochs:
        # PBT exploited this trial on its last epoch: report the restored (donor's) model's
        # validation metrics, so the trial's history ends with its own result.
        from ray import tune

        val = (data.eval_inputs("val", batch_size) if isinstance(data, StreamedDataset)
               else {"x": data.x_val, "y": data.y_val})
        values = model.evaluate(**val, verbose=0, return_dict=True)
        tune.report({**{f"val_{k}": float(v) for k, v in values.items()}, "epoch": done,
                     "num_params": model.count_params()})
        return
    # streamed: each epoch's row says which shards the trial trained and validated on
    extra = {"data_split": data.fingerprint} if isinstance(data, StreamedDataset) else None
    model.fit(
        **(data.fit_inputs(batch_size, spec.seed) if isinstance(data, StreamedDataset)
           else fit_inputs(data, batch_size, spec.seed)),
        epochs=epochs,
        initial_epoch=done,
        verbose=spec.training.verbose,
        callbacks=[*_user_callbacks(spec), report_callback(spec, epochs, history, extra)],
    )
