"""The Optuna door's in-process mode (``create_study(..., in_process=True)``): Optuna's own
``optimize`` in the script's process, for objectives that need Optuna's exact semantics."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# A script doing what the Ray-backed mode cannot: the objective changes the script's state,
# uses trial.study (and stops it), and the trials' order and values are the sampler's.
_SCRIPT = """
{import_line}
import json, sys

SEEN = []
CALLS = []


def objective(trial):
    x = trial.suggest_float("x", -10, 10)
    kind = trial.suggest_categorical("kind", ["a", "b"])
    y = trial.suggest_int("y", 0, 5) if kind == "a" else 0
    SEEN.append(trial.number)
    assert trial.study is study
    if len(SEEN) == 14:
        trial.study.stop()  # this trial still finishes; no other starts
    for step in range(3):
        trial.report((x - 2) ** 2 + y + step, step)
        if trial.should_prune():
            raise optuna.TrialPruned()
    return (x - 2) ** 2 + y


def callback(s, frozen):
    assert s is study
    CALLS.append([frozen.number, frozen.state.name])


study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=3),
                            pruner=optuna.pruners.MedianPruner(n_startup_trials=3){kwargs})
study.optimize(objective, n_trials=30, callbacks=[callback])
ray = sys.modules.get("ray")
print(json.dumps({{"params": [t.params for t in study.trials],
                  "states": [t.state.name for t in study.trials],
                  "seen": SEEN, "calls": CALLS, "best": study.best_value,
                  "ray_started": bool(ray and ray.is_initialized())}}))
"""


def _run(folder: Path, import_line: str, kwargs: str) -> tuple[dict, str]:
    folder.mkdir()
    script = folder / "script.py"
    script.write_text(_SCRIPT.format(import_line=import_line, kwargs=kwargs))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run([sys.executable, str(script)], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def test_in_process_study_runs_as_optuna_does(tmp_path):
    """Same script, same seed: the door's in-process study gives Optuna's trials exactly
    (parameters, pruned trials, the stop from inside the objective, the script's own list
    filled, callbacks with the user's study), and no Ray starts, not even at import."""
    peer, _ = _run(tmp_path / "optuna", "import optuna", "")
    ours, err = _run(tmp_path / "ours", "from pipeline.compat import optuna", ", in_process=True")
    assert peer["ray_started"] is False
    assert ours == peer
    assert len(ours["seen"]) == 14 and "PRUNED" in ours["states"]  # the script exercised both
    assert "outside itself" not in err and "trial(s) at a time" not in err


def test_in_process_error_stops_optimize_at_once():
    """As in Optuna: an objective's exception ends optimize at that trial (the Ray-backed
    mode lets the other trials run first); the study keeps the failed trial."""
    from pipeline.compat import optuna

    study = optuna.create_study(in_process=True, sampler=optuna.samplers.RandomSampler(seed=0))

    def objective(trial):
        x = trial.suggest_float("x", 0, 1)
        if trial.number == 2:
            raise ValueError("boom")
        return x

    with pytest.raises(ValueError, match="boom"):
        study.optimize(objective, n_trials=10)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE", "FAIL"]
    with pytest.raises(RuntimeError, match="in_process=True"):
        study.results  # noqa: B018 - the property raises


def test_ray_backed_warning_points_to_in_process():
    """The warning about lost outer changes says how to keep Optuna's semantics."""
    from pipeline.compat._driver_state import changes_message

    assert "in_process=True" in changes_message("the objective", ["SCORES"])


_FORGO_SCRIPT = """
import sys, time
from pipeline.compat import optuna
import ray

IN_PROCESS = True  # a name, not the literal: the import starts Ray
if {wait_first}:  # the study is made once Ray is up (else while it is starting)
    deadline = time.time() + 120
    while not ray.is_initialized() and time.time() < deadline:
        time.sleep(0.1)
    print("UP", ray.is_initialized())
study = optuna.create_study(in_process=IN_PROCESS)
study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=5)
deadline = time.time() + 120
while ray.is_initialized() and time.time() < deadline:
    time.sleep(0.1)
print("TRIALS", len(study.trials), "RAY", ray.is_initialized())
"""


@pytest.mark.parametrize("wait_first", [False, True], ids=["starting", "up"])
def test_in_process_study_ends_the_start_its_import_began(tmp_path, wait_first):
    """A script whose text does not say in_process=True has Ray started at import: the
    in-process study ends it (starting or up), and the script ends cleanly."""
    script = tmp_path / "script.py"
    script.write_text(_FORGO_SCRIPT.format(wait_first=wait_first))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    if wait_first:
        assert "UP True" in proc.stdout  # Ray was started by the import
    assert "TRIALS 5 RAY False" in proc.stdout, proc.stdout + proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
