"""A small Optuna script as its user times it: plain Optuna vs. the door, Ray-backed and in-process.

Optuna's first example is an objective that takes microseconds (``(x - 2) ** 2``, 100
trials). Whole ``python script.py`` runs, interleaved, in a scratch folder each; the only
differences are the import line and, for the in-process variant, ``in_process=True`` in
``create_study``. Prints each variant's median wall time and its ratio to plain Optuna's.

Run (on an otherwise idle machine)::

    .venv/bin/python benchmarks/optuna_small.py [--reps 3] [--trials 100]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_SCRIPT = """{import_line}


def objective(trial):
    x = trial.suggest_float("x", -10, 10)
    return (x - 2) ** 2


study = optuna.create_study({kwargs})
study.optimize(objective, n_trials={trials})
print("BEST", study.best_value)
"""

VARIANTS = {
    "optuna": ("import optuna", ""),
    "door (Ray)": ("from pipeline.compat import optuna", ""),
    "door in_process": ("from pipeline.compat import optuna", "in_process=True"),
}


def run_once(variant: str, trials: int) -> float:
    import_line, kwargs = VARIANTS[variant]
    with tempfile.TemporaryDirectory(prefix="optuna-small-") as d:
        path = Path(d, "script.py")
        path.write_text(_SCRIPT.format(import_line=import_line, kwargs=kwargs, trials=trials))
        env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_TMPDIR": d}
        env.pop("RAY_ADDRESS", None)
        start = time.time()
        proc = subprocess.run([sys.executable, str(path)], cwd=d, env=env, capture_output=True,
                              text=True, timeout=600)
        wall = time.time() - start
        if proc.returncode != 0 or "BEST" not in proc.stdout:
            raise RuntimeError(f"{variant} failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
        return wall


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--trials", type=int, default=100)
    args = ap.parse_args(argv)
    walls: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for rep in range(args.reps):
        order = list(VARIANTS) if rep % 2 == 0 else list(reversed(VARIANTS))
        for v in order:
            walls[v].append(run_once(v, args.trials))
            print(f"  rep {rep + 1} {v:16s} {walls[v][-1]:6.2f} s", flush=True)
    peer = statistics.median(walls["optuna"])
    print(f"\n{'variant':16s} {'median s':>9s} {'ratio':>6s}  runs")
    for v, w in walls.items():
        med = statistics.median(w)
        print(f"{v:16s} {med:9.2f} {med / peer:6.2f}  {', '.join(f'{x:.2f}' for x in w)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
