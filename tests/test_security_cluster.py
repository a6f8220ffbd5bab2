"""Attacks on a real local cluster (`cluster up` through the CLI): they must fail.

* submit ships no secret file of the project folder to any node (issue #21, point 1);
* the token never reaches a listener that is not the cluster's: not one squatting the
  Jobs API's usual port 8265, not one named by ``RAY_ADDRESS`` (point 3);
* a Ray our front doors start without dashboard sends nothing to port 8265 either;
* no folder under the state folder or Ray's temp root is writable by another user, and
  a second user can plant nothing there (point 2).

One 1-worker cluster for the module, with a state folder short enough that Ray's temp
root lies inside it (the case that was open); ~1 min on 2 CPUs.
"""

from __future__ import annotations

import http.server
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, tiny_spec

# multi-node clusters, killed processes, storage outages: `make test-slow` (CI runs it too)
pytestmark = pytest.mark.slow

if not sys.platform.startswith("linux"):
    pytest.skip("cluster.local process bookkeeping needs /proc", allow_module_level=True)

SECRET_FILES = (".env", ".aws/credentials", "credentials.json", "id_rsa", ".ssh/id_ed25519",
                "pipeline/.env.local", "server.pem")


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if not k.startswith("RAY_") and k not in ("PYTHONPATH", "PIPELINE_STORAGE_BASE")}


def _pipeline(args, env, cwd, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


class _Recorder(http.server.BaseHTTPRequestHandler):
    """A squatter: answers everything, remembers every request's headers."""

    def _any(self):
        self.server.seen.append((self.command, self.path, dict(self.headers)))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")

    do_GET = do_POST = do_PUT = do_HEAD = _any

    def log_message(self, *args):
        pass


@pytest.fixture
def squatter():
    """A listener on 127.0.0.1:8265 (Ray's usual Jobs API port), as another user would open."""
    try:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 8265), _Recorder)
    except OSError as exc:
        pytest.skip(f"port 8265 is taken here ({exc})")
    server.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A project folder holding the packages, a tiny spec, and the usual secret files."""
    proj = tmp_path_factory.mktemp("project")
    for folder in ("pipeline", "searchers", "cluster"):
        shutil.copytree(ROOT / folder, proj / folder, ignore=shutil.ignore_patterns("__pycache__"))
    for name in SECRET_FILES:
        (proj / name).parent.mkdir(parents=True, exist_ok=True)
        (proj / name).write_text("SECRET-" + name + "\n")
    raw = tiny_spec(proj, search={"trials": 1, "max_concurrent": 1}, training={"epochs": 1},
                    storage="results")
    (proj / "spec.yaml").write_text(yaml.safe_dump(raw))
    return proj


@pytest.fixture(scope="module")
def cluster(project):
    # short, so that Ray's temp root goes under the state folder (<= 34 characters)
    state = Path(tempfile.mkdtemp(prefix="sec", dir="/tmp")) / "st"
    assert len(str(state / "ray")) <= 34
    env = _clean_env()
    up = _pipeline(["cluster", "up", "--workers", "1", "--state-dir", str(state)], env, project,
                   timeout=180)
    from cluster import local

    try:
        assert up.returncode == 0, up.stdout + up.stderr
        c = local.load(state)
        assert c.temp_dir == state / "ray"
        yield c
    finally:
        down = _pipeline(["cluster", "down", "--state-dir", str(state)], env, project, timeout=120)
        assert down.returncode == 0, down.stderr
        shutil.rmtree(state.parent, ignore_errors=True)


@pytest.fixture(scope="module")
def submitted(cluster, project):
    """`submit --follow` from a shell that exported only the token variables (no address)."""
    server = None
    try:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 8265), _Recorder)
        server.seen = []
        threading.Thread(target=server.serve_forever, daemon=True).start()
    except OSError:
        server = None
    env = {**_clean_env(), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(cluster.token_path)}
    try:
        proc = _pipeline(["submit", "spec.yaml", "--follow"], env, project, timeout=300)
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
    return proc, (server.seen if server is not None else None)


def test_submit_without_address_goes_to_the_recorded_cluster_not_port_8265(submitted, cluster):
    proc, seen = submitted
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "SUCCEEDED" in proc.stdout
    assert f"cluster: {cluster.dashboard_url} (from the cluster in" in proc.stderr
    if seen is None:
        pytest.skip("port 8265 was taken here; the squatter could not be planted")
    assert seen == [], seen  # not a single request, so no token, no zip


def test_submit_ships_no_secret_file_to_any_node(submitted, cluster, project):
    proc, _ = submitted
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "shipping " in proc.stderr and " files (" in proc.stderr
    unpacked = [p for p in Path(cluster.temp_dir).rglob("*")
                if "working_dir_files" in p.parts and p.is_file()]
    assert any(p.name == "spec.yaml" for p in unpacked), unpacked  # the job's files did arrive
    # <...>/working_dir_files/<package>/<path in the project>
    names = {"/".join(p.parts[p.parts.index("working_dir_files") + 2:]) for p in unpacked}
    assert "spec.yaml" in names and "pipeline/cli.py" in names, sorted(names)
    leaked = names & set(SECRET_FILES)
    assert not leaked, leaked
    for p in Path(cluster.temp_dir).rglob("*"):
        if p.is_file() and not p.is_symlink():
            try:
                assert "SECRET-" not in p.read_text(errors="ignore"), p
            except OSError:
                pass


def test_ray_address_does_not_redirect_the_checked_address(cluster, project, squatter):
    """RAY_ADDRESS names the squatter, --address the cluster: only the cluster is asked."""
    env = {**_clean_env(), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(cluster.token_path),
           "RAY_ADDRESS": "http://127.0.0.1:8265"}
    proc = _pipeline(["jobs", "status", "raysubmit_nothere", "--address", cluster.dashboard_url],
                     env, project, timeout=120)
    assert "Traceback" not in proc.stderr
    assert squatter.seen == [], squatter.seen
    assert proc.returncode == 2 and "raysubmit_nothere" in proc.stderr, proc.stderr  # the cluster answered


_LEAN_RAY_SCRIPT = """
import contextlib, os, pathlib, sys, time
import ray
from cluster.connect import NO_DASHBOARD, ray_session

if sys.argv[1] == "ray_session":  # what `run` and the front doors start on a laptop
    start = ray_session()
else:  # Ray's own start with the pipeline's arguments (as the tests' session Ray)
    ray.init(include_dashboard=False, **NO_DASHBOARD, logging_level="WARNING")
    start = contextlib.nullcontext()
with start:
    @ray.remote(max_retries=0)
    def die():
        os._exit(1)

    try:
        ray.get(die.remote())
    except Exception:
        pass
    session = pathlib.Path(ray._private.worker._global_node.get_session_dir_path())
    events, agent = session / "logs" / "events", session / "logs" / "dashboard_agent.log"
    recorded = ray.experimental.internal_kv._internal_kv_get(  # where the agent sends events
        ray._private.ray_constants.DASHBOARD_ADDRESS,
        namespace=ray._private.ray_constants.KV_NAMESPACE_DASHBOARD)
    print("DASHBOARD_RECORDED", recorded)
    deadline = time.monotonic() + (60 if recorded else 15)
    while time.monotonic() < deadline:  # until the agent has tried to send the event
        if "Report event" in (agent.read_text() if agent.exists() else ""):
            break
        time.sleep(0.5)
    written = "".join(p.read_text() for p in events.glob("*") if p.is_file())
    print("WORKER_FAILURE_EVENT", "RAY_WORKER_FAILURE" in written)
    print("AGENT_TRIED", "Report event" in agent.read_text())
"""


@pytest.mark.parametrize("start", ["ray_session", "ray.init"])
def test_lean_local_ray_sends_no_event_and_no_token_to_port_8265(tmp_path, squatter, start):
    """A Ray started without dashboard records 127.0.0.1:8265 as its dashboard, and its
    node agent posts cluster events there with the token (seen in CI: a worker death in
    the test session's Ray went to this squatter). Ray's own start with our arguments
    (the tests' session Ray) records port 0 instead, and the agent's attempt goes nowhere;
    the pipeline's start (cluster.connect._lean_head) has no dashboard server at all, so
    nothing is recorded and the agent has nowhere to send."""
    env = {**_clean_env(), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", _LEAN_RAY_SCRIPT, start], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "WORKER_FAILURE_EVENT True" in proc.stdout, proc.stdout  # there was an event to send
    if start == "ray.init":
        assert "DASHBOARD_RECORDED b'127.0.0.1:0'" in proc.stdout, proc.stdout
        assert "AGENT_TRIED True" in proc.stdout, proc.stdout  # and the agent tried to send it
    else:
        assert "DASHBOARD_RECORDED None" in proc.stdout, proc.stdout
        assert "AGENT_TRIED False" in proc.stdout, proc.stdout
    assert squatter.seen == [], squatter.seen


def test_no_address_anywhere_is_refused_before_any_connection(tmp_path, project, squatter):
    env = {**_clean_env(), "RAY_AUTH_MODE": "token"}
    (tmp_path / "spec.yaml").write_text((project / "spec.yaml").read_text())
    proc = _pipeline(["submit", "spec.yaml"], {**env, "PYTHONPATH": str(ROOT)}, tmp_path, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "error: --address: no cluster to talk to" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert squatter.seen == []


def test_state_folder_and_temp_root_are_private(submitted, cluster):
    """After a job ran: 0700 roots, nothing writable by others, a second user plants nothing."""
    from cluster import local

    state, temp = Path(cluster.state_dir), Path(cluster.temp_dir)
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert stat.S_IMODE(temp.stat().st_mode) == 0o700
    found = subprocess.run(["find", str(state), str(temp), "!", "-type", "l", "-perm", "-0002"],
                           capture_output=True, text=True)
    assert found.returncode == 0 and found.stdout == "", found.stdout
    assert local.world_writable(state, temp) == []
    pkgs = [p for d in temp.rglob("working_dir_files") for p in d.iterdir() if p.is_dir()]
    assert pkgs, "no unpacked package to attack"
    if os.getuid() != 0:
        return
    # As another user (nobody): rename a cached package and plant pipeline/__main__.py.
    attack = (f"import os, sys\npkg = {str(pkgs[0])!r}\n"
              "try:\n    os.rename(pkg, pkg + '.old')\nexcept OSError as e:\n    print('rename', e)\n"
              "try:\n    os.makedirs(pkg + '/pipeline', exist_ok=True)\n"
              "    open(pkg + '/pipeline/__main__.py', 'w').write('PLANTED')\n"
              "except OSError as e:\n    print('plant', e)\n    sys.exit(3)\n")
    python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    proc = subprocess.run([python, "-c", attack], user=65534, group=65534,
                          capture_output=True, text=True, cwd="/")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "Permission denied" in proc.stdout
    assert pkgs[0].is_dir()
    assert "PLANTED" not in (pkgs[0] / "pipeline" / "__main__.py").read_text()
