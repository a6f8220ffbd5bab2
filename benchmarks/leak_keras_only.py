"""The leak scenario (D) without Ray: N one-epoch Keras trials in this one process.

    .venv/bin/python benchmarks/leak_keras_only.py [--trials 80] [--numpy] [--thread-per-trial]

Same rows and model family as D (digits, Dense(units) with units cycling 32..512), the
pipeline's per-trial steps: ``clear_session``, seeded build, the pipeline's ``tf.data``
inputs (``--numpy``: Keras' own NumPy path), fit, ``model.save``, and the gradient-registry
release. ``--thread-per-trial`` runs each trial in a new thread, as Ray Tune's function
trainables do on a reused actor. Prints the process RSS after the first, 10th and last trial and the slope over
the second half: what the trial itself leaks, to set against D's reused Ray worker.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=80)
    ap.add_argument("--numpy", action="store_true", help="NumPy inputs instead of the pipeline's tf.data")
    ap.add_argument("--thread-per-trial", action="store_true",
                    help="each trial in a new thread (what Tune's function trainables do)")
    args = ap.parse_args(argv)

    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)  # as in a 1-CPU trial
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import keras

    from pipeline.data import load_dataset
    from pipeline.spec import DataSpec
    from pipeline.trainable import _released_graphs, fit_inputs

    data = load_dataset(DataSpec(source="digits", validation_fraction=0.2, test_fraction=0.0),
                        seed=0).for_trials()
    rss = []
    with tempfile.TemporaryDirectory() as tmp:
        def one_trial(i):
            keras.backend.clear_session()
            keras.utils.set_random_seed(0)
            model = keras.Sequential([keras.Input(data.input_shape), keras.layers.Flatten(),
                                      keras.layers.Dense(32 * (1 + i % 16), activation="relu"),
                                      keras.layers.Dense(data.num_classes, activation="softmax")])
            model.compile(optimizer=keras.optimizers.Adam(1e-3), metrics=["accuracy"],
                          loss="sparse_categorical_crossentropy")
            with _released_graphs():
                if args.numpy:
                    model.fit(data.x_train, data.y_train, batch_size=32, epochs=1, verbose=0,
                              validation_data=(data.x_val, data.y_val))
                else:
                    model.fit(**fit_inputs(data, 32, 0), epochs=1, verbose=0)
            model.save(os.path.join(tmp, "model.keras"))
            del model

        for i in range(args.trials):
            if args.thread_per_trial:
                t = threading.Thread(target=one_trial, args=(i,))
                t.start()
                t.join()
            else:
                one_trial(i)
            rss.append(rss_mb())
    half = rss[len(rss) // 2:]
    slope = float(np.polyfit(np.arange(len(half)), half, 1)[0]) if len(half) >= 3 else float("nan")
    where = "a new thread each" if args.thread_per_trial else "one thread"
    print(f"{'numpy' if args.numpy else 'tf.data'} inputs, {len(rss)} trials in one process ({where}): RSS first "
          f"{rss[0]:.0f} MB, 10th {rss[min(9, len(rss) - 1)]:.0f}, last {rss[-1]:.0f}, growth "
          f"{rss[-1] - rss[0]:+.0f} MB, {slope:+.3f} MB/trial (2nd half)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
