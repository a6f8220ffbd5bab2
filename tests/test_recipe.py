"""The whole training recipe is searchable: architecture, training, regularization and
feature engineering, each checked in the model a real trial built and checkpointed."""

from __future__ import annotations

import math
import warnings

import keras
import numpy as np
import pytest
from sklearn.feature_selection import f_classif

import pipeline
import pipeline.preprocessing as pre  # registers the custom layers before loading checkpoints
from pipeline.data import load_dataset
from pipeline.hyperparameters import check_hyperparameters
from pipeline.models import build_model
from tests.conftest import ROOT, tiny_spec

EPOCHS = 2
SPACE = {
    "builder": {"type": "choice", "values": ["mlp", "cnn"]},
    "layers": {"type": "int", "low": 1, "high": 3},
    "units_1": {"type": "choice", "values": [16, 32]},
    "units_2": {"type": "choice", "values": [8, 16], "when": {"layers": [2, 3]}},
    "units_3": {"type": "choice", "values": [8], "when": {"layers": [3]}},
    "activation": {"type": "choice", "values": ["relu", "tanh"]},
    "optimizer": {"type": "choice", "values": ["adam", "adamw", "sgd", "rmsprop"]},
    "momentum": {"type": "float", "low": 0.5, "high": 0.95, "when": {"optimizer": ["sgd"]}},
    "learning_rate": {"type": "float", "low": 1e-3, "high": 0.1, "log": True},
    "lr_schedule": {"type": "choice", "values": ["constant", "cosine", "step"]},
    "lr_step_epochs": {"type": "int", "low": 1, "high": 2, "when": {"lr_schedule": ["step"]}},
    "batch_size": {"type": "choice", "values": [16, 32, 64]},
    "dropout": {"type": "choice", "values": [0.0, 0.2]},
    "l2": {"type": "choice", "values": [0.0, 1e-3]},
    "batchnorm": {"type": "bool"},
    "scaling": {"type": "choice", "values": ["none", "standard", "minmax"]},
    "select_k": {"type": "choice", "values": [0, 20]},
    "noise_std": {"type": "choice", "values": [0.0, 0.1]},
    "shift": {"type": "choice", "values": [0.0, 0.125]},
    "flip": {"type": "choice", "values": [False, "horizontal"]},
}
BASE = {"builder": "mlp", "activation": "relu", "dropout": 0.0, "l2": 0.0, "batchnorm": False,
        "scaling": "none", "select_k": 0, "noise_std": 0.0, "shift": 0.0, "flip": False}
POINTS = {
    "deep": {**BASE, "layers": 3, "units_1": 32, "units_2": 16, "units_3": 8, "activation": "tanh",
             "optimizer": "sgd", "momentum": 0.8, "learning_rate": 0.05, "lr_schedule": "step",
             "lr_step_epochs": 1, "batch_size": 16, "dropout": 0.2, "l2": 1e-3, "batchnorm": True,
             "scaling": "standard", "select_k": 20},
    "shallow": {**BASE, "layers": 1, "units_1": 16, "optimizer": "adamw", "learning_rate": 0.01,
                "lr_schedule": "cosine", "batch_size": 64, "scaling": "minmax"},
    "plain": {**BASE, "layers": 2, "units_1": 16, "units_2": 8, "optimizer": "rmsprop",
              "learning_rate": 0.003, "lr_schedule": "constant", "batch_size": 32},
    "augmented": {**BASE, "builder": "cnn", "layers": 1, "units_1": 16, "optimizer": "adam",
                  "learning_rate": 0.01, "lr_schedule": "constant", "batch_size": 32,
                  "noise_std": 0.1, "shift": 0.125, "flip": "horizontal"},
}


@pytest.fixture(scope="module")
def trials(ray_session, tmp_path_factory):
    """One real run over the four recipes above: {point name: (config, model, results)}."""
    tmp = tmp_path_factory.mktemp("recipe")
    raw = tiny_spec(tmp, space=SPACE, searcher={"name": "manual", "points_to_evaluate": list(POINTS.values())},
                    model={"builder": "mlp", "options": {"conv_layers": 1, "filters": 8, "dense_units": 16}},
                    training={"epochs": EPOCHS})
    res = pipeline.run(raw, progress=False)
    assert set(res.dataframe()["status"]) == {"TERMINATED"}, res.dataframe()["error"].tolist()
    out = {}
    for trial in res._analysis.trials:
        name = next(n for n, p in POINTS.items() if all(trial.config.get(k) == v for k, v in p.items()))
        with res._analysis.get_last_checkpoint(trial).as_directory() as d:
            out[name] = (trial.config, keras.models.load_model(f"{d}/model.keras"), res)
    assert set(out) == set(POINTS)
    return out


@pytest.fixture(scope="module")
def data():
    raw = tiny_spec(ROOT)
    return load_dataset(pipeline.parse_spec(raw).data, 0)


def _layers(model, cls):
    return [layer for layer in model.layers if isinstance(layer, cls)]


def test_architecture_depth_widths_activation(trials):
    for name in ("deep", "shallow", "plain"):
        cfg, model, _ = trials[name]
        hidden = [layer for layer in model.layers if layer.name.startswith("dense_")]
        assert [d.units for d in hidden] == [cfg[f"units_{i}"] for i in range(1, cfg["layers"] + 1)]
        acts = {layer.activation.__name__ for layer in _layers(model, keras.layers.Activation)}
        assert acts == {cfg["activation"]}, name
    conv = _layers(trials["augmented"][1], keras.layers.Conv2D)
    assert [c.filters for c in conv] == [8]  # cnn, with the fixed model.options


def test_training_optimizer_schedule_batch_size(trials, data):
    expected = {"deep": "SGD", "shallow": "AdamW", "plain": "RMSprop", "augmented": "Adam"}
    for name, (cfg, model, _) in trials.items():
        opt = model.optimizer
        assert type(opt).__name__ == expected[name]
        steps = math.ceil(len(data.x_train) / cfg["batch_size"])
        assert int(opt.iterations) == EPOCHS * steps, name  # the searched batch size was used
    opt = trials["deep"][1].optimizer
    assert float(opt.momentum) == pytest.approx(0.8)
    schedule = opt._learning_rate
    assert isinstance(schedule, keras.optimizers.schedules.ExponentialDecay) and schedule.staircase
    assert schedule.decay_steps == math.ceil(len(data.x_train) / 16)  # one epoch
    assert float(opt.learning_rate) == pytest.approx(0.05 * 0.5 ** EPOCHS)  # halved each epoch
    cosine = trials["shallow"][1].optimizer._learning_rate
    assert isinstance(cosine, keras.optimizers.schedules.CosineDecay)
    assert cosine.decay_steps == EPOCHS * math.ceil(len(data.x_train) / 64)
    assert float(trials["plain"][1].optimizer.learning_rate) == pytest.approx(0.003)


def test_regularization_dropout_l2_batchnorm(trials):
    cfg, model, _ = trials["deep"]
    hidden = [layer for layer in model.layers if layer.name.startswith("dense_")]
    assert all(isinstance(d.kernel_regularizer, keras.regularizers.L2) for d in hidden)
    assert all(float(d.kernel_regularizer.l2) == pytest.approx(1e-3) for d in hidden)
    assert len(_layers(model, keras.layers.BatchNormalization)) == cfg["layers"]
    assert [d.rate for d in _layers(model, keras.layers.Dropout)] == [0.2] * cfg["layers"]
    _, plain, _ = trials["plain"]
    assert all(layer.kernel_regularizer is None for layer in _layers(plain, keras.layers.Dense))
    assert not _layers(plain, keras.layers.BatchNormalization)
    assert not _layers(plain, keras.layers.Dropout)


def test_scaling_and_selection_are_fitted_on_the_training_split_only(trials, data):
    x_all = np.concatenate([data.x_train, data.x_val, data.x_test])
    _, model, _ = trials["deep"]
    (norm,) = _layers(model, keras.layers.Normalization)
    mean = np.asarray(norm.mean).reshape(data.input_shape)
    assert np.allclose(mean, data.x_train.mean(axis=0), atol=1e-6)
    assert not np.allclose(mean, x_all.mean(axis=0), atol=1e-3), "scaler saw more than the training split"
    (sel,) = _layers(model, pre.SelectFeatures)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant pixels
        scores, _ = f_classif(data.x_train.reshape(len(data.x_train), -1), data.y_train)
    best = sorted(np.argsort(np.nan_to_num(scores, nan=-np.inf), kind="mergesort")[-20:].tolist())
    assert sel.indices == best
    assert sel.get_config()["indices"] == best  # in the saved config, not recomputed
    (minmax,) = _layers(trials["shallow"][1], keras.layers.Normalization)
    assert np.allclose(np.asarray(minmax.mean).reshape(data.input_shape), data.x_train.min(axis=0))
    assert not _layers(trials["plain"][1], keras.layers.Normalization)


def test_augmentation_layers_train_only(trials, data):
    _, model, res = trials["augmented"]
    (noise,) = _layers(model, keras.layers.GaussianNoise)
    (shift,) = _layers(model, keras.layers.RandomTranslation)
    (flip,) = _layers(model, keras.layers.RandomFlip)
    assert noise.stddev == pytest.approx(0.1) and shift.height_factor == pytest.approx(0.125)
    assert flip.mode == "horizontal"
    x = data.x_val[:16]
    # inactive at inference: deterministic and equal to the un-augmented forward pass
    assert np.allclose(model.predict(x, verbose=0), model.predict(x, verbose=0))
    noisy = [keras.ops.convert_to_numpy(model(x, training=True)) for _ in range(2)]
    assert not np.allclose(*noisy)
    # the best model comes back with its preprocessing from the stored results
    best = res.best_model()
    assert best.predict(x, verbose=0).shape == (16, data.num_classes)


def test_one_dimensional_signal_augmentation_and_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(48, 40)).astype("float32"), rng.integers(0, 3, 48)
    hp = {"shift": 0.1, "flip": True, "noise_std": 0.05, "scaling": "standard", "conv_layers": 1}
    model = build_model("cnn", hp, (40,), 3, x_train=x, y_train=y)
    (roll,) = _layers(model, pre.RandomRoll1D)
    rolled = keras.ops.convert_to_numpy(roll(x, training=True))
    assert not np.allclose(rolled, x)
    assert np.allclose(np.sort(rolled, axis=1), np.sort(x, axis=1))  # a circular shift keeps values
    assert np.allclose(keras.ops.convert_to_numpy(roll(x, training=False)), x)
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=1, verbose=0)
    model.save(tmp_path / "m.keras")
    back = keras.models.load_model(tmp_path / "m.keras")
    assert np.allclose(back.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)


def test_builder_gets_the_training_split_only_when_it_asks():
    seen = {}

    def wants(hp, input_shape, x_train, y_train):
        seen.update(x=x_train, y=y_train)
        return "built"

    def plain(hp, input_shape, num_classes):
        return "built"

    x, y = np.zeros((4, 3)), np.zeros(4)
    assert build_model(wants, {}, (3,), 2, x_train=x, y_train=y) == "built"
    assert seen["x"] is x and seen["y"] is y
    assert build_model(plain, {}, (3,), 2, x_train=x, y_train=y) == "built"
    with pytest.raises(ValueError, match="select_k"):
        build_model("cnn", {"select_k": 5}, (8, 8), 10, x_train=np.zeros((4, 8, 8)))


def test_recipe_example_searches_every_category():
    spec = pipeline.load_spec(ROOT / "examples" / "recipe.yaml")
    names = set(spec.space)
    assert {"layers", "units_2", "activation"} <= names  # architecture
    assert {"optimizer", "momentum", "learning_rate", "lr_schedule", "batch_size"} <= names  # training
    assert {"dropout", "l2", "batchnorm"} <= names  # regularization
    assert {"scaling", "select_k"} <= names  # feature engineering
    assert spec.space["momentum"]["when"] == {"optimizer": ["sgd"]}
    values = {n: p.grid_values() for n, p in spec.search_space().params.items()
              if n in ("lr_schedule", "scaling", "select_k")}
    assert check_hyperparameters(values, ["mlp"]) == []
    assert check_hyperparameters({"lr_schedule": ["linear"], "flip": ["diagonal"]}) == [
        "lr_schedule: unknown value 'linear' (known: constant, cosine, step, exponential)",
        "flip: unknown value 'diagonal' (known: false, true, horizontal, vertical, "
        "horizontal_and_vertical)"]


def test_digits_source_is_scikit_learns_digits_read_without_importing_it():
    import subprocess
    import sys

    from sklearn.datasets import load_digits

    from pipeline.data import SOURCES

    x, y = SOURCES["digits"](None, 0)
    ref = load_digits()
    assert x.dtype == np.float32 and x.shape == (1797, 8, 8)
    assert np.array_equal(x, (ref.images / 16.0).astype("float32"))
    assert np.array_equal(y, ref.target)
    # the driver loads it before the first trial starts: importing scikit-learn costs ~2 s
    code = ("import sys; from pipeline.data import SOURCES; SOURCES['digits'](None, 0); "
            "print('sklearn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
