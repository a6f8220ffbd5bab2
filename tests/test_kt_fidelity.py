"""KerasTuner door: KerasTuner's public behaviour where its own tests (engine/tuner_test.py)
found small differences: oracle objective and space objects, errors and where they come."""

from __future__ import annotations

import copy
import pathlib
import threading

import numpy as np
import pytest

from pipeline.compat import keras_tuner as kt
from pipeline.compat._kt_trial import _check_returned, _Job
from pipeline.storage import SPEC_FILE
from tests.models import tiny_kt_build

_build = tiny_kt_build  # one small build function for the KerasTuner door tests


def test_oracle_objective_is_an_objective_object(tmp_path):
    one = kt.RandomSearch(_build, objective="val_accuracy", max_trials=1, directory=tmp_path)
    assert one.oracle.objective == kt.Objective("val_accuracy", "max")
    assert one.oracle.objective.name == "val_accuracy"

    two = kt.RandomSearch(_build, objective=["val_accuracy", kt.Objective("val_loss", "min")],
                          max_trials=1, directory=tmp_path)
    multi = two.oracle.objective
    assert (multi.name, multi.direction) == ("multi_objective", "min")
    assert [o.name for o in multi.objectives] == ["val_accuracy", "val_loss"]
    assert str(multi) == ('MultiObjective(name="multi_objective", direction="min"): '
                          '[Objective(name="val_accuracy", direction="max"), '
                          'Objective(name="val_loss", direction="min")]')


def test_unknown_objective_direction_is_refused_where_the_tuner_is_made(tmp_path):
    with pytest.raises(ValueError, match="Could not infer optimization direction.*my_score"):
        kt.RandomSearch(_build, objective="my_score", max_trials=1, directory=tmp_path)
    with pytest.raises(ValueError, match="Could not infer"):
        kt.RandomSearch(_build, objective=["val_loss", "my_score"], directory=tmp_path)
    assert not list(tmp_path.iterdir())


def test_oracle_and_bad_hypermodel_arguments_are_refused(tmp_path):
    with pytest.raises(ValueError, match="Expected `oracle` argument.*searcher="):
        kt.Tuner(oracle="invalid", hypermodel=_build, directory=tmp_path)
    with pytest.raises(kt.errors.FatalValueError, match="`hypermodel` argument should be either"):
        kt.RandomSearch("_build", objective="val_loss", directory=tmp_path)


def test_tuner_keeps_its_arguments_as_given(tmp_path):
    tuner = kt.RandomSearch(_build, objective="val_loss", max_trials=1, directory=tmp_path,
                            optimizer="rmsprop", loss="mse", metrics=["mse"])
    assert isinstance(tuner.directory, pathlib.Path) and tuner.directory == tmp_path
    assert (tuner.optimizer, tuner.loss, tuner.metrics) == ("rmsprop", "mse", ["mse"])
    assert type(tuner.hypermodel).__name__ == "DefaultHyperModel"
    assert tuner.project_dir == str(tmp_path / "untitled_project")


def test_oracle_hyperparameters_is_the_declared_space_when_nothing_else_is_tuned(tmp_path):
    hp = kt.HyperParameters()
    hp.Int("units", 2, 4)
    hp.Choice("lr", [1e-2, 1e-3])
    static = kt.RandomSearch(_build, objective="val_loss", hyperparameters=hp,
                             allow_new_entries=False, directory=tmp_path)
    assert static.oracle.hyperparameters is hp

    only_lr = kt.HyperParameters()
    only_lr.Choice("lr", [1e-2, 1e-3])
    restricted = kt.RandomSearch(_build, objective="val_loss", hyperparameters=only_lr,
                                 tune_new_entries=False, directory=tmp_path)
    assert [d.name for d in restricted.oracle.hyperparameters.space] == ["lr"]

    with pytest.raises(RuntimeError, match=r"`allow_new_entries` is `False`.*'units'"):
        kt.RandomSearch(_build, objective="val_loss", hyperparameters=only_lr,
                        allow_new_entries=False, directory=tmp_path)


def test_oracle_hyperparameters_hold_the_defaults_of_the_active_ones(tmp_path):
    def build(hp):
        wide = hp.Boolean("wide", default=False)
        with hp.conditional_scope("wide", [True]):
            if wide:
                hp.Int("extra", 1, 3)
        hp.Int("units", 2, 8, default=4)
        return _build(hp)

    space = kt.RandomSearch(build, objective="val_loss", directory=tmp_path).oracle.hyperparameters
    assert {d.name for d in space.space} == {"wide", "extra", "units", "lr"}
    assert space.values == {"wide": False, "units": 4, "lr": 1e-2}
    assert space.get("units") == 4
    with pytest.raises(ValueError, match="inactive"):
        space.get("extra")


def test_space_before_the_search_is_what_kerastuner_knows_then(tmp_path, capsys):
    """KerasTuner knows only what the build with defaults declares before its first trial
    (one layer: ``width_0``); the door discovers the deeper layers' names up front for its
    searcher, but shows them only once trials have run."""
    def build(hp):
        for i in range(hp.Int("layers", 1, 3)):
            hp.Int(f"width_{i}", 2, 4)
        return _build(hp)

    tuner = kt.RandomSearch(build, objective="val_loss", max_trials=1, directory=tmp_path)
    shown = tuner.oracle.hyperparameters
    assert [d.name for d in shown.space] == ["layers", "width_0", "units", "lr"]
    assert shown.values == {"layers": 1, "width_0": 2, "units": 2, "lr": 1e-2}
    tuner.search_space_summary()
    assert "Default search space size: 4" in capsys.readouterr().out
    assert {"width_1", "width_2"} <= set(tuner._defs)  # discovered all the same, for the searcher


def test_search_refuses_callbacks_that_cannot_be_deep_copied(tmp_path):
    import keras

    class Locked(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.lock = threading.Lock()

    with pytest.raises(TypeError):
        copy.deepcopy(Locked())
    tuner = kt.RandomSearch(_build, objective="val_loss", max_trials=1, directory=tmp_path)
    with pytest.raises(kt.errors.FatalValueError, match="should be deep-copyable"):
        tuner.search(np.zeros((4, 3)), np.zeros(4), callbacks=[Locked()])
    assert tuner._results is None


def test_search_stops_when_the_build_returns_no_model(tmp_path):
    tuner = kt.RandomSearch(lambda hp: hp.Int("n", 1, 2) and None, objective="val_loss",
                            directory=tmp_path)
    with pytest.raises(kt.errors.FatalTypeError, match="to return a Keras Model.*NoneType"):
        tuner.search(np.zeros((4, 3)), np.zeros(4))


def _job(objective_given=True, objectives=(("val_loss", "min"),)):
    return _Job(hypermodel=None, defs=[], objectives=list(objectives), custom_fit=True,
                objective_given=objective_given)


def test_what_a_hypermodel_fit_may_return():
    import keras

    history = keras.callbacks.History()
    for ok in (0.5, 3, np.float32(1.0), {"val_loss": 1.0, "other": 2}, history):
        _check_returned(_job(), ok)
    _check_returned(_job(objective_given=False), 0.25)
    _check_returned(_job(objectives=[("val_loss", "min"), ("val_accuracy", "max")]),
                    {"val_loss": 1.0, "val_accuracy": 0.5})

    with pytest.raises(kt.errors.FatalTypeError, match=r"HyperModel\.fit\(\) to be one of"):
        _check_returned(_job(), "a")
    with pytest.raises(kt.errors.FatalTypeError, match=r"HyperModel\.fit\(\) is None"):
        _check_returned(_job(), None)
    with pytest.raises(kt.errors.FatalTypeError, match=r"to be a single float when `objective`"):
        _check_returned(_job(objective_given=False), {"val_loss": 1.0})
    with pytest.raises(kt.errors.FatalTypeError, match=r"single float"):
        _check_returned(_job(objective_given=False), history)
    with pytest.raises(kt.errors.FatalValueError, match="val_accuracy"):
        _check_returned(_job(objectives=[("val_loss", "min"), ("val_accuracy", "max")]),
                        {"val_loss": 1.0})


def test_another_tuners_project_is_not_reloaded(tmp_path):
    first = kt.RandomSearch(_build, objective="val_loss", max_trials=1, directory=tmp_path)
    where = tmp_path / "untitled_project"
    where.mkdir()
    (where / SPEC_FILE).write_text(first.build_spec().to_yaml())

    with pytest.raises(RuntimeError, match=r"searcher 'optuna-random'.*pass `overwrite=True`"):
        kt.BayesianOptimization(_build, objective="val_loss", max_trials=1, directory=tmp_path)
    with pytest.raises(RuntimeError, match="scheduler 'fifo'"):
        kt.Hyperband(_build, objective="val_loss", max_epochs=2, directory=tmp_path)
    again = kt.RandomSearch(_build, objective="val_loss", max_trials=1, directory=tmp_path)
    assert again.results.spec.searcher.name == "optuna-random"
    fresh = kt.BayesianOptimization(_build, objective="val_loss", directory=tmp_path,
                                    overwrite=True)
    assert fresh._results is None and not where.exists()


def test_search_raises_the_type_error_of_a_fit_returning_a_string(tmp_path, ray_session):
    class Strings(kt.HyperModel):
        def build(self, hp):
            return _build(hp)

        def fit(self, hp, model, *args, **kwargs):
            model.fit(*args, **kwargs)
            return "done"

    tuner = kt.RandomSearch(Strings(), objective="val_loss", max_trials=1, directory=tmp_path)
    x, y = np.random.rand(8, 3), np.random.randint(0, 2, 8)
    with pytest.raises(TypeError, match=r"HyperModel\.fit\(\) to be one of.*str: 'done'"):
        tuner.search(x, y, epochs=1, validation_data=(x, y), verbose=0)


BUILDS: list[int] = []


def _counting_build(hp):
    BUILDS.append(1)  # the script's list: the trials' builds append to their worker's copy
    return _build(hp)


def test_search_warns_of_state_the_trials_change_outside_themselves(tmp_path, ray_session):
    import keras

    from pipeline.compat._kt_changes import lost_changes

    started: set[int] = set()

    class Logging(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.began = True  # its own state: KerasTuner runs a copy of each callback too
            started.add(id(self))

    class OwnState(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.last = epoch

    class Counted(kt.HyperModel):
        def build(self, hp):
            self.builds = getattr(self, "builds", 0) + 1  # KerasTuner keeps this one object
            return _build(hp)

    clean = kt.RandomSearch(_build, objective="val_loss", max_trials=1, directory=tmp_path / "a")
    assert lost_changes(clean, kt.Tuner, [OwnState(), keras.callbacks.EarlyStopping()]) == []
    counted = kt.RandomSearch(Counted(), objective="val_loss", max_trials=1, directory=tmp_path / "b")
    assert lost_changes(counted, kt.Tuner, []) == ["Counted.build changes `self.builds`"]

    tuner = kt.RandomSearch(_counting_build, objective="val_loss", max_trials=1, directory=tmp_path)
    x, y = np.random.rand(8, 3), np.random.randint(0, 2, 8)
    with pytest.warns(UserWarning, match="search\\(\\): the build function changes") as record:
        tuner.search(x, y, epochs=1, validation_data=(x, y), verbose=0, callbacks=[Logging()])
    [warned] = [w for w in record if str(w.message).startswith("search():")]
    assert str(warned.message).startswith(
        "search(): the build function changes `BUILDS`; Logging.on_train_begin changes "
        "`started`; each trial runs in another process (a Ray worker)")
    assert warned.filename == __file__  # where the user called search()
    # the difference it warns of: the trial ran (and its callback), the script's set is empty
    assert [t.status for t in tuner.oracle.trials.values()] == ["COMPLETED"]
    assert started == set()
