"""Trial workers started (and TensorFlow imported) before ``search()``: cluster.prewarm."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_copied_tune_environment_is_tunes():
    """A worker serves an actor only with the actor's exact environment: our copy of what Tune
    adds must be Tune's (an upgrade of Ray that changes it fails here, not silently)."""
    from ray.tune.execution.class_cache import DEFAULT_ENV_VARS, ENV_VARS_TO_PROPAGATE

    from cluster.prewarm import TUNE_ENV, TUNE_PROPAGATED

    assert TUNE_ENV == DEFAULT_ENV_VARS
    assert TUNE_PROPAGATED == frozenset(ENV_VARS_TO_PROPAGATE)


_SCRIPT = """
import os, time
import numpy as np
import ray
from pipeline.compat import keras_tuner as kt
import keras

def started():  # this process's start, in seconds since the epoch
    ticks = int(open("/proc/self/stat").read().rsplit(")", 1)[1].split()[19])
    boot = next(float(l.split()[1]) for l in open("/proc/stat") if l.startswith("btime"))
    return boot + ticks / os.sysconf("SC_CLK_TCK")

def build(hp):
    with open(os.path.abspath("trials.txt"), "a") as f:
        f.write(f"{os.getpid()} {started()}\\n")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(hp.Choice("u", [4, 8])),
                              keras.layers.Dense(2, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model

tuner = kt.RandomSearch(build, objective="val_accuracy", max_trials=2, seed=0,
                        directory="kt", project_name="warm")
deadline = time.time() + 120
while not ray.is_initialized() and time.time() < deadline:
    time.sleep(0.05)  # the script prepares its data; Ray comes up meanwhile
time.sleep(2)
x = np.random.default_rng(0).random((64, 4)).astype("float32")
y = (x[:, 0] > 0.5).astype("int64")
print("search at", time.time(), os.getpid(), flush=True)
tuner.search(x, y, epochs=1, validation_split=0.25, verbose=0)
"""


def test_front_door_trials_run_in_workers_started_before_search(tmp_path):
    """A user's script as a whole process: the KerasTuner door's first trials run in worker
    processes that started before ``search()`` was called, instead
    of processes Ray starts when Tune asks for them; nothing of it reaches the console."""
    script = tmp_path / "script.py"
    script.write_text(_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    called, driver = proc.stdout.split("search at", 1)[1].split()[:2]
    trials = [line.split() for line in (tmp_path / "trials.txt").read_text().splitlines()]
    workers = {(pid, float(start)) for pid, start in trials if pid != driver}
    assert len(workers) == 2, trials  # the two trials ran at once, one per CPU
    assert all(start < float(called) for _, start in workers), (called, workers)
    assert "goaway" not in proc.stderr.lower() and "prestart" not in proc.stderr.lower()
