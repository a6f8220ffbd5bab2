"""A real multi-node Ray cluster on one machine, for rehearsals and tests.

``start()`` launches one head node and ``workers`` worker nodes as separate
``ray start --block`` processes, each in its own session (process group), with
its own ``--temp-dir`` so nothing is shared with other Ray instances on the
machine (the default ``/tmp/ray``, a ``ray.init()`` in the same process, a
colleague's cluster).  The layout mirrors the Kubernetes deployment:

* the head has ``--num-cpus 0`` so trials only run on workers;
* token authentication is on (``RAY_AUTH_MODE=token``): ``start()`` generates a
  random token, writes it to ``<state_dir>/token`` (mode 0600) and gives every
  node ``RAY_AUTH_TOKEN_PATH`` pointing at it.  Clients need the same variables,
  see :meth:`LocalCluster.env`;
* the dashboard listens on 127.0.0.1 only.

Every port a node would otherwise take from a fixed default (GCS 6379,
dashboard 8265, Ray client 10001, dashboard agent 52365, the 44217/44227
Prometheus ports) is chosen free at start time, so the cluster coexists with a
``ray.init()`` local instance.

``stop()`` terminates exactly the sessions recorded in
``<state_dir>/cluster.json`` (SIGTERM, then SIGKILL after a timeout) -- never
``ray stop``, which would kill every Ray process of the user on the machine.

Linux only for the process bookkeeping (it reads ``/proc``); elsewhere it falls
back to signalling the recorded process groups.

Uses the standard library and ``ray`` (only its ``ray`` CLI, run in
subprocesses); it never imports the pipeline. The record and :func:`stop` are in
:mod:`cluster._local_record`, the node launching in :mod:`cluster._local_launch`.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import time
from pathlib import Path

from cluster._local_launch import _READY_MARK, _base_env, _free_ports, _Launcher, _Ports, _read, _tail
from cluster._local_record import (  # noqa: F401  (re-exported: the public API and the CLI's)
    DEFAULT_STATE_DIR,
    STATE_FILE,
    TOKEN_FILE,
    LocalCluster,
    _is_running,
    _locked,
    _persist,
    load,
    nodes,
    running_at,
    stop,
)
from cluster._permissions import _boot_folder, _close_up, _private_dir, _temp_root, world_writable
from cluster._procs import _reap, _session_members, _signal_session

__all__ = ["LocalCluster", "start", "stop", "kill_worker", "add_worker", "nodes", "load",
           "running_at", "world_writable"]


# --------------------------------------------------------------------------
# the steps of start()


def _clear_stale_record(state_dir: Path) -> None:
    """Refuse if the cluster recorded in ``state_dir`` still runs; else clear its record."""
    previous = load(state_dir)
    if previous is None:
        return
    if _is_running(previous):
        raise RuntimeError(
            f"a local Ray cluster is already running from {state_dir} "
            f"(address {previous.address}, pids {previous.pids}); "
            "stop it first"
        )
    stop(state_dir)  # stale record: clear it (and any leftovers)


def _write_token(state_dir: Path) -> Path:
    """Write a new random auth token to ``<state_dir>/token`` (mode 0600); return its path."""
    token_path = state_dir / TOKEN_FILE
    fd = os.open(token_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_hex(32))
    os.chmod(token_path, 0o600)
    return token_path


def _node_env(state_dir: Path, token_path: Path) -> dict[str, str]:
    """Every node's environment: :func:`_base_env`, the boot folder first on PYTHONPATH."""
    env = _base_env(token_path)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(_boot_folder(state_dir)), env.get("PYTHONPATH")) if p)
    return env


# --------------------------------------------------------------------------
# public API


def start(
    workers: int = 2,
    cpus_per_worker: int = 1,
    state_dir: Path = DEFAULT_STATE_DIR,
    object_store_mb: int = 200,
    timeout_s: float = 60,
    gpus_per_worker: int = 0,
) -> LocalCluster:
    """Start a head (0 CPUs) and ``workers`` worker nodes on this machine.

    Args:
        workers: number of worker nodes (>= 1).
        cpus_per_worker: ``--num-cpus`` of each worker node.
        state_dir: where ``cluster.json``, the token and logs go.
        object_store_mb: object store size of each node, in MiB (Ray needs >= 75).
        timeout_s: how long to wait for every node to be ALIVE.
        gpus_per_worker: ``--num-gpus`` of each worker (0 by default: every
            node on one machine would otherwise claim all its GPUs).

    Returns:
        The running cluster, also written to ``<state_dir>/cluster.json``.

    Raises:
        RuntimeError: a cluster recorded in ``state_dir`` is still running, or
            the nodes did not all come up within ``timeout_s`` (everything
            started is stopped again first; the message has the log tails).
    """
    if workers < 1:
        raise ValueError("workers must be >= 1")
    if object_store_mb < 75:
        raise ValueError("object_store_mb must be >= 75 (Ray's minimum)")
    state_dir = _private_dir(Path(state_dir).resolve())

    with _locked(state_dir):
        _clear_stale_record(state_dir)
        token_path = _write_token(state_dir)
        temp_root, owned_temp = _temp_root(state_dir)
        env = _node_env(state_dir, token_path)
        ports = _Ports.pick(workers)
        cluster = LocalCluster(
            address=f"127.0.0.1:{ports.gcs}",
            dashboard_url=f"http://127.0.0.1:{ports.dashboard}",
            token_path=token_path,
            state_dir=state_dir,
            pids=[],
            start_times=[],
            temp_dir=temp_root,
            workers=workers,
            cpus_per_worker=cpus_per_worker,
        )
        launcher = _Launcher(cluster, owned_temp, env, object_store_mb)
        try:
            deadline = launcher.start_head(ports, timeout_s)
            launcher.start_workers(ports, cpus_per_worker, gpus_per_worker)
            launcher.wait_ready(deadline, timeout_s)
            _close_up(state_dir, temp_root)
        except BaseException:
            if cluster.pids and _is_running(cluster):
                _persist(cluster, owned_temp)
                stop(state_dir, timeout_s=10)
            raise
        return cluster


def kill_worker(cluster: LocalCluster, index: int) -> list[int]:
    """SIGKILL every process of worker node ``index`` (fault injection).

    The node's raylet, its Ray workers and its ``ray start`` process die at
    once, as if the machine had vanished; the GCS marks the node DEAD after
    its health-check timeout.  The pid stays recorded; ``stop()`` copes.

    Returns:
        The pids that were sent SIGKILL.
    """
    if not 0 <= index < len(cluster.worker_pids):
        raise IndexError(f"worker index {index} out of range 0..{len(cluster.worker_pids) - 1}")
    leader = cluster.worker_pids[index]
    times = cluster.start_times[1:] if cluster.start_times else []
    start_time = times[index] if index < len(times) else 0
    killed = _signal_session(leader, start_time, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _session_members(leader, start_time):
        time.sleep(0.1)
    _reap(leader)
    return killed


def add_worker(cluster: LocalCluster, timeout_s: float = 60, object_store_mb: int = 200,
               gpus: int = 0) -> int:
    """Start one more worker node (e.g. in place of one :func:`kill_worker` took).

    It advertises ``cluster.cpus_per_worker`` CPUs and ``gpus`` GPUs, has ports of its own
    and the temp folder ``w<index>``; its pid is appended to ``cluster.pids`` and the
    record in ``cluster.json`` updated, so :func:`stop` stops it too.

    Returns:
        The new node's worker index (for :func:`kill_worker`).

    Raises:
        RuntimeError: it did not finish starting within ``timeout_s`` (it is killed
            again first; the message has its log's tail).
    """
    state_dir = Path(cluster.state_dir)
    with _locked(state_dir):
        record = json.loads((state_dir / STATE_FILE).read_text())
        index = len(cluster.worker_pids)
        env = _node_env(state_dir, Path(cluster.token_path))
        launcher = _Launcher(cluster, bool(record.get("owned_temp_dir")), env, object_store_mb)
        agent_port, metrics_port = _free_ports(2)
        launcher.launch(f"worker-{index}", [
            f"--address={cluster.address}",
            f"--num-cpus={cluster.cpus_per_worker}",
            f"--num-gpus={gpus}",
            f"--dashboard-agent-listen-port={agent_port}",
            f"--metrics-export-port={metrics_port}",
            f"--object-store-memory={launcher.object_store}",
            f"--temp-dir={Path(cluster.temp_dir or state_dir) / f'w{index}'}",
        ], env)
        cluster.workers += 1
        launcher.persist()
    proc, log = launcher.procs[0], launcher.logs[0]
    deadline = time.monotonic() + timeout_s
    while _READY_MARK not in _read(log):
        if proc.poll() is not None or time.monotonic() > deadline:
            why = f"exit {proc.returncode}" if proc.poll() is not None else f"{timeout_s:.0f}s"
            kill_worker(cluster, index)
            raise RuntimeError(f"worker-{index} failed to start ({why}):\n{_tail(log)}")
        time.sleep(0.2)
    if cluster.temp_dir is not None:
        _close_up(cluster.temp_dir / f"w{index}")
    return index
