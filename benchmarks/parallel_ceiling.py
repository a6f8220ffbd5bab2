"""How much two trials at once can gain on this machine: plain Keras, no Ray, no pipeline.

The front doors run trials side by side (one per CPU), where KerasTuner and Optuna run them
one after the other in one process. Their wall-time ratio can only go as low as the
machine lets two processes share it: this script times the same one-epoch ``fit`` (the
mnist1d MLP and CNN of ``front_doors.py``'s Hyperband and Optuna scenarios, batch 64) in
one process alone, then in two processes at once, and prints the throughput gained and
the lowest wall ratio that running two trials at once could reach for equal work
(alone / (2 x together)).

Run (on an otherwise idle machine)::

    .venv/bin/python benchmarks/parallel_ceiling.py
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

_CHILD = r'''
import json, os, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np
import keras
from mnist1d.data import get_dataset_args, make_dataset

args = get_dataset_args()
args.seed = 0
d = make_dataset(args)
x, y = d["x"].astype("float32"), d["y"].astype("int64")
xv, yv = d["x_test"].astype("float32"), d["y_test"].astype("int64")


def model_of(kind):
    inputs = keras.Input((40,))
    h = inputs
    if kind == "cnn":
        h = keras.layers.Reshape((40, 1))(h)
        for _ in range(2):
            h = keras.layers.Conv1D(32, 5, padding="same", activation="relu")(h)
            h = keras.layers.MaxPooling1D(2)(h)
        h = keras.layers.Flatten()(h)
    else:
        for _ in range(2):
            h = keras.layers.Dense(128, activation="relu")(h)
    out = keras.layers.Dense(10, activation="softmax")(h)
    m = keras.Model(inputs, out)
    m.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return m


out = {}
for kind in ("mlp", "cnn"):
    keras.backend.clear_session()
    m = model_of(kind)
    m.fit(x, y, batch_size=64, epochs=1, verbose=0, validation_data=(xv, yv))  # traced once
    with open(sys.argv[1], "a") as f:  # ready: the parent starts timing when all are
        f.write(kind + "\n")
    while len(open(sys.argv[1]).read().split()) < int(sys.argv[2]) * (1 + (kind == "cnn")):
        time.sleep(0.01)
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(int(sys.argv[3])):
        m.fit(x, y, batch_size=64, epochs=1, verbose=0, validation_data=(xv, yv))
    n = int(sys.argv[3])
    out[kind] = {"wall": (time.perf_counter() - t0) / n, "cpu": (time.process_time() - c0) / n}
print(json.dumps(out))
'''


def run(processes: int, epochs: int, folder: str) -> list[dict]:
    barrier = os.path.join(folder, f"ready-{processes}.txt")
    open(barrier, "w").close()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    procs = [subprocess.Popen([sys.executable, "-c", _CHILD, barrier, str(processes), str(epochs)],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
             for _ in range(processes)]
    return [json.loads(p.communicate(timeout=900)[0].strip().splitlines()[-1]) for p in procs]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=8, help="timed epochs per model and process")
    args = ap.parse_args(argv)
    import tempfile

    with tempfile.TemporaryDirectory(prefix="ceiling-") as folder:
        start = time.time()
        alone = run(1, args.epochs, folder)[0]
        together = run(2, args.epochs, folder)
    print(f"{'model':5s} {'alone s/epoch':>13s} {'CPUs used':>9s} {'2 at once s/epoch':>17s} "
          f"{'CPUs each':>9s} {'throughput':>10s} {'lowest ratio':>12s}")
    for kind in ("mlp", "cnn"):
        both = sum(t[kind]["wall"] for t in together) / 2
        share = sum(t[kind]["cpu"] / t[kind]["wall"] for t in together) / 2
        gain = 2 * alone[kind]["wall"] / both
        used = alone[kind]["cpu"] / alone[kind]["wall"]
        print(f"{kind:5s} {alone[kind]['wall']:13.3f} {used:9.2f} {both:17.3f} {share:9.2f} "
              f"{gain:9.2f}x {1 / gain:12.2f}")
    print(f"({len(os.sched_getaffinity(0))} CPUs, load before {os.getloadavg()[0]:.2f}, "
          f"{time.time() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
