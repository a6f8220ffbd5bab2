"""Throughput of one trial on 2 data-parallel workers vs 1 worker (``resources.workers``).

Starts a local multi-node cluster (:mod:`cluster.local`: a head without CPUs and two
1-CPU worker nodes) unless ``--address`` names one (with its token in the environment),
then runs the same trial twice through :func:`pipeline.runner.run`: 1 worker with batch
``2b``, and 2 workers with batch ``b`` each -- the same global batch, steps and data.
Each epoch's pure training time (``epoch_s``, from the first to the last batch plus the
validation pass, timed by :class:`EpochTimer` inside the workers) gives rows/s; the trial's
wall time includes starting the workers and Ray Train's report cadence as well.

    PYTHONPATH=$PWD nice .venv/bin/python benchmarks/multiworker.py [--units 256 --epochs 6]

What 2 CPUs can show: whether the 2-worker path runs and what its synchronisation costs.
Not what it gains: both "nodes" share the machine's 2 cores (plus the driver, Ray and the
other test runs), so 2 workers cannot compute faster than 1 worker with the whole machine;
speed-up needs nodes with their own cores (or GPUs).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import keras

ROOT = Path(__file__).resolve().parents[1]


class EpochTimer(keras.callbacks.Callback):
    """Adds ``epoch_s`` (seconds of this epoch's training and validation) to the epoch logs."""

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None:
            logs["epoch_s"] = time.perf_counter() - self._start


def _spec(out: Path, workers: int, batch: int, units: int, epochs: int) -> dict:
    return {
        "name": f"throughput-{workers}w",
        "data": {"source": "digits"},
        "model": {"builder": "mlp"},
        "space": {"units": {"type": "choice", "values": [units]}},
        "training": {"epochs": epochs, "batch_size": batch,
                     "callbacks": [{"factory": "benchmarks.multiworker:EpochTimer"}]},
        "objective": {"metric": "val_accuracy", "mode": "max"},
        "searcher": {"name": "random"},
        "resources": {"cpu": 1, "workers": workers},
        "search": {"trials": 1},
        "storage": str(out / "results"),
        "seed": 0,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--address", help="a running cluster (default: start a local one)")
    ap.add_argument("--units", type=int, default=256)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--batch", type=int, default=32, help="per-worker batch of the 2-worker run")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from cluster import local
    from pipeline.data import load_dataset
    from pipeline.runner import run
    from pipeline.spec import parse_spec

    out = Path(tempfile.mkdtemp(prefix="mw-bench-"))
    cluster = None
    if args.address is None:
        cluster = local.start(workers=2, cpus_per_worker=1, state_dir=out / "cluster", timeout_s=60)
        os.environ.update(cluster.env())
        os.environ["PYTHONPATH"] = str(ROOT)
    rows = {}
    try:
        for workers, batch in ((1, 2 * args.batch), (2, args.batch)):
            spec = parse_spec(_spec(out, workers, batch, args.units, args.epochs))
            n_train = len(load_dataset(spec.data, spec.seed).x_train)
            start = time.perf_counter()
            res = run(spec, address=args.address, progress=False)
            wall = time.perf_counter() - start
            (h,) = res.histories.values()
            steady = statistics.median(h["epoch_s"].iloc[1:])  # the first epoch traces the graphs
            rows[workers] = {"global_batch": batch * workers, "train_rows": n_train,
                             "epoch_s": round(steady, 3), "rows_per_s": round(n_train / steady),
                             "trial_wall_s": round(wall, 1),
                             "final_val_loss": round(float(h["val_loss"].iloc[-1]), 4),
                             "nodes": len(set(h["node_ids"].iloc[-1])) if "node_ids" in h else 1}
            print(json.dumps({"workers": workers, **rows[workers]}), flush=True)
    finally:
        if cluster is not None:
            local.stop(out / "cluster", timeout_s=20)
    print(f"2 workers / 1 worker throughput: {rows[2]['rows_per_s'] / rows[1]['rows_per_s']:.2f}x "
          f"(digits, mlp units={args.units}, global batch {2 * args.batch}, {args.epochs} epochs)")


if __name__ == "__main__":
    main()
