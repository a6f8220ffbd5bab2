"""Keras' training state built before the first trace in trial workers (pipeline.keras_build):
one trace of the train step per fit instead of two, and nothing else changes."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")


@pytest.fixture
def patched():
    """Runs a function with Keras as it ships and with the patch installed; restores Keras."""
    from keras.src.backend.tensorflow.trainer import TensorFlowTrainer

    from pipeline import keras_build
    from pipeline._patch import is_wrapped

    original = TensorFlowTrainer._maybe_symbolic_build
    if is_wrapped(TensorFlowTrainer, "_maybe_symbolic_build", keras_build._build_ahead):
        original = original.__wrapped__  # installed by an earlier test in this process

    def both(run):
        TensorFlowTrainer._maybe_symbolic_build = original
        try:
            shipped = run()
            keras_build.install()
            return shipped, run()
        finally:
            TensorFlowTrainer._maybe_symbolic_build = original

    return both


def _counted(model):
    """The model, counting how often its train step is traced."""
    traces = {"train": 0}
    step = model.train_step

    def train_step(data):
        traces["train"] += 1
        return step(data)

    model.train_step = train_step
    return model, traces


class SubclassedNet(keras.Model):  # layers built on first call, as a subclassed model's are
    def __init__(self):
        super().__init__()
        self.hidden = keras.layers.Dense(16, activation="relu")
        self.drop = keras.layers.Dropout(0.3)
        self.out = keras.layers.Dense(3)

    def call(self, x, training=None):
        return self.out(self.drop(self.hidden(x), training=training))


def _functional():
    x = keras.Input((6,))
    h = keras.layers.Dropout(0.3)(keras.layers.Dense(16, activation="relu")(x))
    return keras.Model(x, keras.layers.Dense(3)(h))


def _data():
    rng = np.random.default_rng(0)
    x = rng.random((130, 6))  # float64, as NumPy makes it; 130 rows: a partial last batch
    return x, (x[:, 0] * 3).astype("int64").clip(0, 2)


def _fit(make, inputs):
    def run():
        keras.backend.clear_session()
        keras.utils.set_random_seed(7)
        model, traces = _counted(make())
        model.compile(keras.optimizers.Adam(1e-2),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
        history = model.fit(**inputs(), epochs=3, verbose=0).history
        weights = [w.tolist() for w in model.get_weights()]
        return traces["train"], history, weights, model.evaluate(*_data(), verbose=0)
    return run


def test_arrays_fit_traces_once_with_the_same_results(patched):
    x, y = _data()
    shipped, ours = patched(_fit(_functional, lambda: {"x": x, "y": y, "batch_size": 32,
                                                       "validation_split": 0.2}))
    assert (shipped[0], ours[0]) == (2, 1)  # Keras as it ships traces the train step twice
    assert ours[1:] == shipped[1:]  # histories, weights, evaluation: identical


def test_dataset_fit_of_a_subclassed_model_traces_once_with_the_same_results(patched):
    x, y = _data()

    def inputs():
        data = tf.data.Dataset.from_tensor_slices((x.astype("float32"), y))
        return {"x": data.shuffle(130, seed=1).batch(32), "validation_data": data.take(40).batch(32)}

    shipped, ours = patched(_fit(SubclassedNet, inputs))
    assert (shipped[0], ours[0]) == (2, 1)
    assert ours[1:] == shipped[1:]


def test_a_generator_is_left_to_keras_and_loses_no_batch(patched):
    x, y = _data()
    seen = []

    def inputs():
        def batches():
            for i in range(0, 128, 32):
                seen.append(i)
                yield x[i:i + 32].astype("float32"), y[i:i + 32]
        seen.clear()
        return {"x": batches()}

    def run():
        result = _fit(_functional, inputs)()
        return result, list(seen)

    (shipped, shipped_seen), (ours, ours_seen) = patched(run)
    assert ours_seen == shipped_seen == [0, 32, 64, 96]
    assert ours == shipped  # traced as Keras does (twice) and the same


def test_every_trial_runs_with_it():
    from keras.src.backend.tensorflow.trainer import TensorFlowTrainer

    from pipeline import keras_build
    from pipeline._patch import is_wrapped
    from pipeline.trainable import trial_session

    with trial_session(cpu=1):
        assert is_wrapped(TensorFlowTrainer, "_maybe_symbolic_build", keras_build._build_ahead)
