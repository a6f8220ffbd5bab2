"""The search-space language and its translation for each searcher (no Ray needed)."""

from __future__ import annotations

import math

import optuna
import pytest
from hyperopt.pyll import stochastic

from pipeline.space import SearchSpace
from searchers._space import HyperoptSpace, OptunaDefineByRun, tune_domains

CONDITIONAL = {
    "layers": {"type": "int", "low": 1, "high": 3},
    "units_1": {"type": "int", "low": 16, "high": 64, "step": 16},
    "units_2": {"type": "int", "low": 16, "high": 64, "step": 16, "when": {"layers": [2, 3]}},
    "units_3": {"type": "int", "low": 16, "high": 64, "step": 16, "when": {"layers": [3]}},
    "optimizer": {"type": "choice", "values": ["adam", "sgd"]},
    "momentum": {"type": "float", "low": 0.0, "high": 0.9, "step": 0.3, "when": {"optimizer": ["sgd"]}},
    "learning_rate": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
    "batchnorm": {"type": "bool"},
    "activation": {"type": "fixed", "value": "relu"},
}


def _expected_active(cfg):
    names = {"layers", "units_1", "optimizer", "learning_rate", "batchnorm", "activation"}
    if cfg["layers"] >= 2:
        names.add("units_2")
    if cfg["layers"] == 3:
        names.add("units_3")
    if cfg["optimizer"] == "sgd":
        names.add("momentum")
    return names


def test_active_drops_inactive_children():
    space = SearchSpace.from_dict(CONDITIONAL)
    cfg = {"layers": 1, "units_1": 16, "units_2": 32, "units_3": 48, "optimizer": "adam",
           "momentum": 0.3, "learning_rate": 0.01, "batchnorm": True, "activation": "relu"}
    assert set(space.active(cfg)) == _expected_active(cfg)


def test_grid_respects_conditions_without_duplicates():
    space = SearchSpace.from_dict({
        "layers": {"type": "int", "low": 1, "high": 2},
        "units_2": {"type": "choice", "values": [8, 16], "when": {"layers": [2]}},
        "lr": {"type": "float", "low": 0.1, "high": 0.2, "step": 0.1},
    })
    grid = space.grid()
    # layers=1: 2 lrs; layers=2: 2 units x 2 lrs
    assert len(grid) == 6
    assert len({tuple(sorted(c.items())) for c in grid}) == 6
    assert all(("units_2" in c) == (c["layers"] == 2) for c in grid)


def test_optuna_never_samples_inactive_children_and_keeps_log_scale():
    space = SearchSpace.from_dict(CONDITIONAL)
    define = OptunaDefineByRun(space)
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=1, n_startup_trials=5))
    for _ in range(40):
        trial = study.ask()
        fixed = define(trial)
        cfg = {**trial.params, **fixed}
        assert set(cfg) == _expected_active(cfg), cfg
        study.tell(trial, cfg["learning_rate"])
    dist = study.trials[0].distributions
    assert dist["learning_rate"].log is True
    assert dist["units_1"].step == 16
    seen_layers = {t.params["layers"] for t in study.trials}
    assert seen_layers == {1, 2, 3}


def test_hyperopt_nested_space_flattens_to_active_values():
    space = SearchSpace.from_dict(CONDITIONAL)
    translated = HyperoptSpace(space)
    assert translated.nested
    hspace = translated.build()
    import numpy as np

    rng = np.random.default_rng(0)
    for _ in range(50):
        flat = translated.flatten(stochastic.sample(hspace, rng=rng))
        assert set(flat) == _expected_active(flat), flat
        assert flat["units_1"] in (16, 32, 48, 64)
        assert 1e-4 <= flat["learning_rate"] <= 1e-1
        assert isinstance(flat["layers"], int) and 1 <= flat["layers"] <= 3


def test_tune_domains_map_every_kind():
    from ray.tune.search.sample import Categorical, Float, Integer

    domains = tune_domains(SearchSpace.from_dict(CONDITIONAL))
    assert isinstance(domains["layers"], Integer)
    assert isinstance(domains["units_1"], Integer)  # stepped: low + k * step for a drawn k
    assert isinstance(domains["learning_rate"], Float)
    assert "LogUniform" in type(domains["learning_rate"].sampler).__name__
    assert isinstance(domains["optimizer"], Categorical)
    assert domains["activation"] == "relu"
    samples = [domains["units_1"].sample() for _ in range(50)]
    assert set(samples) <= {16, 32, 48, 64}


# lows that are not multiples of their steps: Ray's qrandint/quniform and HyperOpt's quniform
# round to multiples of the step (12..36 step 8 gave 16, 24, 32; Ray refused 0.05 step 0.1)
OFF_MULTIPLE = {
    "units": {"type": "int", "low": 12, "high": 38, "step": 8},
    "dropout": {"type": "float", "low": 0.05, "high": 0.5, "step": 0.1},
}
OFF_MULTIPLE_GRID = {"units": {12, 20, 28, 36}, "dropout": {0.05, 0.15, 0.25, 0.35, 0.45}}


def _samples_of(translation: str, space: SearchSpace, n: int = 200) -> list[dict]:
    import numpy as np

    if translation == "tune":
        domains = tune_domains(space)
        return [{k: d.sample() for k, d in domains.items()} for _ in range(n)]
    if translation == "hyperopt":
        translated, rng = HyperoptSpace(space), np.random.default_rng(0)
        hspace = translated.build()
        return [translated.flatten(stochastic.sample(hspace, rng=rng)) for _ in range(n)]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    define, out = OptunaDefineByRun(space), []
    for _ in range(n):
        trial = study.ask()
        define(trial)
        out.append(dict(trial.params))
        study.tell(trial, 0.0)
    return out


@pytest.mark.parametrize("translation", ["tune", "hyperopt", "optuna"])
def test_stepped_numbers_take_exactly_low_plus_k_steps_in_every_searcher(translation):
    samples = _samples_of(translation, SearchSpace.from_dict(OFF_MULTIPLE))
    for name, grid in OFF_MULTIPLE_GRID.items():
        seen = {round(s[name], 9) for s in samples}
        assert seen == grid, (name, sorted(seen))
    assert all(type(s["units"]) is int for s in samples)


def test_clipped_brings_any_number_onto_the_parameter():
    space = SearchSpace.from_dict({**OFF_MULTIPLE,
                                   "lr": {"type": "float", "low": 1e-3, "high": 3e-2, "log": True},
                                   "n": {"type": "int", "low": 1, "high": 9, "log": True}})
    units, dropout, lr, n = (space.params[k] for k in ("units", "dropout", "lr", "n"))
    assert [units.clipped(v) for v in (-5, 15.9, 16.1, 37, 99)] == [12, 12, 20, 36, 36]
    assert [dropout.clipped(v) for v in (0.0, 0.1, 0.2, 0.49, 0.6)] == [0.05, 0.15, 0.25, 0.45, 0.45]  # ties up
    assert [lr.clipped(v) for v in (9.2e-4, 0.01, 0.036)] == [1e-3, 0.01, 3e-2]
    assert [n.clipped(v) for v in (0.2, 4.6, 12)] == [1, 5, 9] and type(n.clipped(4.6)) is int


@pytest.mark.parametrize("bad, message", [
    ({"x": {"type": "int", "low": 5, "high": 1}}, "low (5) must be <= high (1)"),
    ({"x": {"type": "float", "low": 0.0, "high": 1.0, "log": True}}, "log scale needs low > 0"),
    ({"x": {"type": "choice", "values": [1], "when": {"y": [1]}}}, "unknown parent"),
    ({"x": {"type": "int", "low": 1, "high": 2}, "y": {"type": "int", "low": 1, "high": 2, "when": {"x": [7]}}},
     "can never be taken"),
])
def test_space_errors(bad, message):
    with pytest.raises(Exception) as info:
        SearchSpace.from_dict(bad)
    assert message in str(info.value)


def test_float_grid_needs_step():
    with pytest.raises(ValueError, match="step"):
        SearchSpace.from_dict({"x": {"type": "float", "low": 0.1, "high": 1.0}}).grid()
    g = SearchSpace.from_dict({"x": {"type": "float", "low": 0.1, "high": 0.3, "step": 0.1}}).grid()
    assert [round(c["x"], 6) for c in g] == [0.1, 0.2, 0.3]
    assert math.isclose(g[-1]["x"], 0.3)


@pytest.mark.parametrize("searcher", ["hyperopt", "tpe"])
def test_points_to_evaluate_are_suggested_as_given(tmp_path, searcher):
    """HyperOpt samples a linear int or a stepped float as low + k * step: it was handed the
    points' values as k (units=20 of 12..36 step 8 became k=20, clipped to 36; layers=2 of
    1..3 became 3)."""
    import searchers
    from pipeline.spec import parse_spec
    from tests.conftest import tiny_spec

    space = {**OFF_MULTIPLE, "layers": {"type": "int", "low": 1, "high": 3},
             "optimizer": {"type": "choice", "values": ["adam", "sgd"]},
             "learning_rate": {"type": "float", "low": 1e-3, "high": 3e-2, "log": True}}
    points = [{"units": 20, "dropout": 0.25, "layers": 2, "optimizer": "sgd", "learning_rate": 0.01},
              {"units": 36, "dropout": 0.05, "layers": 1, "optimizer": "adam", "learning_rate": 0.002}]
    spec = parse_spec(tiny_spec(tmp_path, space=space,
                                searcher={"name": searcher, "points_to_evaluate": points}))
    generator, _, _ = searchers.build(spec, spec.search_space())
    suggested = [generator.searcher.suggest(f"t{i}") for i in range(len(points))]
    assert [{k: s[k] for k in points[0]} for s in suggested] == points


def test_a_point_is_refused_off_the_step_grid_unless_a_grid_search_declares_it(tmp_path):
    from pipeline.spec import SpecError, parse_spec
    from tests.conftest import tiny_spec

    p = SearchSpace.from_dict({"u": {"type": "int", "low": 10, "high": 50, "step": 20}}).params["u"]
    assert p.rejects(30) is None
    assert p.rejects(15) == "15 is not on the step grid (10, 30, 50: low + k * step)"
    space = {"units": {"type": "int", "low": 8, "high": 32, "step": 8, "grid": [12, 8, 16, 24, 32]},
             "learning_rate": {"type": "float", "low": 1e-3, "high": 3e-2, "log": True}}
    point = {"units": 12, "learning_rate": 0.01}
    # run exactly as given by the manual (and grid) search: KerasTuner's grid adds its default
    parse_spec(tiny_spec(tmp_path, space=space, searcher={"name": "manual", "points_to_evaluate": [point]}))
    for searcher in ("tpe", "hyperopt", "random"):  # these would sample it off the declared grid
        with pytest.raises(SpecError, match=r"points_to_evaluate\[0\]\.units: 12 is not on the step grid"):
            parse_spec(tiny_spec(tmp_path, space=space, searcher={"name": searcher, "points_to_evaluate": [point]}))


def test_step_grids_stay_in_range_and_are_never_listed_whole():
    import pickle

    space = SearchSpace.from_dict({
        "a": {"type": "float", "low": 0.1 * 3, "high": 0.9, "step": 0.1},  # low 0.30000000000000004
        "b": {"type": "float", "low": 2.5e-7, "high": 2.5e-7 + 10 * 1e-7, "step": 1e-7},
        "fine": {"type": "float", "low": 0.0, "high": 1.0, "step": 1e-7},
        "wide": {"type": "int", "low": 0, "high": 2 * 10**9, "step": 2}})
    for name in ("a", "b"):
        p = space.params[name]
        assert all(p.low <= v <= p.high and p.rejects(v) is None for v in p.steps()), name
        assert p.rejects(p.clipped(p.low)) is None and p.rejects(p.clipped(p.high)) is None
    assert space.params["fine"].n_steps() == 10**7 + 1 and space.params["wide"].n_steps() == 10**9 + 1
    assert space.params["wide"].rejects(1_999_999_998) is None
    domains = tune_domains(space)  # no list of 10**9 values
    assert len(pickle.dumps(domains["wide"])) < 10_000
    assert all(v % 2 == 0 for v in domains["wide"].sample(size=50))
    hyperopt = HyperoptSpace(space)
    hyperopt.build()
    assert hyperopt.labels({"wide": 1_999_999_998, "fine": 0.5}) == {"wide": 999_999_999, "fine": 5_000_000}


def test_hyperopt_draws_every_step_as_often_and_takes_one_value_ranges(tmp_path):
    import collections

    import numpy as np

    import searchers
    from pipeline.spec import parse_spec
    from tests.conftest import tiny_spec

    translated = HyperoptSpace(SearchSpace.from_dict(OFF_MULTIPLE))
    hspace, rng = translated.build(), np.random.default_rng(0)
    counts = collections.Counter(translated.flatten(stochastic.sample(hspace, rng=rng))["units"]
                                 for _ in range(4000))
    assert set(counts) == {12, 20, 28, 36} and min(counts.values()) > 0.8 * 1000, counts  # ends were ~500
    # one value only (low == high, a step past the range): TPE failed after its random start
    space = {"units": {"type": "int", "low": 16, "high": 16},
             "layers": {"type": "int", "low": 1, "high": 3, "step": 5},
             "learning_rate": {"type": "float", "low": 1e-3, "high": 3e-2, "log": True}}
    spec = parse_spec(tiny_spec(tmp_path, space=space, searcher={"name": "hyperopt"}))
    generator, _, _ = searchers.build(spec, spec.search_space())
    for i in range(25):
        config = generator.searcher.suggest(f"t{i}")
        assert config["units"] == 16 and config["layers"] == 1, config
        generator.searcher.on_trial_complete(f"t{i}", {"val_accuracy": config["learning_rate"]})
