"""What is recorded about a local cluster (``<state_dir>/cluster.json``), and how it ends.

:class:`LocalCluster` is the record :func:`cluster.local.start` writes as each node
launches; :func:`load` and :func:`running_at` find it again, :func:`nodes` asks the running
cluster for its nodes, and :func:`stop` ends exactly the recorded sessions.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cluster._procs import _reap, _session_members, _signal, _signal_session

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
