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
import stat
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["LocalCluster", "start", "stop", "kill_worker", "nodes", "load", "running_at",
           "world_writable"]

STATE_FILE = "cluster.json"
TOKEN_FILE = "token"
DEFAULT_STATE_DIR = Path(".ray-local-cluster")

# AF_UNIX socket paths are limited to 107 bytes on Linux.  Ray puts its sockets
# at <temp-dir>/session_<date>_<time>_<usec>_<pid>/sockets/dash_MetricsHead:
# 68 bytes below the node directory, whose name ("/w12") takes 4 more.
_MAX_TEMP_ROOT_LEN = 34

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
# process bookkeeping (/proc)


def _proc_stat(pid: int) -> tuple[str, int, int, int] | None:
    """Return (state, ppid, session, starttime) of ``pid`` or None if gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    # comm may contain spaces/parentheses: split after the last ')'.
    fields = raw[raw.rfind(b")") + 2 :].split()
    try:
        return fields[0].decode(), int(fields[1]), int(fields[3]), int(fields[19])
    except (IndexError, ValueError):
        return None


def _start_time(pid: int) -> int:
    stat = _proc_stat(pid)
    return stat[3] if stat else 0


def _reap(pid: int) -> None:
    """Collect ``pid`` if it is an exited child of this process."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie (reaping our own children)."""
    _reap(pid)
    if Path("/proc").is_dir():
        stat = _proc_stat(pid)
        return stat is not None and stat[0] not in ("Z", "X")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _session_members(leader: int, start_time: int = 0) -> list[int]:
    """Live pids in the session led by ``leader`` (the leader included).

    Returns [] if ``leader`` now names a different process (pid reuse): Linux
    does not reuse a pid while a session still carries its id, so members
    found with a recorded leader either belong to our session, or the leader
    pid was reused and the start time differs.
    """
    if not Path("/proc").is_dir():
        return [leader] if _alive(leader) else []
    stat = _proc_stat(leader)
    if stat is not None and start_time and stat[3] != start_time:
        return []
    members = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        pid = int(name)
        st = _proc_stat(pid)
        if st is not None and st[2] == leader and st[0] not in ("Z", "X"):
            members.append(pid)
    return members


def _signal(pids: list[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _signal_session(leader: int, start_time: int, sig: int) -> list[int]:
    if not Path("/proc").is_dir():  # pragma: no cover - non-Linux fallback
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(leader, sig)
        return [leader]
    members = _session_members(leader, start_time)
    _signal(members, sig)
    return members


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


def _private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) if needed and make it mode 0700, owned by us.

    Another local user must not be able to list, rename or plant anything in a
    cluster's state folder or Ray temp root (Ray would run a planted package).
    """
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.lstat()
    if not stat.S_ISDIR(st.st_mode):
        raise RuntimeError(f"--state-dir: {path} is not a folder (a link?); refusing to use it")
    if st.st_uid != os.getuid():
        raise RuntimeError(f"--state-dir: {path} belongs to uid {st.st_uid}, not you; "
                           "use a folder of your own")
    os.chmod(path, 0o700)
    return path


def _temp_root(state_dir: Path) -> tuple[Path, bool]:
    """Pick the Ray temp root: under state_dir if short enough, else /tmp (mode 0700 both).

    Returns (path, owned) where ``owned`` means stop() should delete it.
    """
    candidate = state_dir / "ray"
    if len(str(candidate)) <= _MAX_TEMP_ROOT_LEN:
        return _private_dir(candidate), False
    return Path(tempfile.mkdtemp(prefix="rlc-", dir="/tmp")), True  # mkdtemp: 0700


# Ray makes every folder it creates or touches mode 0777 "so other users can share it"
# (ray._common.utils.try_make_directory_shared), in every one of its Python processes:
# node folders, sessions, sockets, runtime_resources (where shipped code is unpacked and
# run from). The nodes of a local cluster get this sitecustomize first on their
# PYTHONPATH: it makes that function set mode 0700 instead, once Ray imports it (Ray is
# not imported any earlier), and then runs the sitecustomize it shadows, if any.
_SITECUSTOMIZE = """\
# Written by `python -m pipeline cluster up` (cluster/local.py); do not edit.
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys


def _private(path):
    try:
        os.chmod(path, 0o700)
    except OSError:
        pass


class _KeepRayFoldersPrivate(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "ray._common.utils":
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            module.try_make_directory_shared = _private

        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, _KeepRayFoldersPrivate())
_here = os.path.dirname(os.path.abspath(__file__))
for _folder in sys.path:
    _other = os.path.join(_folder or ".", "sitecustomize.py")
    if os.path.abspath(_folder or ".") != _here and os.path.isfile(_other):
        _spec = importlib.util.spec_from_file_location("_shadowed_sitecustomize", _other)
        _spec.loader.exec_module(importlib.util.module_from_spec(_spec))
        break
"""


def _boot_folder(state_dir: Path) -> Path:
    """``<state_dir>/boot`` with the nodes' sitecustomize (see _SITECUSTOMIZE)."""
    boot = _private_dir(state_dir / "boot")
    target = boot / "sitecustomize.py"
    tmp = boot / ".sitecustomize.py.part"
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(_SITECUSTOMIZE)
    os.replace(tmp, target)
    return boot


def _close_up(*roots: Path) -> None:
    """Take group and other write permission off everything under ``roots``."""
    for root in roots:
        for folder, _, files in os.walk(root):
            for p in [Path(folder), *(Path(folder) / n for n in files)]:
                with contextlib.suppress(OSError):
                    st = p.lstat()
                    if not stat.S_ISLNK(st.st_mode) and st.st_mode & (stat.S_IWOTH | stat.S_IWGRP):
                        os.chmod(p, stat.S_IMODE(st.st_mode) & ~(stat.S_IWOTH | stat.S_IWGRP))


def world_writable(*roots: Path) -> list[Path]:
    """Folders and files under ``roots`` (themselves included) that any user may write."""
    found = []
    for root in roots:
        for folder, dirs, files in os.walk(root):
            for p in [Path(folder), *(Path(folder) / n for n in files)]:
                with contextlib.suppress(OSError):
                    st = p.lstat()
                    if not stat.S_ISLNK(st.st_mode) and st.st_mode & stat.S_IWOTH:
                        found.append(p)
    return found


# Printed by `ray start --block` once the node is fully initialised.
_READY_MARK = "will now block forever"


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
        previous = load(state_dir)
        if previous is not None:
            if _is_running(previous):
                raise RuntimeError(
                    f"a local Ray cluster is already running from {state_dir} "
                    f"(address {previous.address}, pids {previous.pids}); "
                    "stop it first"
                )
            stop(state_dir)  # stale record: clear it (and any leftovers)

        token_path = state_dir / TOKEN_FILE
        fd = os.open(token_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32))
        os.chmod(token_path, 0o600)

        temp_root, owned_temp = _temp_root(state_dir)
        log_dir = state_dir / "logs"
        log_dir.mkdir(exist_ok=True)
        ray = _ray_executable()
        base_env = _base_env(token_path)
        base_env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(_boot_folder(state_dir)), base_env.get("PYTHONPATH")) if p)
        object_store = str(object_store_mb * 1024 * 1024)

        # All at once so they are distinct.  Head: GCS, dashboard, Ray client,
        # dashboard agent, 3 Prometheus ports; each worker: agent, metrics.
        ports = _free_ports(7 + 2 * workers)
        (gcs_port, dash_port, client_port, agent_port, metrics_port,
         autoscaler_metrics_port, dash_metrics_port) = ports[:7]
        worker_ports = ports[7:]
        address = f"127.0.0.1:{gcs_port}"
        cluster = LocalCluster(
            address=address,
            dashboard_url=f"http://127.0.0.1:{dash_port}",
            token_path=token_path,
            state_dir=state_dir,
            pids=[],
            start_times=[],
            temp_dir=temp_root,
            workers=workers,
            cpus_per_worker=cpus_per_worker,
        )
        procs: list[subprocess.Popen] = []
        logs: list[Path] = []

        def launch(name: str, args: list[str], env: dict[str, str]) -> None:
            log = log_dir / f"{name}.log"
            with open(log, "wb") as out:
                proc = subprocess.Popen(
                    [ray, "start", "--block", "--disable-usage-stats", *args],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=state_dir,
                    start_new_session=True,
                )
            procs.append(proc)
            logs.append(log)
            cluster.pids.append(proc.pid)
            cluster.start_times.append(_start_time(proc.pid))

        def fail(reason: str) -> RuntimeError:
            tails = "\n".join(f"--- {log} ---\n{_tail(log)}" for log in logs)
            _persist(cluster, owned_temp)
            # A `ray start` still initialising may ignore SIGTERM: don't wait long.
            stop(state_dir, timeout_s=3)
            return RuntimeError(f"local Ray cluster failed to start: {reason}\n{tails}")

        try:
            head_env = dict(
                base_env,
                AUTOSCALER_METRIC_PORT=str(autoscaler_metrics_port),
                DASHBOARD_METRIC_PORT=str(dash_metrics_port),
            )
            launch(
                "head",
                [
                    "--head",
                    f"--port={gcs_port}",
                    "--num-cpus=0",
                    "--num-gpus=0",
                    "--include-dashboard=true",
                    "--dashboard-host=127.0.0.1",
                    f"--dashboard-port={dash_port}",
                    f"--ray-client-server-port={client_port}",
                    f"--dashboard-agent-listen-port={agent_port}",
                    f"--metrics-export-port={metrics_port}",
                    f"--object-store-memory={object_store}",
                    f"--temp-dir={temp_root / 'h'}",
                ],
                head_env,
            )
            _persist(cluster, owned_temp)
            deadline = time.monotonic() + timeout_s
            if not _wait_port(gcs_port, deadline, procs):
                raise fail(f"head GCS did not listen on {address} within {timeout_s:.0f}s")

            for i in range(workers):
                w_agent_port, w_metrics_port = worker_ports[2 * i : 2 * i + 2]
                launch(
                    f"worker-{i}",
                    [
                        f"--address={address}",
                        f"--num-cpus={cpus_per_worker}",
                        f"--num-gpus={gpus_per_worker}",
                        f"--dashboard-agent-listen-port={w_agent_port}",
                        f"--metrics-export-port={w_metrics_port}",
                        f"--object-store-memory={object_store}",
                        f"--temp-dir={temp_root / f'w{i}'}",
                    ],
                    base_env,
                )
            _persist(cluster, owned_temp)

            last_err = "no answer from the dashboard yet"
            while time.monotonic() < deadline:
                dead = [f"{logs[i].stem} (exit {p.returncode})" for i, p in enumerate(procs)
                        if p.poll() is not None]
                if dead:
                    raise fail("node process exited: " + ", ".join(dead))
                # A node is up once its `ray start` finished initialising (it
                # then prints the --block banner; SIGTERM before that point can
                # leave it hanging) and the GCS lists it as ALIVE.
                booting = [log.stem for log in logs if _READY_MARK not in _read(log)]
                try:
                    alive = [n for n in nodes(cluster, timeout_s=5) if n.get("state") == "ALIVE"]
                except (OSError, ValueError) as exc:
                    last_err = f"dashboard not ready: {exc}"
                else:
                    last_err = f"{len(alive)}/{workers + 1} nodes alive"
                    if booting:
                        last_err += ", still initialising: " + ", ".join(booting)
                    elif len(alive) >= workers + 1:
                        _close_up(state_dir, temp_root)
                        return cluster
                time.sleep(0.5)
            raise fail(f"timed out after {timeout_s:.0f}s ({last_err})")
        except BaseException:
            if cluster.pids and _is_running(cluster):
                _persist(cluster, owned_temp)
                stop(state_dir, timeout_s=10)
            raise


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
