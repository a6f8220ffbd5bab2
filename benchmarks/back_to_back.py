"""Searches one after another in one script, as whole ``python script.py`` processes.

A notebook or a script that tunes in a loop calls ``search()``/``optimize()`` several
times. Each front-door search is a Ray Tune run; its trial workers used to end with it, so
every search after the first waited for new processes to import TensorFlow. The front
doors now keep them for the next search (``pipeline.worker_park``). This prints, for each
scenario, the seconds of each search and of the whole script, for the front door with its
park, the front door without it (``PIPELINE_KEEP_WORKERS_S=0``), and the peer itself
(KerasTuner, Optuna), interleaved rep by rep, and the ratios of the medians.

Scenarios:
  kt      4 x KerasTuner RandomSearch, 3 trials x 2 epochs each, digits (a new tuner each)
  optuna  one study, optimize(n_trials=10), then twice optimize(n_trials=20): a cheap
          objective (the shape of optuna-examples' basic/quadratic.py)

Usage: .venv/bin/python benchmarks/back_to_back.py [--reps 3] [--only kt|optuna] [--json F]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_KT = """
import os, sys, time
T0 = time.time()
if IMPL == "ours":
    import pipeline.compat.keras_tuner as kt
else:
    import keras_tuner as kt
import keras
from sklearn.datasets import load_digits

x, y = load_digits(return_X_y=True)
x = (x / 16.0).astype("float32")

def build(hp):
    model = keras.Sequential([keras.layers.Input((64,)),
                              keras.layers.Dense(hp.Int("units", 16, 64, step=16), activation="relu"),
                              keras.layers.Dense(10, activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adam(hp.Float("lr", 1e-3, 1e-2, sampling="log")),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model

for i in range(4):
    t = time.time()
    tuner = kt.RandomSearch(build, objective="val_accuracy", max_trials=3, overwrite=True,
                            directory="kt", project_name=f"p{i}", seed=i)
    tuner.search(x[:1200], y[:1200], epochs=2, validation_data=(x[1200:], y[1200:]), verbose=0)
    print("SEARCH", i, time.time() - t, tuner.oracle.get_best_trials(1)[0].score, flush=True)
print("END", time.time() - T0, flush=True)
"""

_OPTUNA = """
import time
T0 = time.time()
if IMPL == "ours":
    import pipeline.compat.optuna as optuna
else:
    import optuna
optuna.logging.set_verbosity(optuna.logging.WARNING)

def objective(trial):
    x = trial.suggest_float("x", -100, 100)
    y = trial.suggest_categorical("y", [-1, 0, 1])
    return x ** 2 + y

study = optuna.create_study()
for i, n in enumerate((10, 20, 20)):
    t = time.time()
    study.optimize(objective, n_trials=n)
    print("SEARCH", i, time.time() - t, study.best_value, flush=True)
print("END", time.time() - T0, flush=True)
"""

SCENARIOS = {"kt": _KT, "optuna": _OPTUNA}
CONTESTANTS = ("ours", "ours-no-park", "peer")


def _once(folder: Path, scenario: str, contestant: str) -> dict:
    impl = "peer" if contestant == "peer" else "ours"
    script = folder / f"{scenario}_{contestant}.py"
    script.write_text(f"IMPL = {impl!r}\n" + SCENARIOS[scenario])
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = str(ROOT)
    if contestant == "ours-no-park":
        env["PIPELINE_KEEP_WORKERS_S"] = "0"
    start = time.monotonic()
    proc = subprocess.run([sys.executable, str(script)], cwd=folder, env=env, capture_output=True,
                          text=True, timeout=900)
    wall = time.monotonic() - start
    if proc.returncode:
        raise SystemExit(f"{scenario}/{contestant} failed:\n{proc.stderr[-3000:]}")
    searches = [float(line.split()[2]) for line in proc.stdout.splitlines() if line.startswith("SEARCH")]
    return {"wall": wall, "searches": searches}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--only", choices=sorted(SCENARIOS))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    out: dict = {}
    for scenario in [args.only] if args.only else list(SCENARIOS):
        runs: dict[str, list[dict]] = {c: [] for c in CONTESTANTS}
        with tempfile.TemporaryDirectory() as tmp:
            for rep in range(args.reps):
                for contestant in CONTESTANTS:  # interleaved: the VM's drift hits all alike
                    run = _once(Path(tmp), scenario, contestant)
                    runs[contestant].append(run)
                    print(f"{scenario} rep {rep} {contestant:13s} wall {run['wall']:6.2f} s  searches "
                          + " ".join(f"{s:.2f}" for s in run["searches"]), flush=True)
        med = {c: {"wall": statistics.median(r["wall"] for r in runs[c]),
                   "later": statistics.median(s for r in runs[c] for s in r["searches"][1:])}
               for c in CONTESTANTS}
        print(f"\n{scenario}: medians over {args.reps} reps")
        print(f"  {'':13s} {'whole script':>13s} {'a later search':>15s}")
        for c in CONTESTANTS:
            print(f"  {c:13s} {med[c]['wall']:11.2f} s {med[c]['later']:13.2f} s")
        for c in ("ours", "ours-no-park"):
            print(f"  ratio {c} / peer: whole script {med[c]['wall'] / med['peer']['wall']:.2f}, "
                  f"a later search {med[c]['later'] / med['peer']['later']:.2f}")
        print()
        out[scenario] = {"runs": runs, "medians": med}
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
