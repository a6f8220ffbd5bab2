"""KerasTuner front door with ``distribution_strategy=MultiWorkerMirroredStrategy``: each
trial runs on Ray Train workers (real Ray, real Keras, digits; no mocks)."""

from __future__ import annotations

import json
import os

import pytest

from pipeline.compat import keras_tuner as kt
from pipeline.compat._kt_strategy import multiworker as _multiworker

# multi-worker trials (~80 s): `make test-slow` (CI runs it too)
pytestmark = pytest.mark.slow


def _digits(n: int):
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.data[:n] / 16.0).astype("float32"), d.target[:n]


def _recording_build(log_file: str, driver: int):
    """A fixed model (no search); each build inside a trial's worker appends its pid, rank
    (TF_CONFIG's task index) and the strategy's replicas to ``log_file``."""

    def build(hp):
        import tensorflow as tf
        from tensorflow import keras

        if os.getpid() != driver:
            task = json.loads(os.environ.get("TF_CONFIG", "{}")).get("task", {})
            strategy = tf.distribute.get_strategy()
            with open(log_file, "a") as f:
                f.write(json.dumps({"pid": os.getpid(), "rank": task.get("index"),
                                    "strategy": type(strategy).__name__,
                                    "replicas": strategy.num_replicas_in_sync}) + "\n")
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((64,)),
                                  keras.layers.Dense(hp.Fixed("units", 16), activation="relu"),
                                  keras.layers.Dense(10, activation="softmax")])
        model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy",
                      metrics=["accuracy"])
        return model

    return build


def _search(tmp_path, name: str, **door) -> tuple[kt.Tuner, list[dict]]:
    log_file = tmp_path / f"{name}.jsonl"
    tuner = kt.RandomSearch(_recording_build(str(log_file), os.getpid()), objective="val_loss",
                            max_trials=1, seed=0, directory=str(tmp_path), project_name=name, **door)
    x, y = _digits(600)
    tuner.search(x[:400], y[:400], epochs=3, batch_size=32, validation_data=(x[400:], y[400:]),
                 verbose=0)
    return tuner, [json.loads(line) for line in log_file.read_text().splitlines()]


def _val_losses(tuner: kt.Tuner) -> list[float]:
    return [o.value[0] for o in tuner.oracle.get_best_trials(1)[0].metrics.get_history("val_loss")]


def test_kt_multiworker_trial_trains_on_two_workers_and_matches_one_worker(tmp_path, ray_session):
    """Two Train workers build the model under a 2-replica MultiWorkerMirroredStrategy; the
    trial's three epochs reach Tune like a one-worker trial's; the same search as a plain
    one-worker trial (same global batch) gives validation losses of the same order."""
    import tensorflow as tf

    tuner, builds = _search(tmp_path, "two", resources_per_trial={"workers": 2, "cpu": 0.5},
                            distribution_strategy=tf.distribute.MultiWorkerMirroredStrategy())
    assert tuner.resources["workers"] == 2
    assert len({b["pid"] for b in builds}) == 2 and {b["rank"] for b in builds} == {0, 1}
    assert {(b["strategy"], b["replicas"]) for b in builds} == {("CollectiveAllReduceStrategy", 2)}

    df = tuner.results.dataframe()
    assert list(df["status"]) == ["TERMINATED"]
    best = tuner.oracle.get_best_trials(1)[0]
    two = _val_losses(tuner)
    assert len(two) == 3 and best.score == min(two)
    row = tuner.results.histories[best.trial_id].iloc[-1]
    assert len(row["node_ids"]) == 2  # rank 0's metrics, every worker's node
    model = tuner.get_best_models(1)[0]
    x, y = _digits(600)
    assert model.evaluate(x[400:], y[400:], verbose=0)[0] == pytest.approx(two[-1], rel=0.05)

    one_worker, builds = _search(tmp_path, "one")
    assert {b["strategy"] for b in builds} == {"_DefaultDistributionStrategy"}
    one = _val_losses(one_worker)
    assert len(one) == 3
    assert all(0.5 < a / b < 2 for a, b in zip(two, one)), (two, one)
    assert two[-1] < two[0] and one[-1] < one[0]  # both learned


def test_kt_workers_without_multiworker_strategy_and_unsupported_combinations_refused(tmp_path):
    """'workers' needs MultiWorkerMirroredStrategy; what multi-worker trials cannot do
    (executions_per_trial > 1, a HyperModel.fit) is refused where the tuner is made."""
    import tensorflow as tf

    def never(hp):
        raise AssertionError("not built: refused before the space is discovered")

    for strategy in (None, tf.distribute.MirroredStrategy()):
        with pytest.raises(ValueError, match=r"^resources_per_trial: 'workers' .*MultiWorkerMirroredStrategy"):
            kt.RandomSearch(never, objective="val_loss", directory=str(tmp_path),
                            distribution_strategy=strategy,
                            resources_per_trial={"cpu": 1, "workers": 2})
    mwms = tf.distribute.MultiWorkerMirroredStrategy()
    assert _multiworker(mwms, {}) == 1  # no TF_CONFIG cluster, no 'workers': one worker
    with pytest.raises(ValueError, match=r"^executions_per_trial > 1 .*MultiWorkerMirroredStrategy"):
        kt.RandomSearch(never, objective="val_loss", directory=str(tmp_path),
                        executions_per_trial=2, distribution_strategy=mwms)

    class OwnFit(kt.HyperModel):
        def build(self, hp):
            raise AssertionError("not built")

        def fit(self, hp, model, *args, **kwargs):
            return model.fit(*args, **kwargs)

    with pytest.raises(ValueError, match=r"^a HyperModel with its own fit .*MultiWorkerMirroredStrategy"):
        kt.RandomSearch(OwnFit(), objective="val_loss", directory=str(tmp_path),
                        distribution_strategy=mwms, resources_per_trial={"workers": 2})
    assert not list(tmp_path.iterdir())  # nothing written
