"""Fractional-GPU packing: N trials at 1/N of a device, together, against one trial alone.

Each trial is its own process, fenced the way the pipeline fences a trial with
``resources.gpu = 1/N`` (``pipeline.devices``): on the JAX backend through
``XLA_PYTHON_CLIENT_MEM_FRACTION``, on TensorFlow through a logical-device
``memory_limit``. Every trial trains the same small Keras MLP on synthetic data and
reports its peak device memory and its samples per second. The table shows each
trial's peak against its share, and the aggregate throughput of N packed trials
against one trial that has the whole device.

    KERAS_BACKEND=jax python benchmarks/gpu_packing.py --n 1 2 4   # on a GPU machine
    python benchmarks/gpu_packing.py --n 1 2 --cpu        # CPU-only smoke run (no fencing)

Needs Keras 3 with JAX or TensorFlow; not Ray (the lent GPU machine has no Ray).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def trial(fraction: float, steps: int, batch: int, cpu: bool) -> dict:
    """Runs in a child process: fence, train, measure."""
    sys.path.insert(0, str(ROOT))
    from pipeline.devices import jax_env

    backend = os.environ.get("KERAS_BACKEND", "tensorflow")  # KERAS_BACKEND=jax on a JAX-only machine
    if backend == "jax" and not cpu and fraction < 1:
        os.environ.update(jax_env(fraction))
    import keras
    import numpy as np

    if backend == "tensorflow" and not cpu:
        from pipeline.devices import configure

        configure(cpu=1, gpu=fraction)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch * 64, 512)).astype("float32")
    y = rng.integers(0, 10, size=len(x))
    model = keras.Sequential([keras.Input((512,)), keras.layers.Dense(2048, activation="relu"),
                              keras.layers.Dense(2048, activation="relu"), keras.layers.Dense(10)])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=batch, epochs=1, steps_per_epoch=5, verbose=0)  # warm-up/trace
    start = time.perf_counter()
    epochs = max(1, steps // 64)
    model.fit(x, y, batch_size=batch, epochs=epochs, verbose=0)
    elapsed = time.perf_counter() - start
    peak = None
    if not cpu and backend == "jax":
        import jax

        stats = jax.devices()[0].memory_stats() or {}
        peak = stats.get("peak_bytes_in_use")
    elif not cpu and backend == "tensorflow":
        import tensorflow as tf

        peak = tf.config.experimental.get_memory_info("GPU:0")["peak"]
    else:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"fraction": fraction, "samples_per_s": epochs * len(x) / elapsed, "peak_bytes": peak,
            "backend": backend}


def run_packed(n: int, args) -> list[dict]:
    cmd = [sys.executable, __file__, "--child", str(1 / n), "--steps", str(args.steps),
           "--batch", str(args.batch)] + (["--cpu"] if args.cpu else [])
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(n)]
    out = []
    for p in procs:
        stdout, _ = p.communicate(timeout=args.timeout)
        if p.returncode != 0:
            raise SystemExit(f"a trial at 1/{n} failed (exit {p.returncode})")
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--steps", type=int, default=640)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--cpu", action="store_true", help="no GPU: smoke-test the script")
    ap.add_argument("--timeout", type=int, default=600)
    ap.add_argument("--child", type=float, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        print(json.dumps(trial(args.child, args.steps, args.batch, args.cpu)))
        return 0
    total = None
    if not args.cpu:
        sys.path.insert(0, str(ROOT))
        from pipeline.devices import device_total_bytes

        total = device_total_bytes()
    baseline = None
    print(f"{'N':>3} {'share GiB':>10} {'peak GiB (max)':>15} {'within share':>13} "
          f"{'aggregate samples/s':>20} {'vs 1 trial':>11}")
    for n in args.n:
        rows = run_packed(n, args)
        agg = sum(r["samples_per_s"] for r in rows)
        baseline = baseline or (agg if n == 1 else None)
        peak = max(r["peak_bytes"] or 0 for r in rows)
        share = total / n if total else None
        within = "-" if share is None else ("yes" if peak <= share else "NO")
        print(f"{n:>3} {share / 2**30 if share else float('nan'):>10.2f} {peak / 2**30:>15.2f} "
              f"{within:>13} {agg:>20.0f} {agg / baseline if baseline else float('nan'):>11.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
