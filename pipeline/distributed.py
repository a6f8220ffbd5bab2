"""Trials bigger than one worker: ``resources.workers: N`` (N > 1).

Each such trial is a Ray Tune function (:func:`train_multiworker`, the trial's *driver*)
that runs a Ray Train ``TensorflowTrainer`` of N workers, each holding ``resources.cpu``
and ``resources.gpu``, training one Keras model with TensorFlow's
``MultiWorkerMirroredStrategy`` (synchronous data parallelism). This is the pattern Ray
documents for Train v2 inside Tune; what differs is what comes back to Tune:

* every worker reports every epoch to Ray Train (``ray.train.report``); worker rank 0
  alone writes the checkpoint, in the same format as a one-worker trial
  (``model.keras`` + ``state.json``, :mod:`pipeline.trainable`);
* a Train callback (:class:`_ToTune`, run in Train's controller) hands each epoch's rank-0
  metrics, the node ids of all workers (``node_ids``) and the checkpoint to the driver,
  which reports them to Tune with ``tune.report`` -- so Tune keeps its own copy of the
  checkpoint and schedulers that stop, pause or exploit trials (ASHA, HyperBand, PBT) see
  a trial like any other;
* the workers start from the trial's Tune checkpoint (a restarted, resumed or exploited
  trial), or, after Ray Train restarted a lost worker group within the trial
  (``failure.max_failures``), from the run's own latest checkpoint.

Data: the training (and validation) rows are sharded across the workers (tf.data
``AutoShardPolicy.DATA``: every worker reads the whole in-memory or streamed pipeline and
keeps its share). ``training.batch_size`` is the batch of *one* worker, so the global
batch is ``batch_size x workers`` and an epoch has ``ceil(rows / global batch)`` steps;
the learning rate is not rescaled. Loss and metrics are rank 0's Keras logs.

The driver itself holds no CPU (``DRIVER_RESOURCES``): it waits on the queue while the
workers train. Train keeps its checkpoints under ``<storage>/<name>-workers/<trial run>``
until the trial ends (then they are deleted; Tune's copies stay with the trial).
Imported only when a spec asks for more than one worker, or when the KerasTuner front
door's ``distribution_strategy`` is a ``MultiWorkerMirroredStrategy``: there each worker
runs that door's trial (:func:`pipeline.compat._kt_trial.worker_trial`, passed as
``body``) instead of the spec's Keras fit, with the same strategy, reports and checkpoints
(its ``batch_size`` is the global batch, as in Keras).
"""

from __future__ import annotations

import os
import threading
import uuid
from typing import Any, Callable, NamedTuple

from ray.train.v2.api.callback import UserCallback

from pipeline._patch import wrap_once
from pipeline.data import Dataset
from pipeline.spec import Spec
from pipeline.streaming import StreamedDataset

# The trial's driver only waits for its workers' reports.
DRIVER_RESOURCES: dict[str, float] = {"cpu": 0, "memory": 2**20}  # Tune needs a non-empty bundle: 1 MiB
_POLL_S = 1.0


class Worker(NamedTuple):
    """What the body of one Train worker of a multi-worker trial is handed."""

    strategy: Any  # the MultiWorkerMirroredStrategy, created in this worker
    rank: int
    world: int  # the number of workers
    checkpoint: Any  # what to continue from: Train's newest, else the trial's Tune checkpoint, or None
    trial_id: str  # the Tune trial's (the workers cannot ask Tune)
    report: Callable[[dict[str, Any], str | None], None]  # (metrics, checkpoint dir or None)


def train_multiworker(config: dict[str, Any], data: Dataset | StreamedDataset, spec: Spec,
                      build_fn: Callable[..., Any] | None = None,
                      storage: tuple[str, Any] | None = None,
                      body: Callable[[Worker, dict[str, Any]], None] | None = None,
                      cwd: str | None = None) -> None:
    """Ray Tune function trainable: one trial on ``spec.resources.workers`` Train workers.

    ``storage`` is ``(root, pyarrow filesystem or None)`` of the experiment's storage, where
    Ray Train keeps the run's checkpoints while the trial runs (every node must reach it).
    ``body(worker, cfg)`` is what each worker runs once its strategy exists (``cfg`` holds
    ``config``, ``data``, ``spec`` and ``build_fn``): the spec's Keras fit by default, a front
    door's trial otherwise (:mod:`pipeline.compat.keras_tuner`); each epoch it calls
    ``worker.report`` on every worker. ``cwd``: the folder workers run in when their node has it.
    """
    import ray
    from ray import train, tune
    from ray.train.tensorflow import TensorflowTrainer
    from ray.util.queue import Empty, Queue

    from pipeline.trainable import prepare_worker

    prepare_worker()  # a reused actor waits for this function to end the trial's workers
    res = spec.resources
    trial_id = tune.get_context().get_trial_id()
    root, fs = storage if storage is not None else (spec.storage.path, None)
    handoff: Any = Queue(maxsize=1, actor_options={"num_cpus": 0})
    run_name = f"{trial_id}-{uuid.uuid4().hex[:8]}"
    trainer = TensorflowTrainer(
        _worker_loop,
        train_loop_config={"config": config, "data": data, "spec": spec, "build_fn": build_fn,
                           "checkpoint": tune.get_checkpoint(), "trial_id": trial_id,
                           "body": body or _fit_workers, "cwd": cwd},
        scaling_config=train.ScalingConfig(
            num_workers=res.workers, use_gpu=res.gpu > 0,
            resources_per_worker={"CPU": res.cpu, **({"GPU": res.gpu} if res.gpu else {})}),
        run_config=train.RunConfig(
            name=run_name, storage_path=f"{root.rstrip('/')}/{spec.name}-workers",
            storage_filesystem=fs,
            failure_config=train.FailureConfig(max_failures=spec.failure.max_failures),
            # the latest two: Tune copies one while the workers may write the next
            checkpoint_config=train.CheckpointConfig(num_to_keep=2),
            callbacks=[_ToTune(handoff)]),  # type: ignore[list-item]  # a UserCallback
    )
    outcome: dict[str, Any] = {}

    def fit() -> None:
        try:
            trainer.fit()
        except BaseException as exc:  # noqa: BLE001 - raised again in the trial's thread
            outcome["error"] = exc

    runner = threading.Thread(target=fit, name=f"train-{trial_id}", daemon=True)
    runner.start()
    controller = None
    try:
        while True:
            try:
                item = handoff.get(timeout=_POLL_S)
            except Empty:
                if not runner.is_alive():
                    break
                continue
            metrics, checkpoint, controller = item
            tune.report(metrics, checkpoint=checkpoint)
        # the last report may still be in the queue when the run ends
        while not handoff.empty():
            metrics, checkpoint, controller = handoff.get()
            tune.report(metrics, checkpoint=checkpoint)
        if "error" in outcome:
            raise outcome["error"]
    except BaseException:
        # Tune stopped the trial (SystemExit in tune.report) or it failed: end the workers
        # now rather than when this actor goes (a reused actor would keep them training).
        if controller is not None:
            try:
                ray.get(controller.abort.remote(), timeout=30)
            except Exception:  # noqa: BLE001 - it may have ended on its own meanwhile
                pass
        raise
    finally:
        runner.join(timeout=30)
        _remove_run(root, fs, f"{spec.name}-workers/{run_name}")
        ray.kill(handoff.actor)


def _remove_run(root: str, fs: Any, rel: str) -> None:
    """Delete Ray Train's copies of a finished trial's checkpoints (Tune keeps its own)."""
    import shutil

    path = f"{root.rstrip('/')}/{rel}"
    try:
        if fs is None:
            shutil.rmtree(path, ignore_errors=True)
            os.rmdir(os.path.dirname(path))  # the last trial's run: the folder goes too
        else:
            fs.delete_dir(path)
    except OSError:
        pass  # not empty (other trials still run), or already gone


class _ToTune(UserCallback):
    """Runs in Ray Train's controller: hands every report to the trial's driver.

    The rank-0 metrics, with ``node_ids`` (every worker's node, in rank order) added; the
    checkpoint as a Tune checkpoint; the controller's handle, so the driver can abort it.
    """

    def __init__(self, handoff: Any) -> None:
        self.handoff = handoff

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]],
                     checkpoint: Any) -> None:
        import ray
        from ray import tune

        row = dict(metrics[0])
        row["node_ids"] = [m.get("node_id") for m in metrics]
        ckpt = (None if checkpoint is None
                else tune.Checkpoint(checkpoint.path, filesystem=checkpoint.filesystem))
        self.handoff.put((row, ckpt, ray.get_runtime_context().current_actor))


def _worker_loop(cfg: dict[str, Any]) -> None:
    """One Train worker of a multi-worker trial (Ray Train has set ``TF_CONFIG``)."""
    from pipeline.trainable import on_trial_thread

    on_trial_thread(_worker_fit, cfg)


def _worker_fit(cfg: dict[str, Any]) -> None:
    import ray.train
    import tensorflow as tf

    from pipeline.trainable import trial_session

    spec: Spec = cfg["spec"]
    res = spec.resources
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()

    def report(metrics: dict[str, Any], ckpt_dir: str | None) -> None:
        # every worker reports (Train waits for all); rank 0 alone hands the checkpoint
        ckpt = ray.train.Checkpoint.from_directory(ckpt_dir) if ckpt_dir and rank == 0 else None
        ray.train.report(metrics, checkpoint=ckpt)

    with trial_session(res.cpu, res.gpu, memory_growth=res.gpu_memory_growth, seed=spec.seed,
                       cwd=cfg["cwd"]):
        # Ray Train set TF_CONFIG; the strategy joins the other workers' collective here.
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        _average_logs_over_workers()
        # a lost worker group restarted by Ray Train: its own newest checkpoint comes first
        checkpoint = ray.train.get_checkpoint() or cfg["checkpoint"]
        cfg["body"](Worker(strategy, rank, ctx.get_world_size(), checkpoint, cfg["trial_id"], report),
                    cfg)


def sharded(inputs: dict[str, Any]) -> dict[str, Any]:
    """``model.fit`` inputs with every tf.data pipeline split by data across the workers."""
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return {k: v.with_options(options) if isinstance(v, tf.data.Dataset) else v
            for k, v in inputs.items()}


def build_before_fit(model: Any, inputs: dict[str, Any]) -> None:
    """Build the model's, loss', metrics' and optimizer's state from one local batch.

    Keras 3 (3.12 here) builds a model under a ``tf.distribute`` strategy at the start
    of ``fit``/``evaluate`` by MEAN-reducing the first *distributed* batch, which fails
    under ``MultiWorkerMirroredStrategy`` ("Attempt to convert a value (PerReplica...)").
    Building from a plain batch first, and skipping that step for this model, gives the
    same state (only shapes and dtypes are read).
    """
    import tensorflow as tf

    x = inputs["x"]
    batch = next(iter(x)) if isinstance(x, tf.data.Dataset) else (x[:2], inputs["y"][:2])
    model._symbolic_build(data_batch=batch)
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None


def _average_logs_over_workers() -> None:
    """Make Keras average each step's scalar logs (loss, metrics) over the workers.

    Keras 3 (3.15 here) reduces a step's logs under ``MultiWorkerMirroredStrategy`` with
    ``strategy.reduce("MEAN", v, axis=0)``, which fails on the scalar logs ("Invalid
    reduction dimension 0 for input with 0 dimensions"). Scalars are averaged across the
    replicas instead (every worker has the same per-worker batch, so the mean of the
    workers' losses is the loss of the global batch); everything else is left to Keras.
    Patched once per Train worker process (Train workers are not shared with other trials).
    """
    from keras.src.backend.tensorflow import trainer as tf_trainer

    wrap_once(tf_trainer, "reduce_per_replica", _scalars_averaged)


def _scalars_averaged(original: Any) -> Any:
    from keras import tree
    from keras.src.backend.tensorflow import trainer as tf_trainer

    def reduce_per_replica(values: Any, strategy: Any, reduction: str) -> Any:
        if reduction in ("auto", "mean") and tf_trainer._collective_all_reduce_multi_worker(strategy):
            leaves = tree.flatten(values)
            if leaves and all(getattr(v, "shape", None) is not None and len(v.shape) == 0
                              for v in leaves):
                return tree.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), values)
        return original(values, strategy, reduction)

    return reduce_per_replica


def _fit_workers(worker: Worker, cfg: dict[str, Any]) -> None:
    """The spec's Keras trial on one worker (the default body)."""
    import ray

    from pipeline.trainable import (
        _user_callbacks,
        fit_inputs,
        hyperparameters,
        new_trial_model,
        report_callback,
        restore_trial,
    )

    spec: Spec = cfg["spec"]
    data = cfg["data"]
    build_fn = cfg["build_fn"]
    strategy, rank, world, checkpoint, trial_id, report = worker

    hp = hyperparameters(spec, cfg["config"])
    batch_size = int(hp.get("batch_size", spec.training.batch_size))
    global_batch = batch_size * world
    streamed = isinstance(data, StreamedDataset)

    def new_model():
        return new_trial_model(spec, hp, data, build_fn, global_batch)

    with strategy.scope():  # variables (restored or new) are mirrored across the workers
        model, done, history, own = restore_trial(spec, hp, checkpoint, trial_id, rebuild=new_model)
        if model is None:
            model = new_model()
    epochs = spec.training.epochs
    extra = {"data_split": data.fingerprint} if streamed else None
    inputs = (data.fit_inputs(global_batch, spec.seed) if streamed
              else fit_inputs(data, global_batch, spec.seed))
    with strategy.scope():
        build_before_fit(model, inputs)
    if done >= epochs:
        if not own:  # PBT exploited the trial on its last epoch: report the donor's model
            val = (data.eval_inputs("val", global_batch) if streamed
                   else {"x": data.x_val, "y": data.y_val, "batch_size": global_batch})
            values = model.evaluate(**sharded(val), verbose=0, return_dict=True)
            report({**{f"val_{k}": float(v) for k, v in values.items()}, "epoch": done,
                    "num_params": model.count_params(),
                    "node_id": ray.get_runtime_context().get_node_id()}, None)
        return
    with strategy.scope():
        model.fit(
            **sharded(inputs),
            epochs=epochs,
            initial_epoch=done,
            verbose=spec.training.verbose if rank == 0 else 0,
            callbacks=[*_user_callbacks(spec),
                       report_callback(spec, epochs, history, extra, report=report, trial_id=trial_id)],
        )
