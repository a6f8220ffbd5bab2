"""Front doors: KerasTuner and Optuna code runs on the pipeline by changing one import line.

The two seed examples are used verbatim except the import line, the data
(scikit-learn's digits instead of MNIST) and their size.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import ray

from pipeline.compat import keras_tuner as kt
from pipeline.compat import optuna
from pipeline.compat._kt_data import read_fit_data
from pipeline.compat._kt_tuners import _hyperband_trials


def _dense_units(model) -> list[int]:
    return [layer.units for layer in model.layers if hasattr(layer, "units")]


def _configs(tuner) -> list[dict]:
    return [dict(t.config) for t in tuner.results._analysis.trials]


# -- KerasTuner ------------------------------------------------------------------------------


def test_keras_tuner_seed_example(tmp_path, monkeypatch, ray_session, capsys):
    monkeypatch.chdir(tmp_path)
    from pipeline.compat import keras_tuner as kt  # noqa: I001  (the seed's imports, as it wrote them)
    import tensorflow as tf  # noqa: F401  (as in the seed)
    from tensorflow import keras

    def build_model(hp):
        model = keras.Sequential()

        # Tune the number of units
        hp_units = hp.Int('units', min_value=32, max_value=512, step=32)
        model.add(keras.layers.Dense(units=hp_units, activation='relu'))
        model.add(keras.layers.Dense(10, activation='softmax'))

        # Tune the learning rate
        hp_learning_rate = hp.Choice('learning_rate', values=[0.001, 0.01, 0.1])

        model.compile(optimizer=keras.optimizers.Adam(learning_rate=hp_learning_rate),
                      loss='sparse_categorical_crossentropy',
                      metrics=['accuracy'])
        return model

    tuner = kt.RandomSearch(
        build_model,
        objective='val_accuracy',
        max_trials=2,
        executions_per_trial=1,
        directory='hyperparam_tuning',
        project_name='random_search'
    )

    from sklearn.datasets import load_digits
    digits = load_digits()
    x, y = digits.data, digits.target
    (x_train, y_train), (x_test, y_test) = (x[:400], y[:400]), (x[1500:], y[1500:])
    x_train, x_test = x_train / 16.0, x_test / 16.0

    tuner.search(x_train, y_train, epochs=2, validation_split=0.2)

    best_hps = tuner.get_best_hyperparameters(num_trials=1)[0]
    print(f"Best units: {best_hps.get('units')}")
    print(f"Best learning rate: {best_hps.get('learning_rate')}")

    # The search ran as a pipeline experiment where KerasTuner keeps its project.
    res = tuner.results
    assert res.where.path == str(tmp_path / "hyperparam_tuning" / "random_search")
    assert (res.spec.searcher.name, res.spec.objective.metric, res.spec.objective.mode) == (
        "optuna-random", "val_accuracy", "max")
    assert res.spec.space["units"] == {"type": "int", "low": 32, "high": 512, "step": 32}
    df = res.dataframe()
    assert len(df) == 2 and set(df["status"]) == {"TERMINATED"} and (df["epochs"] == 2).all()
    best_row = df.loc[df["val_accuracy"].idxmax()]
    assert best_hps.values == {"units": best_row["config/units"],
                               "learning_rate": best_row["config/learning_rate"]}
    assert best_hps.get("units") in range(32, 513, 32)
    assert best_hps.get("learning_rate") in (0.001, 0.01, 0.1)
    # The best model comes back from its checkpoint and is the searched architecture.
    (model,) = tuner.get_best_models(num_models=1)
    assert _dense_units(model) == [best_hps.get("units"), 10]
    loss, acc = model.evaluate(x_test, y_test, verbose=0)
    assert 0.0 <= acc <= 1.0 and np.isfinite(loss)
    # The rebuilt model (tuner.hypermodel.build(best_hps)) has the same shape.
    assert _dense_units(tuner.hypermodel.build(best_hps)) == [best_hps.get("units"), 10]
    # KerasTuner's oracle view: the same trials, best first, with scores, hyperparameters, history.
    oracle = tuner.oracle
    assert list(oracle.trials) == list(df["trial_id"]) and oracle.max_trials == 2
    assert str(oracle.objective) == 'Objective(name="val_accuracy", direction="max")'
    (best_trial,) = oracle.get_best_trials(1)
    assert (best_trial.trial_id, best_trial.status) == (best_row["trial_id"], "COMPLETED")
    assert best_trial.score == best_row["val_accuracy"]
    assert best_trial.hyperparameters.values == best_hps.values
    history = best_trial.metrics.get_history("val_accuracy")
    assert [o.step for o in history] == [0, 1] and max(o.value[0] for o in history) == best_trial.score
    assert best_trial.best_step == next(o.step for o in history if o.value[0] == best_trial.score)
    assert [t.score for t in oracle.get_best_trials(2)] == sorted(df["val_accuracy"], reverse=True)
    assert set(oracle.get_space().space[i].name for i in range(2)) == {"units", "learning_rate"}
    with pytest.raises(AttributeError, match=r"tuner.oracle.create_trial: not available"):
        oracle.create_trial("x")
    tuner.results_summary(num_trials=2)
    out = capsys.readouterr().out
    assert f"Best units: {best_hps.get('units')}" in out
    assert 'Objective(name="val_accuracy", direction="max")' in out
    assert f"Trial {best_row['trial_id']} summary" in out and out.count("Score: ") == 2

    # overwrite=False (KerasTuner's default): a finished project is reloaded, not re-run.
    again = kt.RandomSearch(build_model, objective='val_accuracy', max_trials=2,
                            directory='hyperparam_tuning', project_name='random_search')
    again.search(x_train, y_train, epochs=2, validation_split=0.2)
    assert "Reloading results" in capsys.readouterr().out
    assert again.results.num_trials == 2
    assert again.get_best_hyperparameters()[0].values == best_hps.values


class DepthAndBatch(kt.HyperModel):
    """KerasTuner's conditional_scope pattern in build, and a fit of its own that is tuned too."""

    def build(self, hp):
        import keras

        lr = hp.Float("lr", 1e-3, 3e-2, sampling="log")
        layers = hp.Int("layers", 1, 3)
        model = keras.Sequential([keras.Input((64,))])
        for i in range(3):
            with hp.conditional_scope("layers", list(range(i + 1, 4))):
                units = hp.Int(f"units_{i}", 8, 24, step=8)
                if i < layers:
                    model.add(keras.layers.Dense(units, activation="relu"))
                elif units is not None:  # KerasTuner: an inactive hyperparameter is None
                    raise AssertionError(f"inactive units_{i} has value {units}")
        model.add(keras.layers.Dense(10, activation="softmax"))
        model.compile(optimizer=keras.optimizers.Adam(lr), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
        return model

    def fit(self, hp, model, x, y, validation_data=None, **kwargs):
        shift = hp.Float("shift", 0.0, 0.5, step=0.25)
        history = model.fit(x + shift, y, batch_size=hp.Choice("batch_size", [16, 64]),
                            validation_data=(validation_data[0] + shift, validation_data[1]), **kwargs)
        active = {"lr", "layers", "shift", "batch_size",
                  *(f"units_{i}" for i in range(hp.get("layers")))}
        if set(hp.values) != active:
            raise AssertionError(f"hp.values {sorted(hp.values)} != active {sorted(active)}")
        return {"val_accuracy": max(history.history["val_accuracy"]), "shift_used": shift}


def test_conditional_hypermodel_with_its_own_fit(tmp_path, ray_session):
    # a pathlib.Path directory, as KerasTuner's own tests pass pytest's tmp_path
    tuner = kt.RandomSearch(DepthAndBatch(), objective="val_accuracy", max_trials=4, seed=3,
                            directory=tmp_path, project_name="cond")
    x, y = _digits(300)
    tuner.search(x, y, epochs=1, validation_data=(x[-60:], y[-60:]), verbose=0)

    res = tuner.results
    space = res.spec.space
    assert space["units_1"]["when"] == {"layers": [2, 3]}
    assert space["units_2"]["when"] == {"layers": [3]}
    # fit's own hyperparameters were found by a dry run of fit, and searched
    assert space["batch_size"] == {"type": "choice", "values": [16, 64]}
    assert space["shift"] == {"type": "float", "low": 0.0, "high": 0.5, "step": 0.25}
    df = res.dataframe()
    assert set(df["status"]) == {"TERMINATED"}  # the assertions inside build and fit held
    depths = []
    histories = res.histories
    for trial in res._analysis.trials:
        config = trial.config
        depths.append(config["layers"])
        # inactive parameters never reach a trial
        assert set(config) == {"lr", "layers", "shift", "batch_size",
                               *(f"units_{i}" for i in range(config["layers"]))}
        # one epoch, then the metrics fit returned
        assert histories[trial.trial_id]["shift_used"].dropna().tolist() == [config["shift"]]
    assert len(set(depths)) > 1, f"only depth {depths} was sampled"
    best = tuner.get_best_hyperparameters()[0]
    (model,) = tuner.get_best_models()
    assert _dense_units(model) == [best.get(f"units_{i}") for i in range(best.get("layers"))] + [10]
    for name in (f"units_{i}" for i in range(best.get("layers"), 3)):
        with pytest.raises(ValueError, match="inactive"):
            best.get(name)


def test_tuner_specs_map_keras_tuner_arguments(tmp_path):
    import keras

    def build(hp):
        units = hp.Int("units", 2, 64, step=2, sampling="log")
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(units)])
        hp.Float("decay", 1e-4, 1e-1, sampling="reverse_log")
        hp.Float("dropout", 0.0, 0.5)
        model.compile("adam", "mse")
        return model

    hb = kt.Hyperband(build, objective="val_loss", max_epochs=9, factor=3, directory=str(tmp_path),
                      project_name="hb", resources_per_trial={"cpu": 1, "gpu": 0.5})
    spec = hb.build_spec()
    # KerasTuner's brackets for max_epochs=9, factor=3: 3 brackets, first cut after 9/3**2 epochs
    assert (spec.searcher.name, spec.scheduler.name, spec.training.epochs) == ("optuna-random", "asha", 9)
    assert spec.scheduler.options == {"reduction_factor": 3, "grace_period": 1, "brackets": 3}
    assert spec.resources.gpu == 0.5
    exact = kt.Hyperband(build, objective="val_loss", max_epochs=15, factor=3, synchronous=True,
                         directory=str(tmp_path), project_name="hb-sync").build_spec()
    assert (exact.scheduler.name, exact.scheduler.options) == ("hyperband", {"reduction_factor": 3})
    assert kt.Hyperband(build, max_epochs=15, factor=3, directory=str(tmp_path), project_name="hb15",
                        objective="val_loss").build_spec().scheduler.options["grace_period"] == 2
    assert spec.search.trials == _hyperband_trials(9, 3, 1) > 1
    assert spec.objective.mode == "min"
    assert spec.space["units"] == {"type": "choice", "values": [2, 4, 8, 16, 32, 64]}
    assert spec.space["decay"] == {"type": "float", "low": 1e-4, "high": 1e-1, "log": True}
    assert any("reverse_log" in note for note in hb.notes)

    grid = kt.GridSearch(build, objective=kt.Objective("val_mae", "min"), max_trials=5,
                         directory=str(tmp_path), project_name="grid").build_spec()
    assert grid.searcher.name == "manual" and grid.num_trials == 5
    # KerasTuner's values for a stepless float: its default (min_value) and ten spread values
    assert len(grid.space["dropout"]["grid"]) == 11 and grid.space["dropout"]["grid"][0] == 0.0
    bo = kt.BayesianOptimization(build, objective=["val_loss", kt.Objective("val_auc", "max")],
                                 max_trials=4, num_initial_points=2, directory=str(tmp_path),
                                 project_name="bo").build_spec()
    assert (bo.objective.metric, bo.objective.mode) == ("multi_objective", "min")
    assert bo.searcher.options["n_startup_trials"] == 2
    from pipeline.compat._kt_objective import infer_direction

    assert infer_direction("val_sparse_categorical_accuracy") == "max"
    assert infer_direction("mae") == "min"
    data, _ = read_fit_data(np.arange(10.0)[:, None], np.arange(10), validation_split=0.2)
    assert data.x_val[:, 0].tolist() == [8.0, 9.0]  # the last 20%, as Keras takes it


def test_keras_tuner_search_takes_tf_data_and_names_what_it_cannot_take(tmp_path, ray_session):
    import tensorflow as tf

    x = np.random.default_rng(0).random((120, 64), dtype=np.float32)
    y = np.arange(120) % 10
    train = tf.data.Dataset.from_tensor_slices((x[:96], y[:96])).batch(16)
    val = tf.data.Dataset.from_tensor_slices((x[96:], y[96:])).batch(16)
    data, batch = read_fit_data(train, None, val)
    assert batch == 16 and data.x_train.shape == (96, 64) and data.y_val.tolist() == y[96:].tolist()
    with pytest.raises(ValueError, match="repeats for ever"):
        read_fit_data(train.repeat(), None)
    with pytest.raises(ValueError, match="validation_split is only supported for NumPy arrays"):
        read_fit_data(train, None, validation_split=0.2)
    with pytest.raises(TypeError, match="cannot be sent to trials.*finite tf.data.Dataset"):
        read_fit_data((row for row in x), None)
    with pytest.raises(ValueError, match="batch it"):
        read_fit_data(tf.data.Dataset.from_tensor_slices((y, y)), None)

    def build(hp):
        import keras

        model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(hp.Int("units", 8, 16, step=8)),
                                  keras.layers.Dense(10, activation="softmax")])
        model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
        return model

    tuner = kt.RandomSearch(build, objective="val_accuracy", max_trials=1, directory=str(tmp_path),
                            project_name="tfdata", seed=1)
    tuner.search(train, validation_data=val, epochs=1, verbose=0)
    res = tuner.results
    assert res.spec.training.batch_size == 16  # the dataset's batches, as Keras would run them
    assert res.dataframe()["status"].tolist() == ["TERMINATED"]
    assert 0 <= tuner.oracle.get_best_trials(1)[0].score <= 1


# -- Optuna -------------------------------------------------------------------------------------


def test_optuna_seed_example(tmp_path, monkeypatch, ray_session, capsys):
    monkeypatch.chdir(tmp_path)
    from pipeline.compat import optuna  # noqa: I001  (the seed's imports, as it wrote them)
    import tensorflow as tf  # noqa: F401  (as in the seed)
    from tensorflow import keras

    def objective(trial):
        model = keras.Sequential()

        # Tune number of units
        units = trial.suggest_int('units', 32, 512, step=32)
        model.add(keras.layers.Dense(units, activation='relu'))
        model.add(keras.layers.Dense(10, activation='softmax'))

        # Tune learning rate
        lr = trial.suggest_loguniform('learning_rate', 1e-4, 1e-1)

        model.compile(optimizer=keras.optimizers.Adam(learning_rate=lr),
                      loss='sparse_categorical_crossentropy',
                      metrics=['accuracy'])

        from sklearn.datasets import load_digits
        x_train, y_train = load_digits(return_X_y=True)
        x_train, y_train = x_train[:400] / 16.0, y_train[:400]

        model.fit(x_train, y_train, epochs=2, validation_split=0.2, verbose=0)

        _, accuracy = model.evaluate(x_train, y_train, verbose=0)
        return accuracy

    study = optuna.create_study(direction='maximize')
    study.optimize(objective, n_trials=2)

    print(study.best_params)

    captured = capsys.readouterr()
    assert f"{study.best_params}" in captured.out
    # n_jobs not given: as many at a time as the cluster holds, and said so
    cpus = int(ray.cluster_resources()["CPU"])
    assert f"optimize: {min(2, cpus)} trial(s) at a time (n_jobs not given" in captured.err
    trials = study.trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    assert set(study.best_params) == {"units", "learning_rate"}
    assert study.best_value == max(t.value for t in trials)
    dist = trials[0].distributions
    assert (dist["units"].low, dist["units"].high, dist["units"].step) == (32, 512, 32)
    assert dist["learning_rate"].log and dist["learning_rate"].low == 1e-4
    # each trial was a Tune trial, stored under results/<study name>
    res = study.results
    assert res.where.path.startswith(str(tmp_path / "results"))
    df = res.dataframe()
    assert set(df["status"]) == {"TERMINATED"}
    assert sorted(df["value"]) == pytest.approx(sorted(t.value for t in trials))
    assert len(study.trials_dataframe()) == 2
    # a real optuna.Study: what takes one (visualization, isinstance checks) takes it
    import matplotlib
    import optuna as plain_optuna

    matplotlib.use("Agg")
    assert isinstance(study, plain_optuna.Study)
    for plot in ("plot_optimization_history", "plot_slice", "plot_edf"):
        getattr(plain_optuna.visualization.matplotlib, plot)(study)


def test_optuna_pruner_stops_trials_early_through_tune(tmp_path, ray_session):
    epochs = 6

    def objective(trial):  # any Python function works; a learning curve that saturates at `quality`
        quality = trial.suggest_float("quality", 0.0, 1.0)
        score = 0.0
        for epoch in range(epochs):
            time.sleep(0.05)
            score = quality * (1 - 0.5 ** (epoch + 1))
            trial.report(score, epoch)
            if trial.should_prune():  # Tune's ASHA decides instead: always False here
                raise optuna.TrialPruned()
        return score

    study = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0),
        pruner=optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=2),
        results_path=str(tmp_path))
    study.optimize(objective, n_trials=8, n_jobs=2)

    res = study.results
    assert (res.spec.scheduler.name, res.spec.scheduler.options) == (
        "asha", {"grace_period": 1, "reduction_factor": 2})
    states = [t.state.name for t in study.trials]
    assert "FAIL" not in states and len(states) == 8
    pruned = [t for t in study.trials if t.state.name == "PRUNED"]
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert pruned, f"ASHA stopped no trial: {states}"
    assert done and all(len(t.intermediate_values) == epochs for t in done)
    for t in pruned:  # stopped early; Optuna's value of a pruned trial is its last report
        assert len(t.intermediate_values) < epochs
        assert t.value == t.intermediate_values[max(t.intermediate_values)]
    assert study.best_trial.state.name == "COMPLETE"
    assert study.best_value == max(t.value for t in done)
    df = res.dataframe()
    assert (df["epochs"] < epochs).sum() == len(pruned)


# the deprecated suggest_* methods are used on purpose
@pytest.mark.filterwarnings("ignore:suggest_:FutureWarning")
def test_optuna_front_door_samples_what_plain_optuna_samples(tmp_path, ray_session):
    import optuna as plain_optuna

    def objective(trial):
        a = trial.suggest_int("a", 1, 64, log=True)
        b = trial.suggest_int("b", 0, 100, step=5)
        c = trial.suggest_float("c", 1e-5, 1e-1, log=True)
        d = trial.suggest_discrete_uniform("d", 0.0, 1.0, 0.25)
        e = trial.suggest_categorical("e", ["relu", "tanh"])
        if e == "relu":  # define-by-run condition
            trial.suggest_uniform("f", -1.0, 1.0)
        g = trial.suggest_loguniform("g", 1e-3, 1.0)
        return a + b + c + d + g

    ours = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3),
                               results_path=str(tmp_path), study_name="same-space")
    ours.optimize(objective, n_trials=6, n_jobs=1)  # Optuna's order: one after another
    reference = plain_optuna.create_study(sampler=plain_optuna.samplers.RandomSampler(seed=3))
    reference.optimize(objective, n_trials=6)

    assert len(ours.trials) == len(reference.trials) == 6
    assert [t.distributions for t in ours.trials] == [t.distributions for t in reference.trials]
    assert [t.params for t in ours.trials] == [t.params for t in reference.trials]
    assert [t.value for t in ours.trials] == pytest.approx([t.value for t in reference.trials])
    dist = ours.trials[0].distributions
    assert dist["a"] == plain_optuna.distributions.IntDistribution(1, 64, log=True)
    assert dist["b"] == plain_optuna.distributions.IntDistribution(0, 100, step=5)
    assert dist["d"] == plain_optuna.distributions.FloatDistribution(0.0, 1.0, step=0.25)
    assert ours.best_value == reference.best_value
    assert any("f" in t.params for t in ours.trials) and any("f" not in t.params for t in ours.trials)
    # a second optimize continues the same study (the sampler state came back from the actor)
    ours.optimize(objective, n_trials=2, n_jobs=1)
    reference.optimize(objective, n_trials=2)
    assert [t.params for t in ours.trials] == [t.params for t in reference.trials]


def test_optuna_front_door_runs_a_workers_trials_on_one_copy_of_the_objective(tmp_path, ray_session):
    """Tune unpickles the objective for every trial; the door keeps a worker's first copy.

    A new copy per trial brings new code objects, and TensorFlow keeps the stack traces of
    the ops it traces keyed by them for good: ~1.2 MB per Keras trial on a reused worker
    (benchmarks D.optuna_front). One copy per worker, as Optuna calls one objective.
    """
    import os

    calls: list[int] = []

    def objective(trial):
        calls.append(trial.number)  # this copy's calls so far
        trial.set_user_attr("worker", os.getpid())
        trial.set_user_attr("calls", list(calls))
        return trial.suggest_float("x", 0.0, 1.0)

    study = optuna.create_study(results_path=tmp_path, study_name="one-copy")  # a Path too
    study.optimize(objective, n_trials=4, n_jobs=1)
    by_worker: dict[int, list[list[int]]] = {}
    for t in study.trials:
        by_worker.setdefault(t.user_attrs["worker"], []).append(t.user_attrs["calls"])
    assert max(len(seen) for seen in by_worker.values()) >= 2  # a reused worker
    for seen in by_worker.values():  # each trial saw the calls of the worker's earlier ones
        assert [len(calls_so_far) for calls_so_far in seen] == list(range(1, len(seen) + 1))
        assert all(calls_so_far[:-1] == seen[i - 1] for i, calls_so_far in enumerate(seen) if i)


def test_optuna_tensor_values_reach_the_study_as_floats(tmp_path, ray_session):
    """An objective may return a TensorFlow scalar (Optuna's TensorFlow example does): the
    study actor gets a float, so it never imports TensorFlow to unpickle the value (seconds
    of CPU beside the trials, and TensorFlow's start-up lines on the user's console)."""
    from pathlib import Path

    def holders_with_tensorflow() -> list[bool]:
        found = []
        for proc in Path("/proc").iterdir():
            try:
                if proc.name.isdigit() and b"_StudyHolder" in (proc / "cmdline").read_bytes():
                    found.append("tensorflow" in (proc / "maps").read_text())
            except OSError:
                continue
        return found

    seen: list[list[bool]] = []

    def objective(trial):
        import tensorflow as tf

        return tf.constant(trial.suggest_float("x", 0.0, 1.0))

    study = optuna.create_study(results_path=tmp_path, study_name="tensor")
    study.optimize(objective, n_trials=2, n_jobs=1,
                   callbacks=[lambda s, t: seen.append(holders_with_tensorflow())])
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 2
    assert all(isinstance(t.value, float) for t in study.trials)
    assert len(seen) == 2 and all(s and not any(s) for s in seen), seen


def test_optuna_objective_uploads_artifacts_through_its_trial(tmp_path, ray_session):
    """optuna.artifacts.upload_artifact(study_or_trial=trial) from the objective (an Optuna
    example's pattern): the trial is an optuna Trial whose storage calls reach the study."""
    from optuna.artifacts import FileSystemArtifactStore, download_artifact, get_all_artifact_meta, upload_artifact

    store_dir = tmp_path / "artifacts"
    store_dir.mkdir()
    store = FileSystemArtifactStore(base_path=str(store_dir))

    def objective(trial):
        x = trial.suggest_float("x", 0.0, 1.0)
        path = tmp_path / f"note-{trial.number}.txt"
        path.write_text(f"x={x}")
        upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=trial)
        assert isinstance(trial, optuna.trial.Trial)
        return x

    study = optuna.create_study(results_path=tmp_path, study_name="artifacts")
    study.optimize(objective, n_trials=2, n_jobs=1)
    for frozen in study.trials:
        (meta,) = get_all_artifact_meta(frozen, storage=study._storage)
        out = tmp_path / f"back-{frozen.number}.txt"
        download_artifact(artifact_store=store, artifact_id=meta.artifact_id, file_path=str(out))
        assert out.read_text() == f"x={frozen.params['x']}"


def test_optuna_objective_relative_paths_are_the_scripts(tmp_path, monkeypatch, ray_session):
    """An objective writing "notes/trial-N.txt" (as Optuna examples' artifact stores do with
    relative folders) writes next to the script, not into Tune's trial folder."""
    monkeypatch.chdir(tmp_path)
    os.makedirs("notes")

    def objective(trial):
        x = trial.suggest_float("x", 0.0, 1.0)
        with open(f"notes/trial-{trial.number}.txt", "w") as f:
            f.write(str(x))
        return x

    study = optuna.create_study(results_path=tmp_path / "results", study_name="relative")
    study.optimize(objective, n_trials=2, n_jobs=1)
    assert sorted(os.listdir(tmp_path / "notes")) == ["trial-0.txt", "trial-1.txt"]


# -- callbacks: on the driver, as Optuna calls them ------------------------------------------


def test_optuna_callbacks_run_on_the_driver_after_each_trial(tmp_path, ray_session):
    """Each callback is called once per finished trial (COMPLETE, PRUNED, FAIL), in order,
    in this process, with the user's study up to date; it need not be picklable."""
    import threading
    import warnings

    from optuna.trial import TrialState

    class Recorder:
        def __init__(self):
            self.lock = threading.Lock()  # cannot travel to Ray: it never has to
            self.seen: list = []

        def __call__(self, study, frozen):
            with self.lock:
                best = study.best_value if frozen.state == TrialState.COMPLETE else None
                self.seen.append((frozen.number, frozen.state, len(study.trials), best, study))

    def objective(trial):
        x = trial.suggest_int("x", 0, 9)
        if trial.number == 1:
            raise optuna.TrialPruned()
        if trial.number == 2:
            raise ValueError("no good")
        return float(10 + x if trial.number == 3 else x)

    recorder = Recorder()
    study = optuna.create_study(results_path=str(tmp_path), study_name="callbacks",
                                sampler=optuna.samplers.RandomSampler(seed=1))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        study.optimize(objective, n_trials=4, n_jobs=1, catch=(ValueError,), callbacks=[recorder])
    assert not [w for w in caught if "outside itself" in str(w.message)]  # state of the driver's own
    x0 = study.trials[0].params["x"]
    assert [row[:4] for row in recorder.seen] == [
        (0, TrialState.COMPLETE, 1, x0), (1, TrialState.PRUNED, 2, None),
        (2, TrialState.FAIL, 3, None), (3, TrialState.COMPLETE, 4, x0)]
    assert all(row[4] is study for row in recorder.seen)
    assert [t.state for t in study.trials] == [row[1] for row in recorder.seen]


def test_optuna_callback_prunes_as_tune_stops_the_trial(tmp_path, ray_session):
    """A trial Tune's ASHA stopped is PRUNED, and its callback called, when Tune stops it."""
    from optuna.trial import TrialState

    seen: list = []

    def objective(trial):
        quality = 0.1 if trial.number == 1 else 1.0
        for step in range(4):
            trial.report(quality * (step + 1), step)
        return quality * 4

    study = optuna.create_study(
        direction="maximize", results_path=str(tmp_path), study_name="asha-callbacks",
        pruner=optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=2))
    study.optimize(objective, n_trials=3, n_jobs=1,
                   callbacks=[lambda s, t: seen.append((t.number, t.state, len(s.trials)))])
    assert seen == [(0, TrialState.COMPLETE, 1), (1, TrialState.PRUNED, 2), (2, TrialState.COMPLETE, 3)]


def test_optuna_max_trials_callback_stops_the_study(tmp_path, ray_session):
    """``study.stop()`` from a callback (Optuna's MaxTrialsCallback) ends optimize early."""
    from optuna.trial import TrialState

    study = optuna.create_study(results_path=str(tmp_path), study_name="max-trials")
    with pytest.raises(RuntimeError, match="supposed to be invoked inside"):
        study.stop()  # as Optuna: only inside optimize
    study.optimize(lambda t: t.suggest_float("x", 0.0, 1.0), n_trials=20, n_jobs=1,
                   callbacks=[optuna.study.MaxTrialsCallback(2, states=(TrialState.COMPLETE,))])
    states = [t.state for t in study.trials]
    assert states.count(TrialState.COMPLETE) == 2 and len(states) <= 2 + 1, states
    assert len(study.results.dataframe()) < 20
    with pytest.raises(RuntimeError, match="supposed to be invoked inside"):
        study.stop()
    study._optimize_pid = -1  # what a copy of the study in a Ray worker sees during optimize
    with pytest.raises(RuntimeError, match="inside an objective is not supported"):
        study.stop()


def test_optuna_stop_lets_the_running_trials_finish(tmp_path, ray_session):
    """As in Optuna with n_jobs=2, ``study.stop()`` starts no new trial and lets the one
    still running finish: trial 0 ends once trial 1 has begun, its callback stops the
    study, and trial 1, sleeping past that, completes (it used to be stopped by Tune and
    recorded FAIL)."""
    import time

    began = tmp_path / "trial-1-began"

    def objective(trial):
        trial.suggest_float("x", 0.0, 1.0)
        if trial.number == 1:
            began.touch()
            for step in range(6):
                time.sleep(1)
                trial.report(float(step), step)
        else:
            for _ in range(1200):  # until trial 1 runs too, as Optuna's two threads would
                if began.exists():
                    break
                time.sleep(0.1)
        return float(trial.number)

    def callback(study, frozen):
        if frozen.number == 0:
            study.stop()

    study = optuna.create_study(results_path=str(tmp_path), study_name="soft-stop")
    study.optimize(objective, n_trials=10, n_jobs=2, callbacks=[callback])
    assert began.exists()
    assert [(t.number, t.state.name, t.value) for t in study.trials] == [
        (0, "COMPLETE", 0.0), (1, "COMPLETE", 1.0)]


@pytest.mark.filterwarnings("ignore::FutureWarning")  # optuna.integration paths, deprecated in 4.9
def test_optuna_integration_keras_pruning_and_tensorboard_callbacks(tmp_path, ray_session):
    """optuna-examples' keras_integration.py way: ``optuna.integration.KerasPruningCallback``
    reports each epoch's ``val_accuracy`` from inside ``fit`` and pruning stops the trial;
    optuna-integration's ``TensorBoardCallback`` gets each finished trial on the driver."""
    from optuna.integration import KerasPruningCallback  # the examples' (deprecated) path
    from optuna_integration import TensorBoardCallback

    epochs = 4

    def objective(trial):
        import keras
        from sklearn.datasets import load_digits

        x, y = load_digits(return_X_y=True)
        x = (x / 16.0).astype("float32")
        model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(16, activation="relu"),
                                  keras.layers.Dense(10, activation="softmax")])
        lr = trial.suggest_float("lr", 1e-4, 0.3, log=True)
        model.compile(keras.optimizers.SGD(lr), "sparse_categorical_crossentropy", metrics=["accuracy"])
        history = model.fit(x[:1200], y[:1200], validation_data=(x[1200:], y[1200:]), epochs=epochs,
                            batch_size=64, verbose=0, callbacks=[KerasPruningCallback(trial, "val_accuracy")])
        return history.history["val_accuracy"][-1]

    board = tmp_path / "board"
    study = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.RandomSampler(seed=1),
        pruner=optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=2),
        results_path=str(tmp_path), study_name="keras-pruning")
    study.optimize(objective, n_trials=4, n_jobs=2,  # lr 0.0028, 0.032, then 0.0001, 0.0011: pruned
                   callbacks=[TensorBoardCallback(str(board), metric_name="val_accuracy")])

    states = [t.state.name for t in study.trials]
    assert len(states) == 4 and "FAIL" not in states, states
    pruned = [t for t in study.trials if t.state.name == "PRUNED"]
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert pruned and done, states
    for t in done:  # one report per epoch, steps as Keras numbers them; the last is the value
        assert sorted(t.intermediate_values) == list(range(epochs))
        assert t.value == pytest.approx(t.intermediate_values[epochs - 1])
    assert all(len(t.intermediate_values) < epochs for t in pruned)
    assert all(0.0 <= v <= 1.0 for t in study.trials for v in t.intermediate_values.values())
    # the TensorBoard callback wrote one run per COMPLETE trial, as in Optuna
    runs = sorted(p.name for p in board.iterdir())
    assert runs == sorted(f"trial-{t.number}" for t in done)
    assert all(any((board / run).iterdir()) for run in runs)


def test_optuna_callback_exception_comes_out_of_optimize(tmp_path, ray_session):
    """As in Optuna, a callback that raises stops the study and optimize raises it;
    the finished trials stay in the study."""
    class Enough(Exception):
        pass

    def callback(study, frozen):
        if frozen.number == 1:
            raise Enough(f"stop at {frozen.number}")

    study = optuna.create_study(results_path=str(tmp_path), study_name="raising")
    with pytest.raises(Enough, match="stop at 1"):
        study.optimize(lambda t: t.suggest_float("x", 0.0, 1.0), n_trials=10, n_jobs=1,
                       callbacks=[callback])
    states = [t.state.name for t in study.trials]
    assert states[:2] == ["COMPLETE", "COMPLETE"] and len(states) <= 3, states


def test_optuna_objective_error_stops_the_study_and_catch_takes_the_scripts_classes(
        tmp_path, ray_session):
    """As in Optuna, an objective raising an exception not in ``catch`` stops the study: no
    trial starts after it (Optuna with ``n_jobs > 1`` lets the running ones finish) and
    ``optimize`` raises it, instead of running every trial first. One in ``catch`` fails its
    trial only. Both with classes the script defines, which reached the driver as a
    ``RuntimeError`` before (``catch`` is judged in the trial's worker, where the class is
    the objective's, and the exception travels by cloudpickle)."""
    class Broken(Exception):
        pass

    class Skip(Exception):
        pass

    def objective(trial):
        x = trial.suggest_float("x", 0.0, 1.0)
        if trial.number == 1:
            raise Broken("broken")
        if trial.number == 3:
            raise Skip("not this one")
        return x

    study = optuna.create_study(results_path=str(tmp_path), study_name="fails")
    seen: list = []
    with pytest.raises(Broken, match="broken"):  # the script's own class
        study.optimize(objective, n_trials=12, n_jobs=1,
                       callbacks=[lambda s, t: seen.append((t.number, t.state.name))])
    states = [t.state.name for t in study.trials]
    assert states[:2] == ["COMPLETE", "FAIL"] and len(states) <= 3, states
    assert seen[0] == (0, "COMPLETE") and 1 not in [n for n, _ in seen], seen  # Optuna's too
    assert len(study.results.dataframe()) <= 3

    study = optuna.create_study(results_path=str(tmp_path), study_name="caught")
    study.optimize(objective, n_trials=5, n_jobs=1, catch=(Broken, Skip))
    assert [t.state.name for t in study.trials] == ["COMPLETE", "FAIL", "COMPLETE", "FAIL",
                                                    "COMPLETE"]


@pytest.mark.slow  # waits out a timeout, ~22 s
def test_optuna_study_is_announced_once_and_a_timeout_lets_the_running_trial_finish(
        tmp_path, ray_session, capfd):
    """Optuna says "A new study created" once, at create_study; the door's study must not
    repeat it at each optimize or callback. "Trial N finished with value ..." is logged by
    the script's Optuna logger, as Optuna logs it (not by the study actor through Ray's
    worker log, which folds lines that differ only in numbers). ``timeout`` is Optuna's:
    the trial running at the deadline finishes (it used to be stopped and recorded FAIL,
    with Tune's "No checkpoints have been found" errors), and no trial starts after it."""
    import logging
    import time

    class Keep(logging.Handler):
        def __init__(self):
            super().__init__()
            self.lines: list[str] = []
            self.times: dict[str, float] = {}

        def emit(self, record):
            self.lines.append(record.getMessage())
            self.times[record.getMessage()] = record.created

    keep = Keep()
    for name in ("optuna", "ray"):
        logging.getLogger(name).addHandler(keep)
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.INFO)  # Optuna's default (other tests change it)
    try:
        study = optuna.create_study(results_path=str(tmp_path), study_name="quiet")
        study.optimize(lambda t: t.suggest_float("x", 0.0, 1.0), n_trials=2, n_jobs=1,
                       callbacks=[lambda s, frozen: None])
        study.optimize(lambda t: t.suggest_float("x", 0.0, 1.0), n_trials=1, n_jobs=1)

        def slow(t):
            t.suggest_float("x", 0.0, 1.0)
            for step in range(14):  # reports as it goes, as a Keras objective does each epoch
                time.sleep(1)
                t.report(float(step), step)
            return 0.0

        began = time.monotonic()
        # as in Optuna: the trial starts before the deadline and finishes after it; none starts then
        study.optimize(slow, timeout=10, n_jobs=1)
        took = time.monotonic() - began
    finally:
        optuna.logging.set_verbosity(verbosity)
        for name in ("optuna", "ray"):
            logging.getLogger(name).removeHandler(keep)
    assert sum("A new study created" in line for line in keep.lines) == 1, keep.lines
    assert not [line for line in keep.lines if "No checkpoints have been found" in line
                or "Failed to fetch metrics" in line or "may be a performance bottleneck" in line]
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 4
    assert study.trials[3].duration.total_seconds() >= 14 and took >= 14
    # Optuna's lines for each trial come out of the script's own Optuna logger, in order
    finished = [line.split(" finished")[0] for line in keep.lines if " finished with value" in line]
    assert finished == ["Trial 0", "Trial 1", "Trial 2", "Trial 3"], keep.lines
    for t in study.trials:  # each line has the time it happened, as Optuna's, not when shown
        [made] = [at for line, at in keep.times.items() if line.startswith(f"Trial {t.number} finished")]
        assert abs(made - t.datetime_complete.timestamp()) < 0.05, (t.number, made, t.datetime_complete)
    assert "hard limit" not in capfd.readouterr().err


def _digits(n: int):
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.data[:n] / 16.0, d.target[:n]


# -- what the front doors ship to Ray -------------------------------------------------------


def test_optuna_front_door_runs_nsga2_as_plain_optuna_does(tmp_path, ray_session):
    """Optuna 5.1's NSGAIISampler holds a lock; the study actor still gets (and returns) it."""
    import optuna as plain_optuna

    def objective(trial):
        x = trial.suggest_float("x", 0.0, 1.0)
        n = trial.suggest_int("n", 1, 9)
        return x * n, n

    ours = optuna.create_study(directions=["maximize", "minimize"],
                               sampler=optuna.samplers.NSGAIISampler(seed=2, population_size=4),
                               results_path=str(tmp_path), study_name="nsga2")
    ours.optimize(objective, n_trials=8, n_jobs=1)
    reference = plain_optuna.create_study(
        directions=["maximize", "minimize"],
        sampler=plain_optuna.samplers.NSGAIISampler(seed=2, population_size=4))
    reference.optimize(objective, n_trials=8)
    assert ours.results.spec.searcher.name == "nsga2"
    assert [t.state.name for t in ours.trials] == ["COMPLETE"] * 8
    assert [t.params for t in ours.trials] == [t.params for t in reference.trials]
    assert {t.number for t in ours.best_trials} == {t.number for t in reference.best_trials}


def test_optuna_front_door_names_what_cannot_travel_before_ray_starts(tmp_path):
    import threading

    connection = threading.Lock()  # stands for a client, a file handle, a session...

    def objective(trial):
        with connection:
            return trial.suggest_float("x", 0.0, 1.0)

    study = optuna.create_study(results_path=str(tmp_path / "results"), study_name="s")
    with pytest.raises(TypeError) as info:
        study.optimize(objective, n_trials=2)
    message = str(info.value)
    assert message.startswith("objective (function) cannot be sent to Ray workers")
    assert "at objective.<closure connection>" in message
    assert not (tmp_path / "results").exists()  # nothing started, nothing written
    # callbacks stay on the driver: one holding a lock is fine (test_optuna_callbacks_run_on_the_driver...)


SCORES: list = []


def test_optuna_front_door_warns_of_changes_an_objective_makes_outside_itself(tmp_path):
    """A list of scores, a dict of models, a counter, ``self.`` of a callable object:
    changed in a worker, never in the script. ``optimize`` says so, naming each, once."""
    import warnings

    model = object()
    models: dict = {}

    def objective(trial):
        value = trial.suggest_float("x", 0.0, 1.0)
        SCORES.append(value)
        models[trial.number] = model
        return value

    class Objective:
        def __init__(self):
            self.best = None

        def __call__(self, trial):
            self.best = trial.suggest_float("x", 0.0, 1.0)
            return self.best

    def pure(trial):
        return trial.suggest_float("x", 0.0, 1.0) + len(SCORES)

    def unshippable(func):  # ends optimize before Ray starts, after the warnings
        raise TypeError("stop here")

    def callback(study, frozen):  # runs on the driver: its changes are the script's own
        SCORES.append(frozen.value)

    study = optuna.create_study(results_path=str(tmp_path / "results"), study_name="w")
    study._check_shippable = unshippable  # type: ignore[method-assign]
    for func, expected in ((objective, "`SCORES`, `models`"), (Objective(), "`self.best`"), (pure, None)):
        with warnings.catch_warnings(record=True) as caught, pytest.raises(TypeError, match="stop here"):
            warnings.simplefilter("always")
            study.optimize(func, n_trials=2, callbacks=[callback])
        said = [str(w.message) for w in caught if "outside itself" in str(w.message)]
        if expected is None:
            assert said == []
        else:
            assert len(said) == 1 and said[0].startswith(f"the objective changes {expected} outside"), said
            assert "trial.set_user_attr" in said[0]
            assert caught[0].filename == __file__  # points at the optimize call
    assert SCORES == [] and not (tmp_path / "results").exists()


@pytest.mark.parametrize("module", ["pipeline.compat._driver_state", "pipeline.compat._hyperparameters",
                                    "pipeline.compat._hp_types", "cluster.connect", "pipeline.tune_patches",
                                    "pipeline.keras_build", "pipeline._patch",
                                    "pipeline.result_files", "cluster.prewarm", "pipeline.soft_stop",
                                    "pipeline.compat.optuna", "pipeline.compat._optuna_trial",
                                    "pipeline.space", "searchers.schedulers"])
def test_doctests(module):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted >= 2 and result.failed == 0


def test_hyperparameters_merge_and_hand_set_values_as_keras_tuner():
    hp, other = kt.HyperParameters(), kt.HyperParameters()
    hp.Int("a", 0, 100)
    hp.Fixed("b", 2)
    other.Fixed("a", 3)
    hp.Int("c", 10, 100, default=30)
    hp.merge(other)
    assert (hp.get("a"), hp.get("b"), hp.get("c")) == (3, 2, 30)
    third = kt.HyperParameters()
    third.Fixed("a", 5)
    third.Choice("d", [1, 2, 3], default=1)
    hp.merge(third, overwrite=False)  # "a" stays; "d" comes in
    assert (hp.get("a"), hp.get("d")) == (3, 1)
    # a value set by hand before the hyperparameter is declared is the one it takes
    hp = kt.HyperParameters()
    hp.values["opt"] = "sgd"
    assert hp.Choice("opt", ["sgd", "adam"], default="adam") == "sgd"


def test_hyperparameters_same_name_in_alternative_branches_as_keras_tuner():
    """One name defined in two exclusive conditional branches (KerasTuner's docs do this):
    the inactive branch's definition does not erase the active one's value."""
    hp = kt.HyperParameters()
    model = hp.Choice("model", ["v1", "v2"])
    with hp.conditional_scope("model", "v1"):
        v1 = {"layers": hp.Int("layers", 1, 3), "units": hp.Int("units", 16, 32)}
    with hp.conditional_scope("model", "v2"):
        v2 = {"layers": hp.Int("layers", 2, 4), "units": hp.Int("units", 32, 64)}
    assert (model, v1, v2) == ("v1", {"layers": 1, "units": 16}, {"layers": None, "units": None})
    assert hp.values == {"model": "v1", "layers": 1, "units": 16}
    assert hp.get("units") == 16
    with pytest.raises(ValueError, match="cannot have the same name as its parent"):
        with hp.conditional_scope("model", "v1"):
            hp.Choice("model", ["v3"])


def test_keras_tuner_front_door_names_what_cannot_travel(tmp_path):
    import threading

    from tensorflow import keras

    registry = threading.Lock()

    def build_model(hp):
        with registry:
            model = keras.Sequential([keras.layers.Dense(hp.Int("units", 8, 16, step=8)),
                                      keras.layers.Dense(10, activation="softmax")])
        model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        return model

    x, y = _digits(60)
    tuner = kt.RandomSearch(build_model, objective="val_accuracy", max_trials=2,
                            directory=str(tmp_path), project_name="locked")
    with pytest.raises(TypeError, match=r"^build function build_model \(function\) cannot be sent"
                                        r".*at build function build_model\.<closure registry>"):
        tuner.search(x, y, epochs=1, validation_split=0.2)
    assert not (tmp_path / "locked").exists()


@pytest.mark.slow  # a whole script that starts its own Ray, ~17 s
def test_front_door_starts_ray_before_optimize_and_keeps_it_for_the_next(tmp_path):
    """A script's own Ray (no cluster, no fixture): started in the background when the study
    is created, used by optimize(), kept up after it (as after ``ray.init``) so the next
    optimize does not start Ray again, and ended with the script."""
    import subprocess
    import sys
    import time
    from pathlib import Path

    script = tmp_path / "script.py"
    script.write_text(
        "import time\n"
        "import ray\n"
        "from pipeline.compat import optuna\n"
        "study = optuna.create_study(direction='maximize', results_path='res',\n"
        "                            sampler=optuna.samplers.RandomSampler(seed=0))\n"
        "deadline = time.time() + 120\n"
        "while not ray.is_initialized() and time.time() < deadline:\n"
        "    time.sleep(0.05)  # the script goes on; Ray comes up meanwhile\n"
        "print('started before optimize:', ray.is_initialized())\n"
        "study.optimize(lambda t: t.suggest_float('x', 0, 1), n_trials=3)\n"
        "print('running after optimize:', ray.is_initialized())\n"
        "session = ray.get_runtime_context().get_node_id()\n"
        "again = optuna.create_study(results_path='res2')\n"
        "again.optimize(lambda t: t.suggest_float('x', 0, 1), n_trials=1)\n"
        "study.optimize(lambda t: t.suggest_float('x', 0, 1), n_trials=1)\n"
        "print('same Ray:', ray.get_runtime_context().get_node_id() == session)\n"
        "print('session:', ray._private.worker._global_node.session_name)\n"
        "print('trials:', len(study.trials), len(again.trials))\n")
    # as a user's shell has it: no Ray address, no authentication mode set
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # Ray's note on its default token authentication is not for a script that never
    # called ray.init (Optuna prints no such line)
    assert "Token authentication" not in proc.stderr, proc.stderr[-3000:]
    assert "started before optimize: True" in proc.stdout
    assert "running after optimize: True" in proc.stdout
    assert "same Ray: True" in proc.stdout
    assert "trials: 4 1" in proc.stdout
    assert "SIGTERM handler" not in proc.stderr
    session = proc.stdout.split("session: ", 1)[1].split()[0]
    deadline = time.time() + 30
    while time.time() < deadline:  # Ray's processes end with the script
        left = subprocess.run(["pgrep", "-f", session], capture_output=True, text=True).stdout
        if not left.strip():
            break
        time.sleep(0.5)
    assert not left.strip(), f"Ray processes of {session} outlived the script: {left}"



def test_early_start_that_fails_raises_where_the_session_is_used_and_leaves_no_thread():
    """In a process of its own (this one may hold the tests' Ray, which the start would reuse)."""
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import threading, time\n"
        "from cluster.connect import ClusterConnectError, EarlyStart, ray_session\n"
        "early = EarlyStart('127.0.0.1:1')  # nothing listens there\n"
        "try:\n"
        "    with ray_session('127.0.0.1:1', early=early):\n"
        "        print('joined')\n"
        "except ClusterConnectError as exc:\n"
        "    print('refused:', exc)\n"
        "time.sleep(0.2)\n"
        "print('owned:', early.owned)\n"
        "print('thread:', any(t.name == 'ray-early-start' for t in threading.enumerate()))\n")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "refused: cannot reach the Ray cluster at 127.0.0.1:1" in proc.stdout
    assert "joined" not in proc.stdout
    assert "owned: False" in proc.stdout and "thread: False" in proc.stdout


def test_keras_tuner_distribution_strategy_mirrored_runs_other_strategies_refused(tmp_path, ray_session):
    """A MirroredStrategy is rebuilt in each trial's worker and the model built under it, as
    KerasTuner does in its process; other strategies (but MultiWorkerMirroredStrategy,
    tests/test_kt_multiworker.py) and 'workers' without it are refused."""
    import tensorflow as tf

    def never(hp):
        raise AssertionError("not built: refused before the space is discovered")

    with pytest.raises(ValueError, match=r"^distribution_strategy: CentralStorageStrategy .*"
                                         r"MultiWorkerMirroredStrategy"):
        kt.RandomSearch(never, objective="val_loss", directory=str(tmp_path),
                        distribution_strategy=tf.distribute.experimental.CentralStorageStrategy())
    with pytest.raises(ValueError, match=r"^resources_per_trial: 'workers' .*MultiWorkerMirroredStrategy"):
        kt.RandomSearch(never, objective="val_loss", directory=str(tmp_path),
                        resources_per_trial={"cpu": 1, "workers": 2})

    from tensorflow import keras

    driver = os.getpid()  # the driver discovers the space unscoped; trials build in workers

    def build(hp):
        strategy = tf.distribute.get_strategy()
        if os.getpid() != driver and not isinstance(strategy, tf.distribute.MirroredStrategy):
            raise AssertionError(f"built under {type(strategy).__name__}")
        model = keras.Sequential([keras.Input((64,)),
                                  keras.layers.Dense(hp.Choice("units", [8, 16]), activation="relu"),
                                  keras.layers.Dense(10, activation="softmax")])
        model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
        return model

    tuner = kt.RandomSearch(build, objective="val_accuracy", max_trials=2, seed=0,
                            directory=str(tmp_path), project_name="mirrored",
                            distribution_strategy=tf.distribute.MirroredStrategy())
    assert tuner.resources["gpu"] == 0  # a strategy over the CPU asks for no GPU
    x, y = _digits(600)
    tuner.search(x[:400], y[:400], epochs=1, validation_data=(x[400:600], y[400:600]), verbose=0)
    assert set(tuner.results.dataframe()["status"]) == {"TERMINATED"}
    assert len(tuner.results.dataframe()) == 2


def test_keras_tuner_run_trial_override_on_hyperband_is_refused_where_the_tuner_is_made(tmp_path):
    """KerasTuner's custom-trial hook runs in Ray trials (tests/test_kt_yard.py), but not under
    Hyperband's brackets: a clear error where the tuner is made."""

    class MyTuner(kt.Hyperband):
        def run_trial(self, trial, *args, **kwargs):
            return trial.hyperparameters.Float("x", 0.0, 1.0)

    with pytest.raises(NotImplementedError, match=r"run_trial override is not supported with "
                                                  r"Hyperband.*HyperModel\.fit"):
        MyTuner(objective="loss", max_epochs=3, directory=tmp_path)
    assert not (tmp_path / "untitled_project").exists()  # nothing written


def test_keras_tuner_hyperparameter_classes_on_the_front_door():
    """kt.Int & co. (KerasTuner's public classes) and kt.serialize/deserialize, as KerasTuner's."""
    names = {"HyperParameter", "Int", "Float", "Choice", "Boolean", "Fixed", "serialize", "deserialize"}
    assert names <= set(kt.__all__)
    hp = kt.HyperParameters()
    hp.merge([kt.Int("units", 8, 32, step=8), kt.Choice("act", ["relu", "tanh"], default="tanh")])
    again = kt.deserialize(kt.serialize(hp))
    assert again.values == {"units": 8, "act": "tanh"}
    assert [type(d) for d in again.space] == [kt.Int, kt.Choice]
    assert isinstance(again.space[0], kt.HyperParameter) and again.space[0].random_sample(0) in (8, 16, 24, 32)


@pytest.mark.parametrize("name", ["synchronized"])
def test_keras_tuner_names_not_provided_say_why(name):
    with pytest.raises(AttributeError, match=rf"keras_tuner\.{name}: .* not (part of|provided)"):
        getattr(kt, name)
    assert not hasattr(kt, name)


def _failing_build(kind: str):
    def build(hp):
        import keras

        units = hp.Int("units", 8, 64, step=8)
        in_trial = ray.get_runtime_context().get_actor_id() is not None  # not the driver's probe
        if kind == "fatal" and in_trial:
            raise kt.errors.FatalValueError(f"units {units} cannot be built")
        if kind == "failed" and in_trial:
            raise kt.errors.FailedTrialError("this trial fails")
        model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(units, activation="relu"),
                                  keras.layers.Dense(10, activation="softmax")])
        model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
        return model

    return build


def test_keras_tuner_fatal_error_stops_the_search_and_is_raised(tmp_path, ray_session):
    """kt.errors.FatalValueError in a trial stops the search at once (not after all 12
    trials) and search() raises it, as KerasTuner does."""
    x, y = _digits(200)
    tuner = kt.RandomSearch(_failing_build("fatal"), objective="val_accuracy", max_trials=12,
                            directory=tmp_path, project_name="fatal", seed=1)
    with pytest.raises(kt.errors.FatalValueError, match="cannot be built"):
        tuner.search(x, y, epochs=1, validation_split=0.2, verbose=0)
    df = tuner.results.dataframe()
    assert (df["status"] == "ERROR").sum() >= 1 and len(df) <= 4, df[["status"]]


def test_keras_tuner_consecutive_failures_stop_the_search_early(tmp_path, ray_session):
    x, y = _digits(200)
    tuner = kt.RandomSearch(_failing_build("failed"), objective="val_accuracy", max_trials=12,
                            max_consecutive_failed_trials=2, directory=tmp_path,
                            project_name="failed", seed=1)
    with pytest.raises(RuntimeError, match="consecutive failures exceeded the limit of 2"):
        tuner.search(x, y, epochs=1, validation_split=0.2, verbose=0)
    assert len(tuner.results.dataframe()) <= 4  # stopped there, not after 12 trials


def test_keras_tuner_search_without_data_when_the_hypermodel_fits_itself(tmp_path, ray_session):
    """KerasTuner allows search() with no data when HyperModel.fit finds its own (and may
    train no Keras model); its hyperparameters and returned score drive the search."""

    class FitsItself(kt.HyperModel):
        def build(self, hp):
            import keras

            hp.Fixed("fixed", 3)
            return keras.Sequential()

        def fit(self, hp, model, *args, **kwargs):
            assert not args  # no data was given to search()
            return float(hp.Choice("choice", [0, 1, 2]) + hp.get("fixed"))

    tuner = kt.GridSearch(hypermodel=FitsItself(), directory=tmp_path, project_name="nodata")
    tuner.search(verbose=0)
    trials = list(tuner.oracle.trials.values())
    assert sorted(t.hyperparameters.values["choice"] for t in trials) == [0, 1, 2]
    assert sorted(t.score for t in trials) == [3.0, 4.0, 5.0]
    assert tuner.get_best_hyperparameters()[0].values["choice"] == 0  # the score is minimized


def test_space_discovery_tries_each_value_of_a_short_integer_range():
    """A name that only a value in between declares (a ``Lambda`` in a layer loop reads the
    loop variable when called, so 2 layers declare ``bias1`` and 3 only ``bias2``) is found
    before the search, as KerasTuner finds it during trials; a long range probes its top."""
    from pipeline.compat._hyperparameters import discover

    def build(hp):
        for i in range(hp.Int("layers", 1, 3)):
            pass
        hp.Float(f"bias{i}", -1, 1)
        if hp.Int("units", 8, 256, step=8) == 128:
            hp.Boolean("only_at_128")

    assert sorted(discover(build)) == ["bias0", "bias1", "bias2", "layers", "units"]


def test_space_discovery_survives_a_build_that_refuses_some_values():
    """The driver probes other values to find conditional names; a build that refuses some
    (as a user's may, with kt.errors) still gives its space; only the defaults must build."""
    from pipeline.compat._hyperparameters import discover

    def build(hp):
        units = hp.Int("units", 8, 64, step=8)
        if units > 40:
            raise kt.errors.FatalValueError("too many units")
        if hp.Boolean("deep"):
            hp.Int("depth", 2, 4)

    assert list(discover(build)) == ["units", "deep", "depth"]

    def broken(hp):
        hp.Int("units", 8, 64, step=8)
        raise ValueError("broken at the defaults")

    with pytest.raises(ValueError, match="broken at the defaults"):
        discover(broken)


def test_optuna_objective_reads_its_study_through_trial_study(tmp_path, ray_session):
    """``trial.study`` in an objective reads the study as Optuna's does at that moment (the
    trials so far, the best one, attributes: e.g. optuna-examples' pytorch_checkpoint.py
    reads ``trial.study.trials[n].user_attrs``); ``stop()`` and setters raise, saying so."""
    def objective(trial):
        x = trial.suggest_float("x", 0.0, 1.0)
        trial.set_user_attr("seen", len(trial.study.trials))
        if trial.number == 0:
            with pytest.raises(ValueError):
                trial.study.best_value  # no trial completed yet, as in Optuna
        else:
            previous = trial.study.trials[trial.number - 1]
            assert previous.user_attrs["seen"] == trial.number
            assert trial.study.best_value == max(t.value for t in trial.study.get_trials()
                                                 if t.value is not None)
        assert trial.study.direction.name == "MAXIMIZE"
        assert trial.study.user_attrs == {"owner": "me"}
        with pytest.raises(AttributeError, match="from a callback"):
            trial.study.stop()
        with pytest.raises(AttributeError, match="set_user_attr"):
            trial.study.set_user_attr("k", 1)
        return x

    study = optuna.create_study(direction="maximize", results_path=str(tmp_path),
                                study_name="reads")
    study.set_user_attr("owner", "me")
    study.optimize(objective, n_trials=3, n_jobs=1)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
    assert [t.user_attrs["seen"] for t in study.trials] == [1, 2, 3]
