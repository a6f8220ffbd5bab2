"""The front doors as users time them: whole ``python script.py`` runs, peer vs. pipeline.

Each scenario is one user script whose only difference between the two contestants is
the import line (``import keras_tuner as kt`` vs ``from pipeline.compat import
keras_tuner as kt``; ``import optuna`` vs ``from pipeline.compat import optuna``).
Every run is a fresh process in a scratch folder; imports, Ray start-up and data
preparation are all inside the measured wall time. The KerasTuner scripts follow the seed
document's order (build function, tuner, data, ``search``); the Optuna script prepares
its data first and creates the study just before ``optimize``. Repetitions are interleaved
(peer, pipeline, pipeline, peer, ...) and figures are medians.

The scripts write marks to ``$FRONT_DOOR_MARKS`` (harness only, the same in both
variants): when ``search()``/``optimize()`` is called, and when each epoch of a trial ends.
From them: time from the call to the first finished epoch, and the epochs and trials
trained (the work each contestant's early stopping left to do).

Run (on an otherwise idle machine)::

    .venv/bin/python benchmarks/front_doors.py                  # all three, 3 reps
    .venv/bin/python benchmarks/front_doors.py --only kt_random --reps 1
    .venv/bin/python benchmarks/front_doors.py --show kt_random  # print the user script

Targets (issue 14): kt_random <= 0.6x KerasTuner's wall; kt_hyperband <= 0.5x at >=
its best val accuracy; optuna <= 0.5x at >= its best; first epoch <= 5 s after the call.
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

_MARK = '''
import os, time
def _mark(what):
    with open(os.environ["FRONT_DOOR_MARKS"], "a") as f:
        f.write(f"{what} {time.time()}\\n")
'''

_MARK_CALLBACK = '''
class FirstEpoch(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        _mark("first_epoch" if epoch == 0 else "epoch")
'''

KT_RANDOM = '''{import_line}
import keras
from sklearn.datasets import load_digits
''' + _MARK + _MARK_CALLBACK + '''

def build_model(hp):
    model = keras.Sequential([
        keras.Input((64,)),
        keras.layers.Dense(hp.Choice("units", [128, 256]), activation="relu"),
        keras.layers.Dense(10, activation="softmax"),
    ])
    lr = hp.Float("lr", 1e-4, 1e-1, sampling="log")
    model.compile(optimizer=keras.optimizers.Adam(lr), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


tuner = kt.RandomSearch(build_model, objective="val_accuracy", max_trials=20, seed=1,
                        directory="kt", project_name="random", overwrite=True)
digits = load_digits()
x, y = digits.data / 16.0, digits.target
x_train, y_train, x_val, y_val = x[:1438], y[:1438], x[1438:], y[1438:]
_mark("search")
tuner.search(x_train, y_train, epochs=10, validation_data=(x_val, y_val), verbose=0,
             callbacks=[FirstEpoch()])
best = tuner.oracle.get_best_trials(1)[0] if hasattr(tuner, "oracle") else None
score = best.score if best is not None else float(tuner.results.leaderboard(1)["val_accuracy"].iloc[0])
print("BEST", score)
'''

_MNIST1D = '''
from mnist1d.data import get_dataset_args, make_dataset
args = get_dataset_args()
args.seed = 0
d = make_dataset(args)
x_train, y_train = d["x"].astype("float32"), d["y"].astype("int64")
x_val, y_val = d["x_test"].astype("float32"), d["y_test"].astype("int64")
'''

_MNIST1D_MODEL = '''
def make_model(kind, width, depth, dropout, lr):
    inputs = keras.Input((40,))
    h = inputs
    if kind == "cnn":
        h = keras.layers.Reshape((40, 1))(h)
        for i in range(depth):
            h = keras.layers.Conv1D(width // 4, 5, padding="same", activation="relu")(h)
            h = keras.layers.MaxPooling1D(2)(h)
        h = keras.layers.Flatten()(h)
    else:
        for i in range(depth):
            h = keras.layers.Dense(width, activation="relu")(h)
    h = keras.layers.Dropout(dropout)(h)
    outputs = keras.layers.Dense(10, activation="softmax")(h)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(lr), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model
'''

KT_HYPERBAND = '''{import_line}
import keras
''' + _MARK + _MARK_CALLBACK + _MNIST1D_MODEL + '''

def build_model(hp):
    return make_model(hp.Choice("kind", ["mlp", "cnn"]), hp.Int("width", 32, 256, step=32),
                      hp.Int("depth", 1, 3), hp.Float("dropout", 0.0, 0.5),
                      hp.Float("lr", 1e-4, 1e-2, sampling="log"))


tuner = kt.Hyperband(build_model, objective="val_accuracy", max_epochs=15, factor=3, seed=1,
                     directory="kt", project_name="hyperband", overwrite=True)
''' + _MNIST1D + '''
_mark("search")
tuner.search(x_train, y_train, validation_data=(x_val, y_val), batch_size=64, verbose=0,
             callbacks=[FirstEpoch()])
best = tuner.oracle.get_best_trials(1)[0] if hasattr(tuner, "oracle") else None
score = best.score if best is not None else float(tuner.results.leaderboard(1)["val_accuracy"].iloc[0])
print("BEST", score)
'''

OPTUNA = '''{import_line}
import keras
''' + _MARK + _MARK_CALLBACK + _MNIST1D + _MNIST1D_MODEL + '''
EPOCHS = 15


def objective(trial):
    kind = trial.suggest_categorical("kind", ["mlp", "cnn"])
    width = trial.suggest_int("width", 32, 256, step=32)
    depth = trial.suggest_int("depth", 1, 3)
    dropout = trial.suggest_float("dropout", 0.0, 0.5)
    lr = trial.suggest_float("lr", 1e-4, 1e-2, log=True)
    keras.backend.clear_session()
    model = make_model(kind, width, depth, dropout, lr)
    best = 0.0
    for epoch in range(EPOCHS):
        hist = model.fit(x_train, y_train, batch_size=64, epochs=1, verbose=0,
                         validation_data=(x_val, y_val))
        _mark("first_epoch" if epoch == 0 else "epoch")
        acc = hist.history["val_accuracy"][-1]
        best = max(best, acc)
        trial.report(acc, epoch)
        if trial.should_prune():
            raise optuna.TrialPruned()
    return best


optuna.logging.set_verbosity(optuna.logging.WARNING)
study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=1),
                            pruner=optuna.pruners.HyperbandPruner(min_resource=1,
                                                                  max_resource=EPOCHS,
                                                                  reduction_factor=3))
_mark("search")
study.optimize(objective, n_trials=40)
print("BEST", study.best_value)
'''

SCENARIOS = {
    "kt_random": (KT_RANDOM, "import keras_tuner as kt",
                  "from pipeline.compat import keras_tuner as kt", 0.6),
    "kt_hyperband": (KT_HYPERBAND, "import keras_tuner as kt",
                     "from pipeline.compat import keras_tuner as kt", 0.5),
    "optuna": (OPTUNA, "import optuna", "from pipeline.compat import optuna", 0.5),
}


def script(scenario: str, who: str) -> str:
    template, peer, ours, _ = SCENARIOS[scenario]
    return template.replace("{import_line}", peer if who == "peer" else ours)


def run_once(scenario: str, who: str, timeout: float) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"fd-{scenario}-{who}-") as d:
        path = Path(d, "script.py")
        path.write_text(script(scenario, who))
        marks = Path(d, "marks.txt")
        env = {**os.environ, "FRONT_DOOR_MARKS": str(marks), "PYTHONPATH": str(ROOT),
               "TF_CPP_MIN_LOG_LEVEL": "2", "RAY_TMPDIR": d}
        env.pop("RAY_ADDRESS", None)
        load = os.getloadavg()[0]
        start = time.time()
        proc = subprocess.run([sys.executable, str(path)], cwd=d, env=env, capture_output=True,
                              text=True, timeout=timeout)
        wall = time.time() - start
        out = proc.stdout + proc.stderr
        if proc.returncode != 0:
            Path(ROOT, "benchmarks", "out").mkdir(parents=True, exist_ok=True)
            log = Path(ROOT, "benchmarks", "out", f"front-{scenario}-{who}.log")
            log.write_text(out)
            raise RuntimeError(f"{scenario}/{who} failed (exit {proc.returncode}); see {log}")
        best = float([ln for ln in proc.stdout.splitlines() if ln.startswith("BEST ")][-1].split()[1])
        lines = [ln.split() for ln in marks.read_text().splitlines()] if marks.exists() else []
        called = min((float(t) for w, t in lines if w == "search"), default=float("nan"))
        first = min((float(t) for w, t in lines if w == "first_epoch"), default=float("nan"))
        epochs = sum(w in ("first_epoch", "epoch") for w, _ in lines)
        return {"wall_s": wall, "best": best, "first_epoch_s": first - called,
                "to_call_s": called - start, "loadavg_before": load,
                "trials": sum(w == "first_epoch" for w, _ in lines), "epochs": epochs}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default=",".join(SCENARIOS), help="comma-separated scenarios")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=1200)
    ap.add_argument("--show", metavar="SCENARIO", help="print the pipeline variant's script")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "front_doors.json"))
    args = ap.parse_args(argv)
    if args.show:
        print(script(args.show, "ours"))
        return 0
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(chosen) - set(SCENARIOS)
    if unknown:
        ap.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    runs: dict[str, dict[str, list[dict]]] = {s: {"peer": [], "ours": []} for s in chosen}
    for rep in range(args.reps):
        for s in chosen:
            order = ("peer", "ours") if rep % 2 == 0 else ("ours", "peer")
            for who in order:
                r = run_once(s, who, args.timeout)
                runs[s][who].append(r)
                print(f"  {s:13s} {who:5s} rep {rep + 1}: wall {r['wall_s']:6.1f} s, best "
                      f"{r['best']:.4f}, first epoch {r['first_epoch_s']:5.1f} s after the call, "
                      f"{r['epochs']} epochs in {r['trials']} trials "
                      f"(load {r['loadavg_before']:.2f})", flush=True)
    print()
    print(f"{'scenario':13s} {'peer s':>8s} {'ours s':>8s} {'ratio':>6s} {'target':>6s} "
          f"{'peer best':>9s} {'ours best':>9s} {'1st epoch':>9s}")
    failed = False
    summary = {}
    for s in chosen:
        med = {who: {k: statistics.median(r[k] for r in runs[s][who])
                     for k in ("wall_s", "best", "first_epoch_s")} for who in ("peer", "ours")}
        ratio = med["ours"]["wall_s"] / med["peer"]["wall_s"]
        target = SCENARIOS[s][3]
        ok = ratio <= target and (s == "kt_random" or med["ours"]["best"] >= med["peer"]["best"])
        ok = ok and med["ours"]["first_epoch_s"] <= 5.0
        failed |= not ok
        summary[s] = {"median": med, "ratio": ratio, "target": target, "met": ok, "runs": runs[s]}
        print(f"{s:13s} {med['peer']['wall_s']:8.1f} {med['ours']['wall_s']:8.1f} {ratio:6.2f} "
              f"{target:6.2f} {med['peer']['best']:9.4f} {med['ours']['best']:9.4f} "
              f"{med['ours']['first_epoch_s']:8.1f}s  {'met' if ok else 'NOT MET'}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
