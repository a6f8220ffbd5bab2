"""Tests for cluster.local: a real 3-node Ray cluster (head + 2 x 1-CPU workers).

One cluster is started for the module and stopped at the end.  Everything
that connects to it as a driver runs in a subprocess, so the tests do not
clash with a ``ray.init()`` other tests may hold in this pytest process.
Takes ~40 s on 2 CPUs (start ~9 s, refused drivers ~20 s, run in parallel).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from urllib.error import HTTPError
from urllib.parse import urlparse
from urllib.request import Request, urlopen

import pytest

pytest.importorskip("ray")

# multi-node clusters, killed processes, storage outages: `make test-slow` (CI runs it too)
pytestmark = pytest.mark.slow

from cluster import _procs, local  # noqa: E402

if not sys.platform.startswith("linux"):
    pytest.skip("cluster.local process bookkeeping needs /proc", allow_module_level=True)

DRIVER_TIMEOUT_S = 60

GOOD_DRIVER = textwrap.dedent(
    """
    import json, time
    import ray

    ray.init(log_to_driver=False)  # address and token from the environment

    @ray.remote(num_cpus=1, scheduling_strategy="SPREAD")
    def where():
        time.sleep(0.5)
        return ray.get_runtime_context().get_node_id()

    ids = ray.get([where.remote() for _ in range(6)])
    print("RESULT " + json.dumps({"task_nodes": ids, "nodes": ray.nodes()}), flush=True)
    ray.shutdown()
    """
)

BAD_DRIVER = textwrap.dedent(
    """
    import ray

    ray.init(log_to_driver=False)
    print("CONNECTED", ray.cluster_resources(), flush=True)
    """
)


def _clean_env() -> dict[str, str]:
    """os.environ without anything pointing at some Ray cluster or token."""
    return {
        k: v
        for k, v in os.environ.items()
        if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")
    }


def _driver(script: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", script],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _finish(proc: subprocess.Popen, timeout: float = DRIVER_TIMEOUT_S) -> tuple[int, str]:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        pytest.fail(f"driver did not finish within {timeout}s:\n{out[-3000:]}")
    return proc.returncode, out


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    state_dir = tmp_path_factory.mktemp("local-cluster")
    c = local.start(workers=2, cpus_per_worker=1, state_dir=state_dir, timeout_s=60)
    try:
        yield c
    finally:
        local.stop(state_dir, timeout_s=20)


def test_json_roundtrip_and_env(cluster):
    assert local.LocalCluster.from_json(cluster.to_json()) == cluster
    assert local.load(cluster.state_dir) == cluster
    env = cluster.env()
    assert env["RAY_ADDRESS"] == cluster.address
    assert cluster.address.startswith("127.0.0.1:")
    assert env["RAY_AUTH_MODE"] == "token"
    assert Path(env["RAY_AUTH_TOKEN_PATH"]) == Path(cluster.token_path).resolve()
    assert Path(cluster.token_path).stat().st_mode & 0o777 == 0o600
    assert len(cluster.token()) == 64
    assert len(cluster.pids) == 3


def test_long_state_path_temp_root_in_tmp_is_private_too(cluster):
    """The state folder is too long for Ray's sockets here: the temp root is in /tmp, 0700."""
    import stat

    assert str(cluster.temp_dir).startswith("/tmp/rlc-")
    for folder in (cluster.state_dir, cluster.temp_dir):
        assert stat.S_IMODE(Path(folder).stat().st_mode) == 0o700
    assert local.world_writable(cluster.state_dir, cluster.temp_dir) == []


def test_nodes_alive_head_has_no_cpus(cluster):
    nodes = [n for n in local.nodes(cluster) if n["state"] == "ALIVE"]
    assert len(nodes) == 3
    heads = [n for n in nodes if n["is_head_node"]]
    assert len(heads) == 1
    assert heads[0]["resources_total"].get("CPU", 0) == 0
    assert sum(n["resources_total"].get("CPU", 0) for n in nodes) == 2


def test_refuses_second_start_in_same_state_dir(cluster):
    with pytest.raises(RuntimeError, match="already running"):
        local.start(workers=1, state_dir=cluster.state_dir, timeout_s=5)
    assert local.load(cluster.state_dir) == cluster


def test_driver_with_token_runs_spread_tasks_on_both_workers(cluster):
    code, out = _finish(_driver(GOOD_DRIVER, {**_clean_env(), **cluster.env()}))
    assert code == 0, out[-3000:]
    line = next(ln for ln in out.splitlines() if ln.startswith("RESULT "))
    result = json.loads(line[len("RESULT "):])
    alive = [n for n in result["nodes"] if n["Alive"]]
    assert len(alive) == 3
    workers = {n["NodeID"] for n in alive if n["Resources"].get("CPU", 0) > 0}
    assert len(workers) == 2
    assert set(result["task_nodes"]) == workers


def test_driver_without_or_with_wrong_token_is_refused(cluster):
    no_token = {**_clean_env(), "RAY_ADDRESS": cluster.address}
    wrong_token = {**no_token, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0" * 64}
    # Run both at once: each takes ~20 s (Ray's GCS connect retries).
    started = time.monotonic()
    procs = {
        "no token": _driver(BAD_DRIVER, no_token),
        "wrong token": _driver(BAD_DRIVER, wrong_token),
    }
    for name, proc in procs.items():
        code, out = _finish(proc)
        assert code != 0, f"{name}: driver connected:\n{out[-3000:]}"
        assert "CONNECTED" not in out
        assert "Failed to connect to Ray cluster" in out, f"{name}:\n{out[-3000:]}"
        assert "Unauthenticated" in out or "InvalidAuthToken" in out, f"{name}:\n{out[-3000:]}"
    assert time.monotonic() - started < DRIVER_TIMEOUT_S


def _listen_addresses(port: int) -> set[str]:
    """Local addresses with a TCP socket LISTENing on ``port`` (from /proc/net)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            addr_hex, port_hex = fields[1].split(":")
            if fields[3] != "0A" or int(port_hex, 16) != port:  # 0A = LISTEN
                continue
            raw = bytes.fromhex(addr_hex)
            # /proc/net stores addresses as host-order 32-bit words.
            words = [raw[i : i + 4][::-1] for i in range(0, len(raw), 4)]
            packed = b"".join(words)
            family = socket.AF_INET if len(packed) == 4 else socket.AF_INET6
            found.add(socket.inet_ntop(family, packed))
    return found


def _primary_ip() -> str | None:
    """This machine's non-loopback IPv4 address, if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # TEST-NET, nothing is sent
            ip = s.getsockname()[0]
        except OSError:
            return None
    return None if ip.startswith("127.") else ip


def test_dashboard_is_loopback_only_and_needs_token(cluster):
    url = urlparse(cluster.dashboard_url)
    assert url.hostname == "127.0.0.1"
    addresses = _listen_addresses(url.port)
    assert addresses == {"127.0.0.1"}, addresses

    ip = _primary_ip()
    if ip is not None:
        with pytest.raises(OSError):
            socket.create_connection((ip, url.port), timeout=3).close()

    api = f"{cluster.dashboard_url}/api/v0/nodes"
    for headers, status in (({}, 401), ({"Authorization": "Bearer " + "0" * 64}, 403)):
        with pytest.raises(HTTPError) as err:
            urlopen(Request(api, headers=headers), timeout=10)
        assert err.value.code == status


def _pipeline(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 300):
    root = Path(__file__).resolve().parents[1]
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=cwd, env={
        **env, "PYTHONPATH": str(root)}, capture_output=True, text=True, timeout=timeout)


def test_submitted_job_runs_trials_on_both_workers_with_results_on_s3(cluster, tmp_path, s3_server):
    """End to end: the RayJob's entrypoint through the Jobs API, token auth, S3 results."""
    import yaml

    from pipeline.results import Results
    from pipeline.storage import filesystem
    from tests.conftest import tiny_spec

    fs, _ = filesystem("s3://x", s3_server)
    fs.create_dir("cluster-e2e")
    raw = tiny_spec(tmp_path, search={"trials": 4, "max_concurrent": 2},
                    storage={"path": "s3://cluster-e2e/experiments", "endpoint_override": s3_server})
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(raw))
    token_env = {**_clean_env(), **cluster.env()}

    refused = _pipeline(["submit", "spec.yaml", "--address", cluster.dashboard_url],
                        _clean_env(), tmp_path, timeout=120)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "error:" in refused.stderr and "Traceback" not in refused.stderr

    done = _pipeline(["submit", "spec.yaml", "--address", cluster.dashboard_url, "--follow"],
                     token_env, tmp_path, timeout=400)
    print(done.stdout[-3000:])
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "SUCCEEDED" in done.stdout
    res = Results.open("s3://cluster-e2e/experiments/tiny", endpoint_override=s3_server)
    df = res.dataframe()
    assert len(df) == 4 and set(df["status"]) == {"TERMINATED"}
    nodes = {n["node_id"] for n in local.nodes(cluster)
             if n["state"] == "ALIVE" and n["resources_total"].get("CPU", 0) > 0}
    ran_on = {str(h["node_id"].iloc[-1]) for h in res.histories.values()}
    assert ran_on == nodes, (ran_on, nodes)


MULTIWORKER_DRIVER = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from pipeline.runner import run
    from pipeline.spec import parse_spec
    from tests.conftest import tiny_spec

    out = {}
    # the same model, seed and *global* batch (32) on 1 worker and on 2 workers of 16
    for workers, batch in ((2, 16), (1, 32)):
        raw = tiny_spec(Path(sys.argv[1]), name=f"mw{workers}", search={"trials": 1},
                        space={"units": {"type": "choice", "values": [32]}},
                        training={"epochs": 3, "batch_size": batch, "learning_rate": 0.01},
                        resources={"cpu": 1, "workers": workers})
        res = run(parse_spec(raw), progress=False)
        (h,) = res.histories.values()
        out[workers] = {"status": list(res.dataframe()["status"]),
                        "epoch": list(h["epoch"]), "val_loss": list(h["val_loss"]),
                        "node_ids": list(h["node_ids"].iloc[-1]) if "node_ids" in h else None,
                        "checkpoints": sorted(p.name for p in Path(sys.argv[1], "results", f"mw{workers}")
                                              .glob("*/checkpoint_*"))}
    print("RESULT " + json.dumps(out), flush=True)
    """
)


def test_two_worker_trial_spans_both_nodes_and_tracks_one_worker(cluster, tmp_path):
    """resources.workers: 2 -- one trial, two Ray Train workers, one on each 1-CPU node.

    Its validation loss per epoch stays within 15% of the same config on one worker with the
    same global batch (measured: within 8%; the two runs see the same initial weights but
    shuffled, sharded batches in another order, so the curves are close, not equal).
    """
    env = {**_clean_env(), **cluster.env(), "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, "-c", MULTIWORKER_DRIVER, str(tmp_path)], env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    code, out = _finish(proc, timeout=300)
    assert code == 0, out[-4000:]
    result = json.loads(out.split("RESULT ", 1)[1].splitlines()[0])
    two, one = result["2"], result["1"]
    assert two["status"] == one["status"] == ["TERMINATED"]
    assert two["epoch"] == one["epoch"] == [1, 2, 3]
    workers = {n["node_id"] for n in local.nodes(cluster)
               if n["state"] == "ALIVE" and n["resources_total"].get("CPU", 0) > 0}
    assert len(set(two["node_ids"])) == 2 and set(two["node_ids"]) == workers
    assert len(two["checkpoints"]) == 1  # Tune's copy of the last epoch, as for one worker
    assert not (tmp_path / "results" / "mw2-workers").exists()  # Train's copies removed
    for a, b in zip(two["val_loss"], one["val_loss"]):
        assert abs(a - b) <= 0.15 * b, (two["val_loss"], one["val_loss"])
    assert two["val_loss"][-1] < two["val_loss"][0]


def test_node_loss_mid_run_reschedules_trials_from_checkpoints(cluster, tmp_path, s3_server):
    """SIGKILL a worker node while trials run: they resume on the survivor from checkpoints."""
    import pyarrow.fs as pafs
    import yaml

    from pipeline.results import Results
    from pipeline.storage import filesystem
    from tests.conftest import tiny_spec

    fs, _ = filesystem("s3://x", s3_server)
    fs.create_dir("node-loss")
    epochs = 40
    raw = tiny_spec(tmp_path, name="nodeloss", data={"source": "digits", "limit": 700},
                    training={"epochs": epochs, "batch_size": 16, "checkpoint_every": 1},
                    search={"trials": 3, "max_concurrent": 2}, failure={"max_failures": 3},
                    storage={"path": "s3://node-loss/experiments", "endpoint_override": s3_server})
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(raw))
    token_env = {**_clean_env(), **cluster.env()}
    sub = _pipeline(["submit", "spec.yaml", "--address", cluster.dashboard_url], token_env, tmp_path)
    assert sub.returncode == 0, sub.stderr[-2000:]
    job_id = sub.stdout.strip().splitlines()[-1]

    def checkpoints() -> int:
        try:
            infos = fs.get_file_info(pafs.FileSelector("node-loss/experiments/nodeloss",
                                                       recursive=True, allow_not_found=True))
        except OSError:
            return 0
        import re

        latest: dict[str, int] = {}
        for info in infos:
            m = re.search(r"/([^/]+)/checkpoint_(\d+)/state\.json$", info.path)
            if m:
                latest[m.group(1)] = max(latest.get(m.group(1), 0), int(m.group(2)))
        return sum(n >= 2 for n in latest.values())  # trials past their third epoch

    deadline = time.monotonic() + 300
    polls = 0
    while checkpoints() < 2:  # both running trials are past epoch 3
        polls += 1
        if polls % 10 == 0:  # a job that ended (or never ran) fails now, with its logs
            status = _pipeline(["jobs", "status", job_id, "--address", cluster.dashboard_url],
                               token_env, tmp_path, timeout=60).stdout.strip()
            if status not in ("PENDING", "RUNNING"):
                logs = _pipeline(["jobs", "logs", job_id, "--address", cluster.dashboard_url],
                                 token_env, tmp_path, timeout=60).stdout
                pytest.fail(f"job {job_id} is {status} before the fault was injected:\n{logs[-3000:]}")
        assert time.monotonic() < deadline, "trials never got going"
        time.sleep(0.5)
    workers_before = {n["node_id"] for n in local.nodes(cluster)
                      if n["state"] == "ALIVE" and not n["is_head_node"]}
    killed_pids = local.kill_worker(cluster, 1)
    assert killed_pids

    done = _pipeline(["jobs", "logs", job_id, "--follow", "--address", cluster.dashboard_url],
                     token_env, tmp_path, timeout=400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    workers_after = {n["node_id"] for n in local.nodes(cluster)
                     if n["state"] == "ALIVE" and not n["is_head_node"]}
    (dead,) = workers_before - workers_after
    res = Results.open("s3://node-loss/experiments/nodeloss", endpoint_override=s3_server)
    df = res.dataframe()
    assert len(df) == 3 and set(df["status"]) == {"TERMINATED"}
    assert (df["epochs"] == epochs).all()
    histories = res.histories
    moved = [h for h in histories.values() if dead in set(h["node_id"])]
    assert moved, "no trial was running on the killed node"
    for h in moved:
        epochs_seen = list(h["epoch"])
        assert epochs_seen.count(1) == 1, epochs_seen  # resumed, not restarted
        assert set(h["node_id"]) - {dead}, "trial did not move to the surviving node"
        assert max(epochs_seen) == epochs


def test_kill_worker_then_stop_leaves_nothing_alive(cluster):
    """Runs last: it kills a worker (if the node-loss test has not) and stops the cluster."""
    if _procs._alive(cluster.worker_pids[1]):
        killed = local.kill_worker(cluster, 1)
        assert cluster.worker_pids[1] in killed
    assert not _procs._alive(cluster.worker_pids[1])

    assert local.stop(cluster.state_dir, timeout_s=20) == 2  # head + worker 0
    assert not any(_procs._alive(p) for p in cluster.pids)
    for pid, start_time in zip(cluster.pids, cluster.start_times):
        assert local._session_members(pid, start_time) == []
    assert local.load(cluster.state_dir) is None
    assert local.stop(cluster.state_dir) == 0


def test_follow_prints_what_the_log_stream_missed():
    """`submit --follow` of a failed job shows its stored logs the stream closed before."""
    import doctest

    from cluster import jobs

    assert jobs.unseen_logs("start\n", "start\nerror: storage.path: ...\n") == (
        "error: storage.path: ...\n")
    assert jobs.unseen_logs("", "Traceback\nboom") == "Traceback\nboom\n"
    tail = jobs.unseen_logs("other\n", "".join(f"{i}\n" for i in range(100)), tail_lines=3)
    assert tail == "--- last 3 lines of the job's logs ---\n97\n98\n99\n"
    result = doctest.testmod(jobs)
    assert result.attempted >= 3 and result.failed == 0
