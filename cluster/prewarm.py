"""Trial workers started, with TensorFlow imported, before the first trials ask for them.

Ray starts a trial's process when Ray Tune creates the trial's actor, after ``search()``
or ``optimize()`` was called; that process then spends its first seconds importing Ray Tune
and TensorFlow (about 5 s each on 2 CPUs, two at a time) before the model is built. The
front doors start Ray while the user's script goes on (:class:`cluster.connect.EarlyStart`);
once it is up, :func:`prestart` asks every node's raylet for the worker processes the first
trials will take, and the job's worker setup hook (:func:`setup_worker`) imports TensorFlow
and Ray Tune in them while the script prepares its data.

Ray hands an idle worker only to an actor whose runtime environment is the worker's, so
the workers are started with exactly what Tune gives its trial actors: the job's runtime
environment plus Tune's environment variables (:func:`trial_env`). Ray has no public call
for this; :func:`prestart` sends the raylet's ``PrestartWorkers`` request (Ray >= 2.41) and
gives up quietly when anything about it fails: the trials then start as they would anyway.
A front door may also ask for ``helpers``: workers with the job's own environment, for the
actors it starts beside the trials (the Optuna door's study actor). An unused worker may
exit after ``keep_alive_s``, when the node holds more idle workers than CPUs (Ray 2.60 then
ended an unused helper, not a trial worker).
"""

from __future__ import annotations

import gc
import importlib
import json
import logging
import math
import os
from typing import Any

log = logging.getLogger(__name__)

# In a job's environment: what its trial workers import as they start ("tune", "tensorflow").
WARM = "PIPELINE_WARM_TRIAL_WORKERS"
# What Ray Tune adds to every trial actor's environment (ray.tune.execution.class_cache):
# copied, so that the request need not wait for Ray Tune's import; tests/test_prewarm.py
# compares them with Tune's own.
TUNE_ENV = {"PL_DISABLE_FORK": "1"}
TUNE_PROPAGATED = frozenset({
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SECURITY_TOKEN", "AWS_SESSION_TOKEN",
    "NCCL_RAS_ADDR", "RAY_CHDIR_TO_TRIAL_DIR", "RAY_TRAIN_CHECKPOINT_UPLOAD_WARN_INTERVAL_S",
    "RAY_TRAIN_COLLECTIVE_TIMEOUT_S", "RAY_TRAIN_COLLECTIVE_WARN_INTERVAL_S",
    "RAY_TRAIN_ENABLE_CONTROLLER_STRUCTURED_LOGGING", "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER",
    "RAY_TRAIN_ENABLE_PRINT_PATCH", "RAY_TRAIN_ENABLE_STATE_ACTOR_RECONCILIATION",
    "RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS", "RAY_TRAIN_ENABLE_WORKER_STRUCTURED_LOGGING",
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "RAY_TRAIN_PREEMPTION_POLL_INTERVAL_S",
    "RAY_TRAIN_STATE_ACTOR_RECONCILIATION_INTERVAL_S", "RAY_TRAIN_V2_ENABLED",
    "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "RAY_TRAIN_WORKER_HEALTH_CHECK_TIMEOUT_S",
    "RAY_WARN_BLOCKING_GET_INSIDE_ASYNC", "TORCHFT_LIGHTHOUSE",
    "TRAIN_COPY_DIRECTORY_CHECKPOINTS_INSTEAD_OF_MOVING",
})
_MAX_PER_NODE = 10  # the most one request may ask of a raylet (Ray's own cap)


def setup_worker() -> None:
    """Ray's ``worker_process_setup_hook`` for the pipeline's runs.

    Quiets TensorFlow's start-up lines (:mod:`pipeline.quiet`); in a Tune trial worker of a
    job that asked for it (``WARM`` set), imports Ray Tune, and TensorFlow (``WARM`` is
    ``tensorflow``) right away, so a worker started ahead of its trial is ready when the
    trial comes.
    """
    from pipeline.quiet import install

    install()
    warm = os.environ.get(WARM)
    if warm not in ("tune", "tensorflow") or os.environ.get("PL_DISABLE_FORK") != TUNE_ENV["PL_DISABLE_FORK"]:
        return
    try:
        # what the trial's actor class needs first, then (Keras trials) what it trains with
        for module in ("ray.tune", "tensorflow")[:2 if warm == "tensorflow" else 1]:
            importlib.import_module(module)
    except Exception:  # noqa: BLE001 - the trial's own import reports it, where it belongs
        log.debug("warming the trial worker failed", exc_info=True)
        return
    gc.collect()  # and what is alive now stays out of later collections (trial_session's too)
    gc.freeze()


def trial_env(keep_cwd: bool) -> dict[str, str]:
    """The environment variables Ray Tune gives a trial actor started now (from this process).

    ``keep_cwd``: the run sets ``RAY_CHDIR_TO_TRIAL_DIR=0`` (:func:`pipeline.runner.run` for
    the front doors), which Tune passes on.
    """
    env = {**TUNE_ENV, **{k: v for k, v in os.environ.items() if k in TUNE_PROPAGATED}}
    if keep_cwd:
        env["RAY_CHDIR_TO_TRIAL_DIR"] = "0"
    return env


def per_node(node_cpus: float, cpu_per_trial: float, trials: int) -> int:
    """Workers to start on a node: the trials that fit on it at once, at most ``trials``.

    >>> per_node(2, 1, 20), per_node(8, 3, 20), per_node(8, 1, 2)
    (2, 2, 2)
    >>> per_node(0, 1, 5), per_node(4, 0, 9), per_node(64, 0.5, 100)  # a head without CPUs; 0-CPU trials
    (0, 4, 10)
    """
    fits = math.floor(node_cpus / cpu_per_trial + 1e-9) if cpu_per_trial > 0 else int(node_cpus)
    return max(0, min(fits, trials, _MAX_PER_NODE))


def prestart(trials: int, cpu_per_trial: float, keep_cwd: bool = True,
             keep_alive_s: int = 300, helpers: int = 0) -> int:
    """Ask each alive node for the trial workers that fit on it; the number asked for.

    ``helpers``: also this many workers with the job's own environment on this process's
    node, for the actors a front door starts beside its trials when the search begins (the
    Optuna door's study actor, :class:`pipeline.compat._optuna_actor._StudyHolder`), which
    a trial's first call waits for. Needs an initialized Ray whose job set ``WARM``
    (:func:`cluster.connect.EarlyStart` with ``warm``). Returns 0, having started nothing,
    when Ray refuses or lacks the call.
    """
    asked = 0
    try:
        asked += _prestart(trials, cpu_per_trial, keep_cwd, keep_alive_s)
    except Exception:  # noqa: BLE001 - an optimisation: the trials start anyway
        log.debug("prestarting trial workers failed", exc_info=True)
    if helpers:
        try:
            asked += _prestart_helpers(helpers, keep_alive_s)
        except Exception:  # noqa: BLE001 - the same
            log.debug("prestarting helper workers failed", exc_info=True)
    return asked


def _prestart(trials: int, cpu_per_trial: float, keep_cwd: bool, keep_alive_s: int) -> int:
    import ray
    from ray.core.generated.runtime_environment_pb2 import RuntimeEnvInfo  # type: ignore[attr-defined]
    from ray.runtime_env import RuntimeEnvConfig

    runtime_env = dict(ray.get_runtime_context().runtime_env)
    runtime_env["env_vars"] = {**runtime_env.get("env_vars", {}), **trial_env(keep_cwd)}
    # as the core worker serializes an actor's merged environment (sorted, compact)
    info = RuntimeEnvInfo(serialized_runtime_env=json.dumps(runtime_env, sort_keys=True,
                                                            separators=(",", ":")))
    info.runtime_env_config.CopyFrom(RuntimeEnvConfig.default_config().build_proto_runtime_env_config())
    asked = 0
    for node in ray.nodes():
        n = per_node(node["Resources"].get("CPU", 0), cpu_per_trial, trials) if node["Alive"] else 0
        if n:
            asked += _ask(node, info, keep_alive_s, n)
    return asked


def _prestart_helpers(helpers: int, keep_alive_s: int) -> int:
    """``helpers`` workers on this process's node with the job's environment: an actor given
    no environment of its own gets the job's, exactly as the job serialized it."""
    import ray
    from ray.core.generated.runtime_environment_pb2 import RuntimeEnvInfo  # type: ignore[attr-defined]

    job = ray._private.worker.global_worker.core_worker.get_job_config()  # type: ignore[attr-defined]
    info = RuntimeEnvInfo.FromString(job.runtime_env_info.SerializeToString())
    here = ray.get_runtime_context().get_node_id()
    node = next(n for n in ray.nodes() if n["Alive"] and n["NodeID"] == here)
    return _ask(node, info, keep_alive_s, min(helpers, _MAX_PER_NODE))


def _ask(node: dict, info: Any, keep_alive_s: int, n: int) -> int:
    """Ask ``node``'s raylet to start ``n`` workers for this job with that environment."""
    import ray
    from ray._private.grpc_utils import init_grpc_channel
    from ray.core.generated import common_pb2, node_manager_pb2, node_manager_pb2_grpc

    channel = init_grpc_channel(f"{node['NodeManagerAddress']}:{node['NodeManagerPort']}")
    try:
        node_manager_pb2_grpc.NodeManagerServiceStub(channel).PrestartWorkers(
            node_manager_pb2.PrestartWorkersRequest(  # type: ignore[attr-defined]
                language=common_pb2.PYTHON,  # type: ignore[attr-defined]
                job_id=bytes.fromhex(ray.get_runtime_context().get_job_id()),
                runtime_env_info=info, keep_alive_duration_secs=keep_alive_s, num_workers=n),
            timeout=10)
    finally:
        channel.close()
    return n
