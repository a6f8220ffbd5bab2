"""The CLI end to end in subprocesses: run, interrupt, --resume, results, best."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml

from pipeline.results import Results
from tests.conftest import ROOT, tiny_spec

# multi-node clusters, killed processes, storage outages: `make test-slow` (CI runs it too)
pytestmark = pytest.mark.slow

ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def _cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=timeout)


def _write_spec(tmp_path, **sections):
    raw = tiny_spec(tmp_path, **sections)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path, tmp_path / "results" / raw["name"]


def _interrupt_after(spec_path, finished: int, sig=signal.SIGINT, timeout=240) -> list[str]:
    """Start `run`, wait until `finished` trials printed their line, then send `sig`."""
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "run", str(spec_path)], cwd=ROOT,
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            start_new_session=True)
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    try:
        for line in proc.stdout:
            lines.append(line)
            if sum(" finished after " in ln for ln in lines) >= finished:
                break
            assert time.monotonic() < deadline, "run never got far enough"
        os.killpg(proc.pid, sig) if sig == signal.SIGKILL else proc.send_signal(sig)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return lines


def test_interrupted_run_resumes_without_rerunning_finished_trials(tmp_path):
    spec_path, exp = _write_spec(tmp_path, search={"trials": 6, "max_concurrent": 1},
                                 training={"epochs": 3}, searcher={"name": "tpe"})
    lines = _interrupt_after(spec_path, finished=2)
    assert any(" finished after " in ln for ln in lines)
    before = Results(Results.open(str(exp)).where)
    done_before = before.dataframe().query("status == 'TERMINATED' and epochs == 3")
    assert 2 <= len(done_before) < 6
    rows_before = {t: len(before.histories[t]) for t in done_before["trial_id"]}

    again = _cli("run", str(spec_path))
    assert again.returncode == 2 and "already exists" in again.stderr  # never overwritten

    resumed = _cli("run", str(spec_path), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    # The workers kept TensorFlow's start-up notes to themselves (pipeline.quiet)
    noise = [ln for ln in (resumed.stdout + resumed.stderr).splitlines()
             if re.search(r"port\.cc|cudart_stub|cuInit|absl::InitializeLog", ln)]
    assert not noise, noise
    after = Results.open(str(exp))
    df = after.dataframe()
    assert len(df) == 6
    assert set(df["status"]) == {"TERMINATED"}
    for tid, n in rows_before.items():  # finished trials were not re-run
        assert len(after.histories[tid]) == n

    res = _cli("results", str(exp), "--export", str(tmp_path / "all.csv"))
    assert res.returncode == 0
    assert "6 trials" in res.stdout
    assert len(pd.read_csv(tmp_path / "all.csv")) == 6

    best = _cli("best", str(exp))
    assert best.returncode == 0, best.stderr[-2000:]
    assert f"best trial: {after.best_trial.trial_id}" in best.stdout
    assert "test_accuracy (held-out test split):" in best.stdout


def test_results_of_missing_experiment_is_a_clear_error(tmp_path):
    proc = _cli("results", str(tmp_path / "nope"))
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: no experiment at {tmp_path / 'nope'}"
