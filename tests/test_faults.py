"""Faults injected for real: bad storage, unreachable clusters, killed drivers."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time

import pytest

from pipeline.results import Results
from tests.conftest import ROOT
from tests.s3faults import free_port
from tests.test_cli_resume import _cli, _write_spec

# multi-node clusters, killed processes, storage outages: `make test-slow` (CI runs it too)
pytestmark = pytest.mark.slow

ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def test_read_only_storage_is_a_clear_error_at_start(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(stat.S_IRUSR | stat.S_IXUSR)
    if os.access(ro, os.W_OK):  # root ignores permissions: use a path under a file instead
        ro = tmp_path / "a-file"
        ro.write_text("not a folder")
    spec_path, _ = _write_spec(tmp_path, storage=str(ro / "results"))
    proc = _cli("run", str(spec_path), timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: storage.path: cannot write to")
    assert "Traceback" not in proc.stderr
    assert "Started a local Ray" not in proc.stdout + proc.stderr


def test_unreachable_s3_is_a_clear_error_at_start(tmp_path):
    dead = f"http://127.0.0.1:{free_port()}"
    spec_path, _ = _write_spec(tmp_path, storage={"path": "s3://nowhere/exp", "endpoint_override": dead})
    proc = _cli("run", str(spec_path), timeout=180)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.startswith("error: storage.path: cannot write to nowhere/exp")
    assert "Traceback" not in proc.stderr


def test_unreachable_cluster_is_a_bounded_clear_error(tmp_path):
    spec_path, exp = _write_spec(tmp_path)
    proc = _cli("run", str(spec_path), "--address", f"127.0.0.1:{free_port()}", timeout=60)
    assert proc.returncode == 2
    assert "cannot reach the Ray cluster" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not exp.exists()


def _newest_state(exp) -> tuple[str, int]:
    """Tune's newest experiment state file in ``exp`` and how many trials it lists."""
    path = max(exp.glob("experiment_state-*.json"))
    return path.name, len(json.loads(path.read_text())["trial_data"])


def test_sigkilled_driver_resumes_and_finishes_exactly_the_configured_trials(tmp_path):
    """SIGKILL the driver (and its local Ray) mid-run; --resume completes without re-running.

    The kill also leaves the stored experiment state older than the searcher's files, as an
    upload cut between Tune's files does (Tune syncs them one by one): the searcher had
    handed out more trials than the restored trial list holds. No configured trial may be
    lost to that (the chaos soak found one, #17)."""
    spec_path, exp = _write_spec(tmp_path, search={"trials": 5, "max_concurrent": 1},
                                 training={"epochs": 3, "checkpoint_every": 1})
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "run", str(spec_path)], cwd=ROOT,
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            start_new_session=True)
    try:
        done, snapshot, deadline = 0, None, time.monotonic() + 240
        assert proc.stdout is not None
        for line in proc.stdout:
            done += " finished after " in line
            if done == 1 and snapshot is None:
                name, listed = _newest_state(exp)
                snapshot = (name, listed, (exp / name).read_bytes())
            if done >= 2:
                break
            assert time.monotonic() < deadline, "run never got far enough"
        assert snapshot is not None
        while _newest_state(exp)[1] <= snapshot[1]:  # Tune saves its state every ~10 s
            assert time.monotonic() < deadline, "the stored state never listed another trial"
            time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    name, listed, data = snapshot
    (exp / name).write_bytes(data)  # the trial list as it was, the searcher's files newer
    before = Results.open(str(exp))
    finished = before.dataframe().query("status == 'TERMINATED' and epochs == 3")
    rows = {t: len(before.histories[t]) for t in finished["trial_id"]}

    resumed = _cli("run", str(spec_path), "--resume", timeout=180)  # a hang is a failure
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = Results.open(str(exp))
    df = after.dataframe()
    assert len(df) == 5 and set(df["status"]) == {"TERMINATED"}, df[["trial_id", "status"]]
    for tid, n in rows.items():
        assert len(after.histories[tid]) == n
