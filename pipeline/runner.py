"""The runner: a validated Spec -> a ``ray.tune.Tuner`` -> stored results."""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from pipeline.spec import Spec, SpecError, check_environment
from pipeline.storage import SPEC_FILE, StorageUnavailable, locate, patiently

if TYPE_CHECKING:
    from pipeline.data import Dataset
    from pipeline.results import Results
    from pipeline.space import SearchSpace
    from pipeline.storage import Location
    from pipeline.streaming import StreamedDataset


def effective_spec(spec: Spec) -> Spec:
    """Schedulers that pause or exploit trials need a checkpoint at each decision point."""
    from searchers import SCHEDULERS

    if SCHEDULERS[spec.scheduler.name].needs_checkpoints and spec.training.checkpoint_every == 0:
        every = int(spec.scheduler.options.get("perturbation_interval", 1))
        training = spec.training.model_copy(update={"checkpoint_every": every})
        return spec.model_copy(update={"training": training})
    return spec


def _warm_started(spec: Spec) -> Spec:
    """Prepend the best configs of an earlier experiment to ``points_to_evaluate``."""
    from pipeline.results import Results

    warm = spec.searcher.warm_start
    if warm is None:
        return spec
    try:
        earlier = Results.open(warm.path, warm.endpoint_override)
        board = earlier.leaderboard(warm.top)
    except (OSError, ValueError, LookupError) as exc:
        raise SpecError([f"searcher.warm_start.path: cannot read {warm.path}: {exc}"]) from None
    names = set(spec.space)
    points = [{k.removeprefix("config/"): v for k, v in row.items()
               if k.startswith("config/") and k.removeprefix("config/") in names and v == v}
              for row in board.to_dict(orient="records")]
    searcher = spec.searcher.model_copy(
        update={"points_to_evaluate": [*points, *spec.searcher.points_to_evaluate]})
    return spec.model_copy(update={"searcher": searcher})


def _check_storage(where) -> None:
    """Unreachable or read-only storage is an error now, before Ray starts."""
    try:
        where.check_writable()
    except (OSError, ValueError) as exc:
        raise SpecError([f"storage.path: cannot write to {where.path}: {exc}"]) from None


def run(spec: Spec, *, address: str | None = None, resume: bool = False,
        progress: bool | str = True, data: "Dataset | None" = None,
        build_fn: "Callable[..., Any] | None" = None,
        trainable: "Callable[[dict], Any] | None" = None,
        worker_body: "Callable[..., Any] | None" = None,
        callbacks: "Sequence[Any]" = (), stop: Any = None,
        stop_starting: "Callable[[], bool] | None" = None,
        since: float | None = None) -> "Results":
    """Run the experiment described by ``spec`` and return its results.

    ``resume=True`` continues an interrupted experiment of the same name and
    storage (finished trials are not re-run); with nothing to resume it starts
    afresh. Without ``resume`` an existing experiment is never overwritten.
    ``progress``: True (a live panel on a terminal, lines otherwise), "live",
    "lines", or False.

    Front doors (``pipeline.compat``) may replace parts of the spec with Python
    objects: ``data`` (a :class:`~pipeline.data.Dataset` instead of
    ``spec.data``), ``build_fn`` (a model-building callable instead of
    ``spec.model.builder``), or a whole Tune function ``trainable(config)``
    instead of the Keras trainable, or a ``worker_body`` that every Ray Train
    worker of a multi-worker trial runs instead of the Keras fit (each trial is
    then :func:`pipeline.distributed.train_multiworker` on
    ``spec.resources.workers`` workers, one included). They may also add ``callbacks`` (more
    ``ray.tune.Callback`` objects, after the pipeline's own), a ``stop``
    (a ``ray.tune.Stopper``, which stops running trials too) and ``stop_starting``
    (once it returns True, no trial starts and the running ones finish); they apply
    to a new experiment only (a resumed one keeps the run configuration it was
    started with). ``since`` (``time.monotonic()``) starts the clock of
    ``search.start_trials_for_s`` before the run, e.g. when the user's call began.
    """
    from ray import tune

    import searchers
    from cluster.connect import ray_session
    from pipeline.results import Results
    from pipeline.soft_stop import SoftStop

    spec = effective_spec(spec)
    _check_front_door(spec, trainable)
    # a front door's trial: user code that expects its cwd
    trainable_given = trainable is not None or worker_body is not None
    space = _checked_space(spec)
    where = _storage_for(spec, resume)
    spec = _warm_started(spec)
    # Progress comes from our one-line-per-trial callback; Tune's own tables stay off.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # before Ray starts: data errors (missing shards...) end the run first
    shipped = _shipped_data(spec, data, progress) if trainable is None else None

    with ray_session(address):
        spec, why = _with_concurrency(spec)
        search_alg, param_space, scheduler = searchers.build(spec, space)
        n_nodes = _check_nodes_see_storage(spec, where)
        if progress:
            print(f"{spec.name}: {spec.num_trials} trials, {spec.search.max_concurrent} at a time "
                  f"({why}), on {n_nodes} Ray node(s)", flush=True)
        trainable = _trainable(spec, where, trainable, shipped, build_fn, worker_body)
        if resume and tune.Tuner.can_restore(where.path, storage_filesystem=where.fs):
            tuner = tune.Tuner.restore(where.path, trainable, storage_filesystem=where.fs,
                                       resume_unfinished=True, resume_errored=True)
        else:
            soft = ([SoftStop(search_alg, spec.search.start_trials_for_s, stop_starting, since)]
                    if spec.search.start_trials_for_s or stop_starting else [])
            tuner = _new_tuner(spec, where, trainable, progress, search_alg, param_space, scheduler,
                               extra_callbacks=[*soft, *callbacks], stop=stop)
            where.write_text(SPEC_FILE, spec.to_yaml())
        _fit(tuner, where, keep_cwd=trainable_given)
    _check_saved(where, spec.storage.outage_tolerance_s)
    return Results(where)


def _check_front_door(spec: Spec, trainable: "Callable[[dict], Any] | None") -> None:
    """A front door's own trainable runs on one worker: never quietly train on fewer."""
    if trainable is not None and spec.resources.workers > 1:
        raise SpecError([f"resources.workers: {spec.resources.workers} workers per trial need "
                         "the spec's own Keras trainable (pipeline.run with a spec); this front "
                         "door runs each trial on one worker"])


def _checked_space(spec: Spec) -> "SearchSpace":
    """The spec's search space, once its environment, searcher and scheduler check out."""
    import searchers

    # A Spec built in Python has passed the schema only; the searcher and scheduler are
    # built once here, before anything else is written, so bad options name their field.
    check_environment(spec)
    space = spec.search_space()
    errors = searchers.check_build(spec, space)
    if errors:
        raise SpecError(errors)
    return space


def _storage_for(spec: Spec, resume: bool) -> "Location":
    """The experiment's storage, writable, and holding no experiment of that name unless resuming."""
    where = locate(spec.storage.path, spec.name, spec.storage.endpoint_override)
    _check_storage(where)
    if where.exists() and not resume:
        raise SpecError([f"name: experiment '{spec.name}' already exists at {where.path}; "
                         "pass --resume to continue it or choose another name"])
    return where


def _shipped_data(spec: Spec, data: "Dataset | None",
                  progress: bool | str) -> "Dataset | StreamedDataset":
    """The dataset as the trials get it; sharded data is only listed here (it may be on S3)."""
    from pipeline.data import load_dataset
    from pipeline.streaming import ShardError, StreamedDataset

    try:
        shipped: Dataset | StreamedDataset = (data or load_dataset(spec.data, spec.seed)).for_trials()
    except ShardError as exc:
        raise SpecError([str(exc)]) from None
    if progress and isinstance(shipped, StreamedDataset):
        print(shipped.summary(), flush=True)
    return shipped


def _check_nodes_see_storage(spec: Spec, where: "Location") -> int:
    """Local storage must be visible on every node of a cluster; return the number of nodes."""
    from cluster.connect import alive_nodes, nodes_not_seeing

    n_nodes = alive_nodes()
    if where.fs is None and not spec.storage.shared and n_nodes > 1:
        blind = nodes_not_seeing(where.root)
        if blind:
            raise SpecError([
                f"storage.path: '{spec.storage.path}' ({where.root}) is not visible on "
                f"{len(blind)} of the cluster's {n_nodes} nodes ({', '.join(blind)}); "
                "use shared storage (s3://, gs://) or a folder every node mounts"])
    return n_nodes


def _trainable(spec: Spec, where: "Location", trainable: "Callable[[dict], Any] | None",
               shipped: "Dataset | StreamedDataset | None", build_fn: "Callable[..., Any] | None",
               worker_body: "Callable[..., Any] | None" = None) -> Any:
    """The Tune trainable with its resources: the front door's, the Keras one, or multi-worker."""
    from ray import tune

    from pipeline.checkpoints import stored_checkpoints_only
    from pipeline.trainable import train_keras

    if worker_body is not None or (trainable is None and spec.resources.workers > 1):
        from pipeline.distributed import DRIVER_RESOURCES, train_multiworker

        # the trial's driver holds nothing; its Ray Train workers hold the resources
        return tune.with_resources(stored_checkpoints_only(tune.with_parameters(
            train_multiworker, data=shipped, spec=spec, build_fn=build_fn,
            storage=(where.root, where.fs), body=worker_body,
            cwd=os.getcwd() if worker_body is not None else None)), DRIVER_RESOURCES)
    if trainable is None:
        trainable = tune.with_parameters(train_keras, data=shipped, spec=spec, build_fn=build_fn)
    return tune.with_resources(stored_checkpoints_only(trainable),
                               {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu})


def _new_tuner(spec: Spec, where: "Location", trainable: Any, progress: bool | str,
               search_alg: Any, param_space: dict, scheduler: Any, *,
               extra_callbacks: "Sequence[Any]" = (), stop: Any = None) -> Any:
    """A fresh ``tune.Tuner`` for the experiment: its search, storage, checkpoints and callbacks."""
    from ray import tune

    from searchers import SCHEDULERS

    callbacks = _callbacks(spec, progress) + list(extra_callbacks)
    metric, mode = spec.objective.primary
    # Schedulers that exploit other trials' checkpoints (PBT) must find them still there.
    keep = None if SCHEDULERS[spec.scheduler.name].needs_checkpoints else 2
    return tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            metric=None if spec.objective.multi else metric,
            mode=None if spec.objective.multi else mode,
            search_alg=search_alg,
            scheduler=scheduler,
            num_samples=spec.num_trials,
            max_concurrent_trials=None,  # the search algorithm limits itself
            time_budget_s=spec.search.time_budget_s,
            reuse_actors=spec.search.reuse_actors,
        ),
        run_config=tune.RunConfig(
            name=spec.name,
            storage_path=where.root,
            storage_filesystem=where.fs,
            failure_config=tune.FailureConfig(max_failures=spec.failure.max_failures),
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=keep,  # the best and (always kept by Tune) the latest
                checkpoint_score_attribute=None if spec.objective.multi else metric,
                checkpoint_score_order=mode,
            ),
            callbacks=callbacks,
            stop=stop,
            verbose=0,
        ),
    )


def _callbacks(spec: Spec, progress: bool | str) -> list[Any]:
    """Our progress lines or panel, Tune's result files, and MLflow if the spec tracks there."""
    from pipeline.progress import Progress, TuneTrialLinesOff

    metric, mode = spec.objective.primary
    callbacks: list[Any] = [Progress(metric, mode, spec.num_trials, spec.training.epochs,
                                     time_budget_s=spec.search.time_budget_s,
                                     live={"live": True, "lines": False}.get(str(progress)))
                            ] if progress else []
    callbacks += [TuneTrialLinesOff(), *_loggers(spec)]
    if spec.tracking.mlflow_uri:
        from ray.air.integrations.mlflow import MLflowLoggerCallback

        if spec.tracking.mlflow_uri.startswith("file:"):  # a local file store, on purpose
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        callbacks.append(MLflowLoggerCallback(tracking_uri=spec.tracking.mlflow_uri,
                                              experiment_name=spec.name))
    return callbacks


def _fit(tuner: Any, where: "Location", keep_cwd: bool = False) -> None:
    """Run the trials; on local storage a failure to read the experiment back is an error.

    ``keep_cwd``: trials run in the driver's working folder (on a local Ray), not in their
    trial folder, so a front door's user code finds relative paths where its script does.
    """
    from pipeline import tune_patches
    from pipeline.results import quiet_analysis

    tune_patches.install()  # a trial whose reused worker dies as it takes the trial is retried
    quiet_analysis()  # Tune reads the run back as it ends
    env = {"TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1"}  # ours are in the callbacks
    if keep_cwd:
        env["RAY_CHDIR_TO_TRIAL_DIR"] = "0"  # Tune passes it on to the trial actors
    try:
        with _env(**env):
            tuner.fit()
    except OSError:  # Tune reads the experiment back from storage as it ends
        if where.fs is None:
            raise


def _with_concurrency(spec: Spec) -> tuple[Spec, str]:
    """``spec`` with ``search.max_concurrent`` set: the user's cap, or what the cluster holds.

    Unset, it is Ray's own default: as many trials as the cluster's CPUs (and GPUs)
    fit at the spec's per-trial resources, but never more than the trials.
    """
    import math

    import ray

    if spec.search.max_concurrent:
        return spec, "search.max_concurrent"
    total = ray.cluster_resources()
    workers = spec.resources.workers  # a multi-worker trial holds workers x (cpu, gpu)
    fits = [math.floor(total.get(kind, 0) / (need * workers) + 1e-9)
            for kind, need in (("CPU", spec.resources.cpu), ("GPU", spec.resources.gpu)) if need]
    n = max(1, min([spec.num_trials, *fits]))
    cpus = total.get("CPU", 0)
    why = f"the cluster's {cpus:g} CPUs" + (f", {total.get('GPU', 0):g} GPUs" if spec.resources.gpu else "")
    if n == spec.num_trials and (not fits or n < min(fits)):
        why = "one per trial"
    search = spec.search.model_copy(update={"max_concurrent": n})
    return spec.model_copy(update={"search": search}), why


def _loggers(spec: Spec) -> list:
    """Tune's per-trial result files: JSON and CSV (what Results reads; never shortened by a
    trial's restart, :mod:`pipeline.result_files`), TensorBoard if asked.

    Tune would add all three itself, TensorBoard's whenever tensorboardX is installed.
    """
    from pipeline.result_files import CsvRows, JsonRows

    loggers: list = [JsonRows(), CsvRows()]
    if spec.tracking.tensorboard:
        from ray.tune.logger import TBXLoggerCallback

        loggers.append(TBXLoggerCallback())
    return loggers


@contextmanager
def _env(**values: str) -> Iterator[None]:
    """Environment variables set for the block only (Tune reads some of its options there)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _check_saved(where, tolerance_s: float) -> None:
    """After the run, the experiment folder must be readable: Tune only logs a failed final save."""
    if where.fs is None:
        return
    try:
        patiently(where.exists, "reading the experiment state back", tolerance_s)
    except StorageUnavailable as exc:
        raise StorageUnavailable(
            f"{exc}\nThe trials' checkpoints that were saved are kept; once storage is back, "
            "`run SPEC --resume` re-runs only the unfinished trials, from their checkpoints.") from None
