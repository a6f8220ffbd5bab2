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
subprocesses); it never imports the pipeline.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cluster._permissions import _boot_folder, _close_up, _private_dir, _temp_root, world_writable
from cluster._procs import _reap, _session_members, _signal, _signal_session, _start_time

__all__ = ["LocalCluster", "start", "stop", "kill_worker", "add_worker", "nodes", "load",
           "running_at", "world_writable"]

STATE_FILE = "cluster.json"
TOKEN_FILE = "token"
DEFAULT_STATE_DIR = Path(".ray-local-cluster")

# Environment variables that would make a node or client pick up another
# cluster's address or token; they are removed before ours are set.
_SCRUBBED_ENV = ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH",
                 "RAY_DASHBOARD_ADDRESS")


@dataclass
class LocalCluster:
    """Handle on a running local cluster (what ``cluster.json`` holds).

    Attributes:
        address: GCS address, ``"127.0.0.1:PORT"`` (use as ``RAY_ADDRESS``).
        dashboard_url: ``"http://127.0.0.1:PORT"``; needs the token
            (``Authorization: Bearer <token>``) like every other entry point.
        token_path: file holding the cluster's auth token (mode 0600).
        state_dir: directory with ``cluster.json``, the token and node logs.
        pids: pid of every ``ray start --block`` process started, head first,
            then worker 0..N-1.  Each is a session leader; Ray's own processes
            (GCS, raylet, dashboard, workers) live in that pid's session.
        start_times: ``/proc`` start time (clock ticks) of each pid, to notice
            pid reuse; empty where unknown.
        temp_dir: root of the per-node Ray ``--temp-dir`` directories
            (``h`` for the head, ``w0``, ``w1`` ...), where Ray writes its session logs.
        workers: number of worker nodes.
        cpus_per_worker: CPUs advertised by each worker node.
    """

    address: str
    dashboard_url: str
    token_path: Path
    state_dir: Path
    pids: list[int]
    start_times: list[int] = field(default_factory=list)
    temp_dir: Path | None = None
    workers: int = 0
    cpus_per_worker: int = 0

    @property
    def worker_pids(self) -> list[int]:
        """Pids of the worker nodes' ``ray start`` processes, by index."""
        return self.pids[1:]

    def token(self) -> str:
        """Return the auth token (read from :attr:`token_path`)."""
        return Path(self.token_path).read_text().strip()

    def env(self) -> dict[str, str]:
        """Environment variables a client (driver, ``ray`` CLI) needs.

        ``RAY_ADDRESS`` points at the GCS, ``RAY_AUTH_MODE=token`` turns token
        auth on in the client, ``RAY_AUTH_TOKEN_PATH`` says where the token is.
        Merge it into a copy of ``os.environ`` *after* removing
        ``RAY_AUTH_TOKEN`` (which takes precedence over the path).
        """
        return {
            "RAY_ADDRESS": self.address,
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN_PATH": str(Path(self.token_path).resolve()),
            # the Jobs API (`submit`, `jobs`); Ray itself does not read it
            "RAY_DASHBOARD_ADDRESS": self.dashboard_url,
        }

    def to_json(self) -> str:
        """Serialize to JSON (paths as strings)."""
        data = asdict(self)
        for key in ("token_path", "state_dir", "temp_dir"):
            if data[key] is not None:
                data[key] = str(data[key])
        return json.dumps(data, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "LocalCluster":
        """Inverse of :meth:`to_json`; unknown keys are ignored."""
        data = json.loads(text)
        known = set(cls.__dataclass_fields__)
        data = {k: v for k, v in data.items() if k in known}
        for key in ("token_path", "state_dir", "temp_dir"):
            if data.get(key) is not None:
                data[key] = Path(data[key])
        data["pids"] = [int(p) for p in data.get("pids", [])]
        data["start_times"] = [int(t) for t in data.get("start_times", [])]
        return cls(**data)


# --------------------------------------------------------------------------
# helpers


def _free_ports(n: int) -> list[int]:
    """Return ``n`` distinct currently-free TCP ports (OS-assigned)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _ray_executable() -> str:
    candidate = Path(sys.executable).with_name("ray")
    if candidate.exists():
        return str(candidate)
    found = shutil.which("ray")
    if not found:
        raise RuntimeError("cannot find the `ray` CLI next to %s or on PATH" % sys.executable)
    return found


def _base_env(token_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV}
    env.update(
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN_PATH=str(token_path),
        # No Serve here: tear down at once on SIGTERM instead of draining 30 s.
        RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0",
        RAY_USAGE_STATS_ENABLED="0",
        PYTHONUNBUFFERED="1",
        # Job entrypoints ("python -m pipeline ...") use the Python that started the cluster.
        PATH=os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")]),
    )
    return env


# Printed by `ray start --block` once the node is fully initialised.
_READY_MARK = "will now block forever"
_TIMED_OUT = "The current node timed out during startup"  # Ray's message (node.py)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _tail(path: Path, n: int = 25) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(lines[-n:])


def _wait_port(port: int, deadline: float, procs: list[subprocess.Popen]) -> bool:
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            return False
        with contextlib.suppress(OSError):
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        time.sleep(0.2)
    return False


def nodes(cluster: LocalCluster, timeout_s: float = 10) -> list[dict[str, Any]]:
    """Return the cluster's nodes from the dashboard state API (``/api/v0/nodes``).

    Each entry has ``node_id``, ``state`` ("ALIVE"/"DEAD"), ``is_head_node``,
    ``resources_total`` ... .  Authenticates with the cluster token.  Raises
    ``OSError``/``ValueError`` when the dashboard is not (yet) reachable.
    """
    req = urllib.request.Request(
        f"{cluster.dashboard_url}/api/v0/nodes?limit=1000&detail=true",
        headers={"Authorization": f"Bearer {cluster.token()}"},
    )
    with urllib.request.urlopen(req, timeout=timeout_s) as resp:  # noqa: S310 (local URL)
        body = json.loads(resp.read().decode())
    result = body.get("data", {}).get("result", {})
    if isinstance(result, dict):
        result = result.get("result", [])
    return list(result)


def load(state_dir: Path = DEFAULT_STATE_DIR) -> LocalCluster | None:
    """Read ``<state_dir>/cluster.json``; None if there is none."""
    path = Path(state_dir) / STATE_FILE
    if not path.exists():
        return None
    return LocalCluster.from_json(path.read_text())


def running_at(dashboard_url: str) -> LocalCluster | None:
    """The running cluster `up` started whose dashboard is ``dashboard_url``, if any.

    Looks in the state folder of the token in ``RAY_AUTH_TOKEN_PATH`` (what `up`
    prints to export) and in the default state folder.
    """
    folders = [DEFAULT_STATE_DIR]
    token = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if token:
        folders.insert(0, Path(token).parent)
    want = dashboard_url.rstrip("/")
    for folder in folders:
        try:
            cluster = load(folder)
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if cluster and cluster.dashboard_url.rstrip("/") == want and _is_running(cluster):
            return cluster
    return None


def _is_running(cluster: LocalCluster) -> bool:
    times = cluster.start_times or [0] * len(cluster.pids)
    return any(_session_members(p, t) for p, t in zip(cluster.pids, times))


@contextlib.contextmanager
def _locked(state_dir: Path):
    with open(state_dir / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


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


@dataclass
class _Ports:
    """The ports a node would otherwise take from a fixed default, picked free all at once."""

    gcs: int
    dashboard: int
    client: int
    agent: int
    metrics: int
    autoscaler_metrics: int
    dashboard_metrics: int
    worker_ports: list[tuple[int, int]]  # each worker's (dashboard agent, metrics export)

    @classmethod
    def pick(cls, workers: int) -> "_Ports":
        # All at once so they are distinct.  Head: GCS, dashboard, Ray client,
        # dashboard agent, 3 Prometheus ports; each worker: agent, metrics.
        ports = _free_ports(7 + 2 * workers)
        rest = ports[7:]
        gcs, dashboard, client, agent, metrics, autoscaler, dashboard_metrics = ports[:7]
        return cls(gcs, dashboard, client, agent, metrics, autoscaler, dashboard_metrics,
                   worker_ports=[(rest[2 * i], rest[2 * i + 1]) for i in range(workers)])


class _Launcher:
    """Launches the ``ray start --block`` processes of ``cluster`` and waits for them.

    Each pid (and its start time) goes into ``cluster`` as soon as it is launched, and
    the record is persisted after each step, so that ``stop()`` finds all that started.
    """

    def __init__(self, cluster: LocalCluster, owned_temp: bool, env: dict[str, str],
                 object_store_mb: int):
        self.cluster = cluster
        self.owned_temp = owned_temp
        self.env = env
        self.object_store = str(object_store_mb * 1024 * 1024)
        self.ray = _ray_executable()
        self.log_dir = Path(cluster.state_dir) / "logs"
        self.log_dir.mkdir(exist_ok=True)
        self.procs: list[subprocess.Popen] = []
        self.logs: list[Path] = []
        self.args: list[tuple[list[str], dict[str, str]]] = []  # each launch's, for a relaunch
        self.relaunched: set[str] = set()

    @property
    def temp_root(self) -> Path:
        """Root of the nodes' ``--temp-dir`` folders (the cluster's, else its state folder)."""
        return Path(self.cluster.temp_dir or self.cluster.state_dir)

    def launch(self, name: str, args: list[str], env: dict[str, str], index: int | None = None) -> None:
        """Start node ``name``; ``index``: replace the (exited) process launched at that place."""
        log = self.log_dir / f"{name}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [self.ray, "start", "--block", "--disable-usage-stats", *args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.cluster.state_dir,
                start_new_session=True,
            )
        if index is not None:
            self.procs[index], self.args[index] = proc, (args, env)
            self.cluster.pids[index], self.cluster.start_times[index] = proc.pid, _start_time(proc.pid)
            return
        self.procs.append(proc)
        self.logs.append(log)
        self.args.append((args, env))
        self.cluster.pids.append(proc.pid)
        self.cluster.start_times.append(_start_time(proc.pid))

    def relaunch_timed_out(self) -> bool:
        """Start again, once each, worker nodes whose start timed out; True if any was.

        Ray waits a fixed 30 s for a starting raylet to register; on a cold machine (a
        fresh install, nodes starting together on 2 CPUs) a worker can miss it and exit.
        """
        again = False
        for i, (proc, log) in enumerate(zip(self.procs, self.logs)):
            if (proc.poll() is not None and log.stem.startswith("worker-")
                    and log.stem not in self.relaunched and _TIMED_OUT in _read(log)):
                self.relaunched.add(log.stem)
                self.launch(log.stem, *self.args[i], index=i)
                again = True
        if again:
            self.persist()
        return again

    def persist(self) -> None:
        _persist(self.cluster, self.owned_temp)

    def fail(self, reason: str) -> RuntimeError:
        """Stop what started; the error to raise, with the tail of every node's log."""
        tails = "\n".join(f"--- {log} ---\n{_tail(log)}" for log in self.logs)
        self.persist()
        # A `ray start` still initialising may ignore SIGTERM: don't wait long.
        stop(self.cluster.state_dir, timeout_s=3)
        return RuntimeError(f"local Ray cluster failed to start: {reason}\n{tails}")

    def start_head(self, ports: _Ports, timeout_s: float) -> float:
        """Launch the head and wait for its GCS to listen; return the deadline of the start."""
        head_env = dict(
            self.env,
            AUTOSCALER_METRIC_PORT=str(ports.autoscaler_metrics),
            DASHBOARD_METRIC_PORT=str(ports.dashboard_metrics),
        )
        self.launch(
            "head",
            [
                "--head",
                f"--port={ports.gcs}",
                "--num-cpus=0",
                "--num-gpus=0",
                "--include-dashboard=true",
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={ports.dashboard}",
                f"--ray-client-server-port={ports.client}",
                f"--dashboard-agent-listen-port={ports.agent}",
                f"--metrics-export-port={ports.metrics}",
                f"--object-store-memory={self.object_store}",
                f"--temp-dir={self.temp_root / 'h'}",
            ],
            head_env,
        )
        self.persist()
        deadline = time.monotonic() + timeout_s
        if not _wait_port(ports.gcs, deadline, self.procs):
            raise self.fail(f"head GCS did not listen on {self.cluster.address} within {timeout_s:.0f}s")
        return deadline

    def start_workers(self, ports: _Ports, cpus_per_worker: int, gpus_per_worker: int) -> None:
        for i, (agent_port, metrics_port) in enumerate(ports.worker_ports):
            self.launch(
                f"worker-{i}",
                [
                    f"--address={self.cluster.address}",
                    f"--num-cpus={cpus_per_worker}",
                    f"--num-gpus={gpus_per_worker}",
                    f"--dashboard-agent-listen-port={agent_port}",
                    f"--metrics-export-port={metrics_port}",
                    f"--object-store-memory={self.object_store}",
                    f"--temp-dir={self.temp_root / f'w{i}'}",
                ],
                self.env,
            )
        self.persist()

    def wait_ready(self, deadline: float, timeout_s: float) -> None:
        """Return once every node is up; else stop them all and raise (see :meth:`fail`)."""
        expected = self.cluster.workers + 1
        last_err = "no answer from the dashboard yet"
        while time.monotonic() < deadline:
            self.relaunch_timed_out()
            dead = [f"{self.logs[i].stem} (exit {p.returncode})" for i, p in enumerate(self.procs)
                    if p.poll() is not None]
            if dead:
                raise self.fail("node process exited: " + ", ".join(dead))
            # A node is up once its `ray start` finished initialising (it
            # then prints the --block banner; SIGTERM before that point can
            # leave it hanging) and the GCS lists it as ALIVE.
            booting = [log.stem for log in self.logs if _READY_MARK not in _read(log)]
            try:
                alive = [n for n in nodes(self.cluster, timeout_s=5) if n.get("state") == "ALIVE"]
            except (OSError, ValueError) as exc:
                last_err = f"dashboard not ready: {exc}"
            else:
                last_err = f"{len(alive)}/{expected} nodes alive"
                if booting:
                    last_err += ", still initialising: " + ", ".join(booting)
                elif len(alive) >= expected:
                    return
            time.sleep(0.5)
        raise self.fail(f"timed out after {timeout_s:.0f}s ({last_err})")


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


def _persist(cluster: LocalCluster, owned_temp: bool) -> None:
    data = json.loads(cluster.to_json())
    data["owned_temp_dir"] = owned_temp
    path = Path(cluster.state_dir) / STATE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    tmp.replace(path)


def stop(state_dir: Path = DEFAULT_STATE_DIR, timeout_s: float = 30) -> int:
    """Stop the cluster recorded in ``<state_dir>/cluster.json``.

    Sends SIGTERM to each recorded ``ray start`` process (which shuts down the
    Ray processes of its node), waits up to ``timeout_s`` for every process in
    those sessions to exit, then SIGKILLs what is left.  Only processes in the
    recorded sessions are touched.  Removes ``cluster.json`` (the token and
    logs stay).

    Returns:
        How many recorded nodes still had live processes and were stopped;
        0 (a no-op) when nothing is recorded or everything had already exited.
    """
    state_dir = Path(state_dir).resolve()
    path = state_dir / STATE_FILE
    if not path.exists():
        return 0
    raw = json.loads(path.read_text())
    cluster = LocalCluster.from_json(path.read_text())
    times = cluster.start_times + [0] * (len(cluster.pids) - len(cluster.start_times))
    pairs = list(zip(cluster.pids, times))

    stopped = 0
    for leader, start_time in pairs:
        members = _session_members(leader, start_time)
        if not members:
            continue
        stopped += 1
        if leader in members:
            _signal([leader], signal.SIGTERM)  # ray start tears its node down
        else:  # leader gone (crashed/killed): signal the orphans directly
            _signal(members, signal.SIGTERM)

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not any(_session_members(p, t) for p, t in pairs):
            break
        time.sleep(0.2)
    else:
        for leader, start_time in pairs:
            _signal_session(leader, start_time, signal.SIGKILL)
        kill_deadline = time.monotonic() + 10
        while time.monotonic() < kill_deadline and any(
            _session_members(p, t) for p, t in pairs
        ):
            time.sleep(0.1)
    for leader, _ in pairs:
        _reap(leader)

    path.unlink(missing_ok=True)
    if raw.get("owned_temp_dir") and cluster.temp_dir is not None:
        shutil.rmtree(cluster.temp_dir, ignore_errors=True)
    return stopped


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
