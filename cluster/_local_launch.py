"""How :func:`cluster.local.start` launches nodes: free ports, each node's ``ray start
--block`` process and its log, and the wait until every node is up (:class:`_Launcher`)."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from cluster._local_record import _SCRUBBED_ENV, LocalCluster, _persist, nodes, stop
from cluster._procs import _start_time


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
