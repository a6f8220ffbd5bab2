"""KerasTuner door: behaviours KerasTuner's own tests (engine/tuner_test.py, tuners/*_test.py)
use through the public API: several tuners in one process, oracle objects, run_trial."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.checkpoints import load_weights_into
from pipeline.compat import keras_tuner as kt
from tests.models import Scale, ScaledNet, scaled_kt_build, tiny_kt_build

ROOT = Path(__file__).resolve().parents[1]


_build = tiny_kt_build  # one small build function for the KerasTuner door tests


def _data(n=24):
    rng = np.random.default_rng(0)
    return rng.random((n, 3)).astype("float32"), rng.integers(0, 2, n)


@pytest.mark.slow  # a script starting Ray of its own twice, ~60 s
def test_a_second_tuner_made_before_the_first_searched_takes_its_ray_start_over(tmp_path):
    """A script (own Ray, no fixture) makes a tuner, then another that it searches first: the
    first one's Ray start is the second's (two starts under way called ray.init twice:
    'Perhaps you called ray.init twice by accident?'); the first searches on a Ray of its own."""
    script = tmp_path / "script.py"
    script.write_text(
        "import numpy as np\n"
                "from pipeline.compat import keras_tuner as kt\n"
        "import keras\n"
        "def build(hp):\n"
        "    m = keras.Sequential([keras.Input((3,)), keras.layers.Dense(hp.Int('u', 2, 3)),\n"
        "                          keras.layers.Dense(1)])\n"
        "    m.compile('adam', 'mse')\n"
        "    return m\n"
        "first = kt.RandomSearch(build, objective='loss', max_trials=1, project_name='a')\n"
        "second = kt.RandomSearch(build, objective='loss', max_trials=1, project_name='b')\n"
        "x = np.zeros((8, 3), 'float32'); y = np.zeros((8, 1), 'float32')\n"
        "second.search(x, y, epochs=1, verbose=0)\n"
        "print('trials:', len(second.oracle.trials))\n"
        "first.search(x, y, epochs=1, verbose=0)\n"
        "print('trials:', len(first.oracle.trials))\n")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("trials: 1") == 2


def test_oracle_objects_stand_for_their_tuners_search(tmp_path, ray_session):
    """kt.Tuner(oracle=kt.oracles.XOracle(...)) searches as kt.X with the oracle's arguments;
    each tuner's oracle is of its class; what cannot be searched is refused, never ignored."""
    bo = kt.Tuner(oracle=kt.oracles.BayesianOptimizationOracle(
        objective="val_loss", max_trials=3, num_initial_points=2, seed=5), hypermodel=_build,
        directory=tmp_path)
    assert isinstance(bo.oracle, kt.oracles.BayesianOptimizationOracle)
    assert (bo.searcher in ("gp", "tpe"), bo.searcher_options, bo.max_trials, bo.seed) == (
        True, {"n_startup_trials": 2}, 3, 5)
    assert bo.oracle.objective == kt.Objective("val_loss", "min")
    hb = kt.Tuner(kt.oracles.HyperbandOracle(objective="loss", max_epochs=9, factor=3), _build,
                  directory=tmp_path)  # KerasTuner's positional order: Tuner(oracle, hypermodel)
    assert (hb.scheduler, hb.scheduler_options["reduction_factor"], hb._epochs(1)) == ("asha", 3, 9)
    assert hb._trials() == kt.Hyperband(_build, objective="loss", max_epochs=9, factor=3,
                                        directory=tmp_path)._trials()
    grid = kt.Tuner(oracle=kt.oracles.GridSearchOracle(objective="loss"), hypermodel=_build,
                    directory=tmp_path)
    assert (grid.searcher, grid._trials()) == ("grid", None)
    assert isinstance(kt.BayesianOptimization(_build, objective="loss", directory=tmp_path).oracle,
                      kt.oracles.BayesianOptimizationOracle)
    assert kt.tuners.RandomSearch is kt.RandomSearch

    class Custom(kt.oracles.RandomSearchOracle):
        def populate_space(self, trial_id):
            return {"values": {}, "status": "RUNNING"}

    with pytest.raises(NotImplementedError, match="Custom overrides populate_space"):
        kt.Tuner(oracle=Custom(objective="loss"), hypermodel=_build, directory=tmp_path)
    with pytest.raises(NotImplementedError, match="samples no trials of its own"):
        kt.Tuner(oracle=kt.Oracle(objective="loss"), hypermodel=_build, directory=tmp_path)
    with pytest.raises(ValueError, match="Expected `oracle` argument to be an instance of `Oracle`"):
        kt.Tuner(oracle="invalid", hypermodel=_build, directory=tmp_path)
    with pytest.raises(TypeError, match="RandomSearch makes its own oracle"):
        kt.RandomSearch(_build, oracle=kt.oracles.RandomSearchOracle(), directory=tmp_path)
    with pytest.raises(ValueError, match="factor needs to be a int larger than 1"):
        kt.oracles.HyperbandOracle(objective="loss", factor=1)
    with pytest.raises(ValueError, match="tune_new_entries=False"):
        kt.RandomSearch(_build, objective="loss", tune_new_entries=False, directory=tmp_path)
    assert not list(tmp_path.iterdir())


def test_a_tuner_given_an_oracle_searches_with_it(tmp_path, ray_session):
    oracle = kt.oracles.RandomSearchOracle(objective="val_accuracy", max_trials=2, seed=7)
    tuner = kt.Tuner(oracle=oracle, hypermodel=_build, directory=tmp_path)
    x, y = _data()
    tuner.search(x, y, epochs=1, validation_split=0.25, verbose=0)
    assert tuner.oracle is oracle  # the one given, showing the trials, as in KerasTuner
    assert len(oracle.trials) == 2 and tuner.seed == 7
    assert tuner.results.spec.searcher.name == "optuna-random"
    assert tuner.results.spec.objective.metrics == ["val_accuracy"]
    best = oracle.get_best_trials(1)[0]
    assert best.status == "COMPLETED" and 0.0 <= best.score <= 1.0


class _Grid(kt.GridSearch):
    """The space is declared in run_trial alone (no hypermodel), as in KerasTuner's tests."""

    def run_trial(self, trial, *args, **kwargs):
        hp = trial.hyperparameters
        a, b = hp.Boolean("a"), hp.Choice("b", [1, 2, 3])
        assert "x" not in kwargs and kwargs == {}  # search() got nothing
        return float(b) + (10.0 if a else 0.0)


def test_run_trial_override_declares_the_space_and_its_return_is_the_score(tmp_path, ray_session):
    tuner = _Grid(directory=tmp_path)
    tuner.search(verbose=0)
    trials = tuner.oracle.trials.values()
    seen = sorted((t.hyperparameters.values["a"], t.hyperparameters.values["b"]) for t in trials)
    assert seen == [(a, b) for a in (False, True) for b in (1, 2, 3)]  # the whole grid, once each
    assert all(t.score == t.hyperparameters["b"] + 10 * t.hyperparameters["a"] for t in trials)
    assert tuner.get_best_hyperparameters()[0].values == {"a": False, "b": 1}  # minimized


class _Fits(kt.Tuner):
    """run_trial over a hypermodel, with the search's fit arguments; one History per execution."""

    def run_trial(self, trial, *fit_args, **fit_kwargs):
        hp = trial.hyperparameters
        batch = hp.Choice("batch_size", [4, 8])  # declared here only
        return [self.hypermodel.build(hp).fit(*fit_args, batch_size=batch, **fit_kwargs)
                for _ in range(2)]


def test_run_trial_override_gets_the_fit_arguments_and_lists_are_averaged(tmp_path, ray_session):
    oracle = kt.oracles.RandomSearchOracle(objective="val_loss", max_trials=2, seed=1)
    tuner = _Fits(oracle=oracle, hypermodel=_build, directory=tmp_path)
    x, y = _data()
    tuner.search(x, y, epochs=2, validation_data=(x[:8], y[:8]), verbose=0)
    assert {d.name for d in tuner.oracle.get_space().space} == {"units", "lr", "batch_size"}
    assert len(oracle.trials) == 2
    for trial in oracle.trials.values():
        assert trial.status == "COMPLETED" and trial.score is not None
        history = trial.metrics.get_history("val_loss")
        assert len(history) == 1 and history[0].value == [trial.score]


def _returning(value):
    class MyTuner(kt.RandomSearch):
        def run_trial(self, trial, **kwargs):
            trial.hyperparameters.Float("value", 0, 10)
            return value

    return MyTuner


@pytest.mark.parametrize("returned, objective, message", [
    ("a", "loss", r"Tuner\.run_trial\(\) to be one of"),
    (None, "loss", "Did you forget to return the metrics"),
    ({"loss": 1.0}, None, r"Tuner\.run_trial\(\) to be a single float"),  # no objective: a float
])
def test_what_a_run_trial_override_returns_is_checked_as_in_keras_tuner(
        tmp_path, ray_session, returned, objective, message):
    tuner = _returning(returned)(objective=objective, max_trials=2, directory=tmp_path)
    with pytest.raises(kt.errors.FatalTypeError, match=message):
        tuner.search(verbose=0)


def test_hypermodel_none_needs_a_run_trial_override_and_hyperband_refuses_one(tmp_path):
    with pytest.raises(ValueError, match="Received `hypermodel=None`"):
        kt.RandomSearch(max_trials=2, directory=tmp_path)

    class MyHyperband(kt.Hyperband):
        def run_trial(self, trial, *args, **kwargs):
            return 1.0

    with pytest.raises(NotImplementedError, match="run_trial override is not supported with Hyperband"):
        MyHyperband(objective="loss", directory=tmp_path)


def test_best_models_are_rebuilt_and_given_their_checkpoints_weights(tmp_path, ray_session):
    """As KerasTuner's get_best_models: the hypermodel builds each best trial's model and its
    best checkpoint's weights are loaded, so a custom layer nobody registered and a subclassed
    model come back (keras.models.load_model cannot read their saved file)."""
    import keras

    x, y = _data(48)
    tuner = kt.RandomSearch(scaled_kt_build, objective="val_accuracy", max_trials=2, seed=3,
                            directory=str(tmp_path), project_name="custom")
    tuner.search(x, y, epochs=2, validation_data=(x[:16], y[:16]), verbose=0)
    # Keras cannot save this model whole (its __init__ takes units, it has no get_config):
    # as KerasTuner, the trials keep its weights, and the tuner rebuilds it
    with pytest.raises(LookupError, match="saved only its weights"):
        tuner.results.load_model()
    best, second = tuner.get_best_models(2)
    assert isinstance(best, ScaledNet) and isinstance(best.scale, Scale)
    trials = tuner.oracle.get_best_trials(2)
    for model, trial in zip((best, second), trials):
        assert model.hidden.units == trial.hyperparameters.get("units")
        score = model.evaluate(x[:16], y[:16], verbose=0, return_dict=True)["accuracy"]
        assert score == pytest.approx(trial.score, abs=1e-6)
    assert int(best.optimizer.iterations) == 2 * 2  # the trained optimizer's state too (2 batches x 2 epochs)
    assert isinstance(best.optimizer, keras.optimizers.Adam)


def test_exact_hyperband_continues_paused_models_keras_cannot_save_whole(tmp_path, ray_session):
    """KerasTuner's synchronous brackets pause trials and continue them from their checkpoints.
    A subclassed model without get_config (its checkpoints hold the weights only) is rebuilt
    and continues where it was, its optimizer's state included (KerasTuner keeps it too)."""
    x, y = _data(48)  # 2 batches of 32 per epoch
    tuner = kt.Hyperband(scaled_kt_build, objective="val_accuracy", max_epochs=3, factor=3,
                         synchronous=True, seed=1, directory=str(tmp_path), project_name="sync")
    tuner.search(x, y, validation_data=(x[:16], y[:16]), verbose=0)
    res = tuner.results
    assert set(res.dataframe()["status"]) == {"TERMINATED"}
    epochs = {t: list(h["epoch"]) for t, h in res.histories.items()}
    continued = [t for t, e in epochs.items() if e == [1, 2, 3] and res.checkpoint(t, "latest")]
    assert continued, epochs
    for trial_id in continued:
        model = scaled_kt_build(tuner.oracle.trials[trial_id].hyperparameters)
        with res.checkpoint(trial_id, "latest").as_directory() as folder:
            assert sorted(os.listdir(folder)) == ["model.weights.h5", "state.json"]
            load_weights_into(model, folder)
        assert int(model.optimizer.iterations) == 2 * 3  # not restarted at the pause


def test_reload_reads_the_trials_another_tuner_stored(tmp_path, ray_session):
    x, y = _data()
    kwargs = dict(objective="val_accuracy", max_trials=2, directory=tmp_path, seed=2)
    first = kt.RandomSearch(_build, **kwargs)
    second = kt.RandomSearch(_build, **kwargs)  # made before the first searched: nothing yet
    assert second.oracle.trials == {}
    first.search(x, y, epochs=1, validation_split=0.25, verbose=0)
    second.reload()
    assert sorted(second.oracle.trials) == sorted(first.oracle.trials)


def test_max_model_size_fails_the_trials_of_bigger_models(tmp_path, ray_session):
    """KerasTuner's max_model_size (was ignored): an oversized model fails its trial, and after
    max_consecutive_failed_trials of them the search stops with their error."""
    x, y = _data()
    tuner = kt.RandomSearch(_build, objective="val_accuracy", max_trials=3, max_model_size=4,
                            directory=tmp_path)
    with pytest.raises(RuntimeError, match="(?s)consecutive failures.*Oversized model: [0-9]+ "
                                           "parameters"):
        tuner.search(x, y, epochs=1, validation_split=0.25, verbose=0)


class _TwoBooleans(kt.RandomSearch):
    def run_trial(self, trial, *args, **kwargs):
        hp = trial.hyperparameters
        return float(hp.Boolean("a")) + 2 * float(hp.Boolean("b"))


def test_random_search_tries_each_configuration_of_a_small_space_once_and_stops(tmp_path,
                                                                               ray_session):
    tuner = _TwoBooleans(objective="loss", max_trials=15, seed=3, directory=tmp_path)
    tuner.search(verbose=0)
    seen = [tuple(t.hyperparameters.values.values()) for t in tuner.oracle.trials.values()]
    assert sorted(seen) == [(False, False), (False, True), (True, False), (True, True)]


def _self_fed(hp):
    import keras

    class SelfFed(keras.Sequential):
        """A model whose fit finds its own data (KerasTuner's search() passes none)."""

        def fit(self, *args, **kwargs):
            x, y = _data()
            return super().fit(x, y, validation_data=(x, y), **kwargs)

    model = SelfFed([keras.Input((3,)), keras.layers.Dense(hp.Int("units", 2, 4)),
                     keras.layers.Dense(2, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def test_search_without_data_fits_the_model_with_what_search_got(tmp_path, ray_session):
    tuner = kt.RandomSearch(_self_fed, objective="val_accuracy", max_trials=2, directory=tmp_path)
    tuner.search(epochs=2, verbose=0)
    trials = list(tuner.oracle.trials.values())
    assert len(trials) == 2 and all(t.status == "COMPLETED" for t in trials)
    assert all(len(t.metrics.get_history("val_accuracy")) == 2 for t in trials)
    # a trial's metrics are the model's, not Tune's bookkeeping nor the trial's config
    assert set(trials[0].metrics.metrics) == {"loss", "accuracy", "val_loss", "val_accuracy"}


def _subclassed(hp):
    import keras

    class Shifted(keras.Model):
        """Declares a hyperparameter when first called (KerasTuner's tuner_test does so)."""

        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2, activation="softmax")

        def call(self, x):
            return self.dense(x + hp.Float("bias", 0.0, 10.0))

    model = Shifted()
    model.compile(keras.optimizers.Adam(hp.Choice("lr", [1e-2, 1e-3])),
                  "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def test_hyperparameters_a_model_declares_when_called_are_searched(tmp_path, ray_session):
    tuner = kt.RandomSearch(_subclassed, objective="val_accuracy", max_trials=2, seed=4,
                            directory=tmp_path)
    assert [d.name for d in tuner.oracle.get_space().space] == ["lr"]  # not called yet
    x, y = _data()
    tuner.search(x, y, epochs=1, validation_split=0.25, verbose=0)
    assert tuner.results.spec.space["bias"] == {"type": "float", "low": 0.0, "high": 10.0}
    biases = {t.hyperparameters.values["bias"] for t in tuner.oracle.trials.values()}
    assert len(biases) == 2 and all(0.0 <= b <= 10.0 for b in biases)  # sampled, not the default


class _Polynomial(kt.BaseTuner):
    def run_trial(self, trial):
        hp = trial.hyperparameters
        return -hp["a"] + hp["b"]


def test_base_tuner_with_an_oracle_and_its_own_run_trial(tmp_path, ray_session):
    """KerasTuner's BaseTuner pattern: the space declared in the oracle, no hypermodel."""
    hps = kt.HyperParameters()
    hps.Float("a", -1, 1)
    hps.Float("b", -1, 1)
    tuner = _Polynomial(oracle=kt.oracles.RandomSearchOracle(
        objective=kt.Objective("score", "max"), hyperparameters=hps, max_trials=3, seed=1),
        directory=tmp_path)
    tuner.search()
    trials = list(tuner.oracle.trials.values())
    assert len(trials) == 3
    for t in trials:
        assert t.score == pytest.approx(-t.hyperparameters["a"] + t.hyperparameters["b"])
    assert tuner.oracle.get_best_trials()[0].score == max(t.score for t in trials)


def test_hypermodels_made_with_keras_tuner_itself_run_on_the_door(tmp_path, ray_session):
    """Code that keeps a ``keras_tuner.HyperModel`` of its own (or uses ``kt.applications``)
    while its tuners come from the door: the tuner takes it, its space (``build`` and its own
    ``fit``) is discovered with the door's ``hp``, and its ``fit`` trains each trial."""
    import keras
    import keras_tuner as real_kt

    class Net(real_kt.HyperModel):
        def build(self, hp):
            model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(hp.Choice("units", [4, 8])),
                                      keras.layers.Dense(1, activation="sigmoid")])
            model.compile("adam", "binary_crossentropy", metrics=["accuracy"])
            return model

        def fit(self, hp, model, *args, **kwargs):
            return model.fit(*args, batch_size=hp.Choice("batch_size", [4, 8]), **kwargs)

    x, y = _data()
    tuner = kt.GridSearch(Net(), objective="val_accuracy", directory=str(tmp_path), project_name="own")
    tuner.search(x, y, validation_data=(x, y), epochs=1, verbose=0)
    trials = tuner.oracle.trials.values()
    assert sorted((t.hyperparameters.values["units"], t.hyperparameters.values["batch_size"])
                  for t in trials) == [(4, 4), (4, 8), (8, 4), (8, 8)]
    assert all(t.status == "COMPLETED" for t in trials)
    # kt.applications is KerasTuner's own, and its hypermodels build with the door's hp
    assert kt.applications.HyperXception is real_kt.applications.HyperXception
    hp = kt.HyperParameters()
    model = kt.applications.HyperXception(input_shape=(32, 32, 1), classes=10).build(hp)
    assert model.output_shape == (None, 10) and "conv2d_num_filters" in hp.values
    with pytest.raises(AttributeError, match="Optuna door"):
        kt.SklearnTuner  # noqa: B018
    assert kt.engine.hyperparameters.HyperParameters is kt.HyperParameters
