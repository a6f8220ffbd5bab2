"""How long a local Ray takes to come up: the pipeline's lean start vs. Ray's own.

Each run is a fresh ``python`` process that imports Ray and starts a local Ray with the
arguments the pipeline uses (no dashboard, no idle workers for driver tasks, the trial
workers' setup hook), then runs one trivial task. ``ray`` is Ray's own start, which also
starts the autoscaler monitor and the dashboard server and waits for the latter;
``lean`` is the pipeline's (``cluster.connect._lean_head``), without them. Runs are
interleaved; prints each variant's median ``ray.init`` and first-task times and the ratio.

Run (on an otherwise idle machine)::

    .venv/bin/python benchmarks/ray_start.py [--reps 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_SCRIPT = """
import contextlib, json, sys, time
import ray
from cluster.connect import NO_DASHBOARD, NO_IDLE_WORKERS, _lean_head

lean = sys.argv[1] == "lean"
t0 = time.perf_counter()
with _lean_head() if lean else contextlib.nullcontext():
    ray.init(include_dashboard=False, logging_level="WARNING", **NO_DASHBOARD, **NO_IDLE_WORKERS,
             runtime_env={"worker_process_setup_hook": "cluster.prewarm.setup_worker"})
t1 = time.perf_counter()
ray.get(ray.remote(lambda: 1).remote())
t2 = time.perf_counter()
procs = sorted(ray._private.worker._global_node.all_processes)  # the process types it started
print(json.dumps({"init_s": t1 - t0, "first_task_s": t2 - t1, "head": procs}))
"""


def _run(variant: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run([sys.executable, "-c", _SCRIPT, variant], env=env,
                          capture_output=True, text=True, timeout=120, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    runs: dict[str, list[dict]] = {"ray": [], "lean": []}
    for _ in range(args.reps):
        for variant in runs:
            runs[variant].append(_run(variant))
    med = {v: {k: statistics.median(r[k] for r in rs) for k in ("init_s", "first_task_s")}
           for v, rs in runs.items()}
    for v, rs in runs.items():
        inits = ", ".join(f"{r['init_s']:.2f}" for r in rs)
        print(f"{v:5s} ray.init {med[v]['init_s']:.2f} s (runs: {inits}), first task "
              f"{med[v]['first_task_s']:.2f} s; started: {', '.join(rs[-1]['head'])}")
    print(f"lean / ray: ray.init {med['lean']['init_s'] / med['ray']['init_s']:.2f}")


if __name__ == "__main__":
    main()
