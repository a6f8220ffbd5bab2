"""Storage faults injected for real, mid-run: the S3 server stopped and started again, and a
SIGKILL while a checkpoint is half uploaded. Each test asserts that nothing was lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.fs as pafs
import pytest
import yaml

from pipeline.results import Results
from pipeline.storage import filesystem
from tests.conftest import ROOT, tiny_spec
from tests.s3faults import FreezingProxy, RestartableS3

# multi-node clusters, killed processes, storage outages: `make test-slow` (CI runs it too)
pytestmark = pytest.mark.slow

ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
BUCKET = "storage-faults"


@pytest.fixture
def s3():
    server = RestartableS3()
    server.start()
    filesystem("s3://x", server.endpoint)[0].create_dir(BUCKET)
    yield server
    if server.up:
        server.stop()


def _spec(tmp_path, name: str, endpoint: str, storage: dict | None = None, **sections):
    raw = tiny_spec(tmp_path, name=name, storage={
        "path": f"s3://{BUCKET}/{name}", "endpoint_override": endpoint, **(storage or {})},
                    **sections)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path, f"s3://{BUCKET}/{name}/{name}"


def _start(spec_path, log, *args):
    return subprocess.Popen([sys.executable, "-m", "pipeline", "run", str(spec_path), *args],
                            cwd=ROOT, env=ENV, stdout=log, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def _keys(endpoint: str, prefix: str) -> list[str]:
    fs, _ = filesystem("s3://x", endpoint)
    try:
        return [i.path for i in fs.get_file_info(pafs.FileSelector(prefix, recursive=True,
                                                                   allow_not_found=True))]
    except OSError:
        return []


def _wait(condition, proc, log_path, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"run ended (exit {proc.returncode}) before {what}:\n"
                        + log_path.read_text()[-3000:])
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"timed out waiting for {what}:\n" + log_path.read_text()[-3000:])
        time.sleep(0.2)


def _finish(proc, timeout=300) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise


def _resume(spec_path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline", "run", str(spec_path), "--resume"],
                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)


def _run_with_outage(spec_path, uri: str, s3: RestartableS3, log_path,
                     down_s: float | None) -> tuple[int, str]:
    """Run; stop S3 once a trial has its second checkpoint; start it again after ``down_s``
    (None: only after the run has ended). Returns the run's exit code and output."""
    with open(log_path, "w") as log:
        proc = _start(spec_path, log)
        _wait(lambda: any("/checkpoint_000001/" in k for k in _keys(s3.endpoint, uri[5:])),
              proc, log_path, 240, "a trial's second checkpoint")
        s3.stop()
        if down_s is not None:
            time.sleep(down_s)
            assert proc.poll() is None, "the run ended during the outage"
            s3.start()
        rc = _finish(proc)
    return rc, log_path.read_text()


def _assert_complete(uri: str, endpoint: str, trials: int, epochs: int) -> dict:
    """Exactly ``trials`` trials, all finished, each history one continuous 1..epochs."""
    res = Results.open(uri, endpoint_override=endpoint)
    df = res.dataframe()
    assert len(df) == trials, df
    shown = df[["trial_id", "status", "epochs", "error"]].to_string()  # the whole error, if any
    assert set(df["status"]) == {"TERMINATED"}, shown
    assert (df["epochs"] == epochs).all(), shown
    histories = res.histories
    assert len(histories) == trials
    for tid, h in histories.items():
        seen = list(h["epoch"])
        assert sorted(set(seen)) == list(range(1, epochs + 1)), (tid, seen)
    return histories


def test_s3_outage_mid_run_is_waited_out_and_nothing_is_lost(tmp_path, s3):
    """Stop the S3 server while trials checkpoint every epoch; start it 8 s later."""
    epochs, trials = 8, 4
    spec_path, uri = _spec(tmp_path, "outage", s3.endpoint, search={"trials": trials},
                           training={"epochs": epochs, "checkpoint_every": 1})
    rc, out = _run_with_outage(spec_path, uri, s3, tmp_path / "run.log", down_s=8)
    assert rc == 0, out[-3000:]
    assert "storage unreachable" in out and "retrying" in out, out[-3000:]  # the outage was hit
    _assert_complete(uri, s3.endpoint, trials, epochs)


def test_s3_outage_past_tolerance_is_a_clear_error_and_resumes(tmp_path, s3):
    """An outage longer than storage.outage_tolerance_s ends the run clearly; --resume completes it."""
    epochs, trials = 4, 2
    spec_path, uri = _spec(tmp_path, "longoutage", s3.endpoint,
                           search={"trials": trials, "max_concurrent": 1},
                           training={"epochs": epochs, "checkpoint_every": 1},
                           storage={"outage_tolerance_s": 2})
    rc, out = _run_with_outage(spec_path, uri, s3, tmp_path / "run.log", down_s=None)
    assert rc == 1, out[-3000:]
    errors = [ln for ln in out.splitlines() if ln.startswith("error: storage.path: ")]
    assert len(errors) == 1 and "outage_tolerance_s" in errors[0], out[-3000:]
    assert "`run SPEC --resume` re-runs only the unfinished trials" in out
    s3.start()
    before = Results.open(uri, endpoint_override=s3.endpoint).dataframe()
    print(f"\nafter the long outage: {before['status'].value_counts().to_dict()}")
    resumed = _resume(spec_path)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    _assert_complete(uri, s3.endpoint, trials, epochs)


def test_kill_during_checkpoint_upload_never_corrupts_the_experiment(tmp_path, s3):
    """SIGKILL driver, Ray and workers while a checkpoint's model file is half sent; resume."""
    epochs, trials = 6, 4
    proxy = FreezingProxy(s3.port, freeze_on=b"/checkpoint_000002/model.keras")
    try:
        spec_path, uri = _spec(tmp_path, "killckpt", proxy.endpoint, search={"trials": trials},
                               training={"epochs": epochs, "checkpoint_every": 1})
        log_path = tmp_path / "run.log"
        with open(log_path, "w") as log:
            proc = _start(spec_path, log)
            _wait(proxy.frozen.is_set, proc, log_path, 240, "a checkpoint upload to freeze")
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
        _, target, _ = proxy.frozen_request.decode().split(" ", 2)
        key = target.split("?", 1)[0].lstrip("/")  # bucket/.../checkpoint_000002/model.keras
        assert key.endswith("/checkpoint_000002/model.keras"), proxy.frozen_request
        # the half-sent file never became an object: what is stored is whole or absent
        assert key not in _keys(s3.endpoint, uri[5:])
        before = Results.open(uri, endpoint_override=proxy.endpoint).dataframe()
        print(f"\nkilled mid-upload; stored state: {before['status'].value_counts().to_dict()}")
        resumed = _resume(spec_path)
        assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
        histories = _assert_complete(uri, proxy.endpoint, trials, epochs)
        # the trial killed mid-upload continued from its last whole checkpoint, not from epoch 1
        restarted = [h for h in histories.values() if list(h["epoch"]).count(1) > 1]
        assert not restarted, [list(h["epoch"]) for h in restarted]
    finally:
        proxy.close()


@pytest.mark.parametrize("kept_epochs", [(3, 4), (1, 3, 4)], ids=["first-rows", "middle-row"])
def test_history_lost_by_storage_is_recovered_from_the_checkpoint(ray_session, tmp_path, kept_epochs):
    """Cut rows of a trial's stored history (as a torn save or a kill before a sync would);
    results repair them from the checkpoint, whether the first rows or one in the middle went."""
    import pipeline

    epochs = 4
    raw = tiny_spec(tmp_path, search={"trials": 2}, training={"epochs": epochs, "checkpoint_every": 1})
    res = pipeline.run(raw, progress=False)
    trial = res._analysis.trials[0]
    full = res.histories[trial.trial_id]  # as stored, before the cut
    assert list(full["epoch"]) == [1, 2, 3, 4] and not full.get("from_checkpoint", pd.Series()).any()
    progress = Path(trial.path) / "progress.csv"
    result = Path(trial.path) / "result.json"
    lines = progress.read_text().splitlines(keepends=True)
    progress.write_text(lines[0] + "".join(lines[e] for e in kept_epochs))  # header + kept epochs
    rows = result.read_text().splitlines(keepends=True)
    result.write_text("".join(rows[e - 1] for e in kept_epochs))

    again = Results.open(str(res.where.path))
    h = again.histories[trial.trial_id]
    assert list(h["epoch"]) == [1, 2, 3, 4]
    assert list(h["from_checkpoint"]) == [e not in kept_epochs for e in range(1, 5)]
    np.testing.assert_allclose(h["val_accuracy"], full["val_accuracy"])
    assert again.dataframe().set_index("trial_id").loc[trial.trial_id, "epochs"] == epochs


def test_a_restored_trial_continues_from_its_newest_stored_checkpoint(tmp_path):
    """Tune's saved state may name an older checkpoint than the trial stored before a driver
    SIGKILL (found by benchmarks/chaos_soak.py): the newest whole one of its own is taken."""
    import json

    from pipeline.checkpoints import MODEL_FILE, STATE_FILE, newest_own_checkpoint

    def save(index: int, epoch: int, trial_id: str = "t1", model: bool = True) -> str:
        folder = tmp_path / f"checkpoint_{index:06d}"
        folder.mkdir()
        (folder / STATE_FILE).write_text(json.dumps({"epoch": epoch, "trial_id": trial_id}))
        if model:
            (folder / MODEL_FILE).write_bytes(b"model")
        return str(folder)

    named = save(0, 4)           # what the experiment state names
    newest = save(1, 6)          # stored after the state was saved
    save(2, 8, trial_id="t2")    # another trial's (a PBT donor's folder holds those)
    save(3, 10, model=False)     # its model never arrived: not whole
    (tmp_path / "checkpoint_000004").mkdir()  # no state at all
    fs = pafs.LocalFileSystem()
    assert newest_own_checkpoint(fs, str(tmp_path), "t1", named).path == newest
    assert newest_own_checkpoint(fs, str(tmp_path), "t3", "tune's") == "tune's"
    assert newest_own_checkpoint(fs, str(tmp_path / "missing"), "t1") is None
