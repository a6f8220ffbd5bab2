"""KerasTuner's hyperparameter classes on the front door (``kt.Int``, ``kt.Float``, ...).

Pure Python (no Ray, no Keras) except the last test, which checks the classes against the
installed KerasTuner itself, value for value.
"""

import math
import random

import pytest

from pipeline.compat._hp_types import Boolean, Choice, Fixed, Float, HyperParameter, Int
from pipeline.compat._hyperparameters import HyperParameters, deserialize, discover, serialize, to_space

SEEDS = range(300)


@pytest.mark.parametrize("hp, grid", [
    (Int("units", 8, 70, step=8), [8, 16, 24, 32, 40, 48, 56, 64]),  # 70 itself is off the grid
    (Int("batch", 2, 32, step=2, sampling="log"), [2, 4, 8, 16, 32]),
    (Int("layers", 1, 4), [1, 2, 3, 4]),
    (Float("rate", 0.0, 1.0, step=0.25), [0.0, 0.25, 0.5, 0.75, 1.0]),
    (Float("lr", 1e-4, 1.0, step=10, sampling="log"), [1e-4, 1e-3, 1e-2, 1e-1, 1.0]),
])
def test_stepped_numbers_sample_only_their_grid_and_every_point_of_it(hp, grid):
    assert list(hp.values) == pytest.approx(grid)
    samples = [hp.random_sample(seed) for seed in SEEDS]
    assert {min(grid, key=lambda g: abs(g - s)) for s in samples} == set(grid)  # every point drawn
    assert all(any(math.isclose(s, g, abs_tol=1e-12) for g in grid) for s in samples)
    assert all(type(s) is type(grid[-1]) for s in samples)
    for value in hp.values:  # each grid point owns a bucket of probability; its middle maps back
        p = hp.value_to_prob(value)
        assert 0 < p < 1 and hp.prob_to_value(p) == pytest.approx(value)
    assert hp.random_sample(7) == hp.random_sample(7)


def test_reverse_log_packs_values_near_the_top():
    hp = Float("momentum", 0.01, 100, step=10, sampling="reverse_log")
    assert list(hp.values) == pytest.approx([100.0, 99.91, 99.01, 90.01, 0.01])
    assert hp.prob_to_value(0.3) == pytest.approx(99.91)
    free = Float("momentum", 0.01, 100, sampling="reverse_log")
    samples = [free.random_sample(seed) for seed in SEEDS]
    assert all(0.01 <= s <= 100 for s in samples)
    assert sum(s > 90 for s in samples) > len(samples) / 2  # most of the mass near the top


@pytest.mark.parametrize("hp", [Int("n", 2, 1024, sampling="log"), Int("n", 1, 50, sampling="reverse_log"),
                                Float("x", 1e-3, 1e3, sampling="log"), Float("x", -2.0, 3.0),
                                Float("x", 1.0, 50.0, sampling="reverse_log")])
def test_unstepped_numbers_round_trip_and_stay_in_range(hp):
    samples = [hp.random_sample(seed) for seed in SEEDS]
    assert all(hp.min_value <= s <= hp.max_value for s in samples)
    if isinstance(hp, Int):
        assert all(isinstance(s, int) for s in samples)
        assert all(hp.prob_to_value(hp.value_to_prob(v)) == v
                   for v in range(hp.min_value, hp.max_value + 1))
        assert max(samples) == hp.max_value or hp.sampling == "log"  # the top is reachable
    else:
        for p in (0.0, 0.1, 0.5, 0.93):
            assert hp.value_to_prob(hp.prob_to_value(p)) == pytest.approx(p, abs=1e-9)
    assert len(hp.values) == len(set(hp.values)) and 1 < len(hp.values) <= 10
    assert list(hp.values) == sorted(hp.values)


def test_a_range_of_one_value():
    hp = Float("x", 2, 2)
    assert hp.random_sample() == 2.0 and hp.value_to_prob(2.0) == 0.5


def test_defaults_and_kinds():
    assert (Int("a", 3, 9).default, Int("a", 3, 9, default=5).default) == (3, 5)
    assert Float("a", 0.5, 1).default == 0.5 and isinstance(Float("a", 0, 1).max_value, float)
    assert (Choice("a", ["x", "y"]).default, Choice("a", ["x", "y"], default="y").default) == ("x", "y")
    assert Boolean("a").default is False and Boolean("a", default=True).default is True
    assert Fixed("a", 8.5).default == 8.5 and Fixed("a", True).value is True
    assert [c("a", *args).kind for c, args in [(Int, (0, 1)), (Float, (0, 1)), (Choice, ([1],)),
                                               (Boolean, ()), (Fixed, (1,))]] == [
        "int", "float", "choice", "bool", "fixed"]
    # as in KerasTuner, booleans in a Choice become the integers 1 and 0, ordered
    flags = Choice("a", [True, False])
    assert flags.values == [1, 0] and flags.ordered is True
    assert Choice("a", [0.1, 0.2]).ordered and not Choice("a", [1, 2], ordered=False).ordered


def test_choice_and_boolean_probabilities():
    c = Choice("opt", ["adam", "sgd", "rmsprop", "adagrad"])
    assert [c.value_to_prob(v) for v in c.values] == [0.125, 0.375, 0.625, 0.875]
    assert [c.prob_to_value(p) for p in (0.0, 0.2499, 0.25, 0.99, 1.0)] == [
        "adam", "adam", "sgd", "adagrad", "adagrad"]
    assert {c.random_sample(seed) for seed in SEEDS} == set(c.values)
    b = Boolean("b")
    assert {b.random_sample(seed) for seed in SEEDS} == {True, False}
    assert (b.prob_to_value(b.value_to_prob(True)), b.prob_to_value(b.value_to_prob(False))) == (
        True, False)
    assert Fixed("f", "relu").value_to_prob("relu") == 0.5


@pytest.mark.parametrize("make, error, message", [
    (lambda: Int("u", 0.5, 10), ValueError, "min_value must be an int"),
    (lambda: Int("u", 0, 10.5), ValueError, "max_value must be an int"),
    (lambda: Int("u", 0, 10, step=1.5), ValueError, "step must be an int"),
    (lambda: Int("u", 5, 1), ValueError, r"Int\(name='u'\), min_value 5 is greater than the max_value 1"),
    (lambda: Float("u", 0, 1, sampling="cubic"), ValueError, r"Float\(name='u'\), sampling must be one of"),
    (lambda: Float("u", 0.0, 1, sampling="log"), ValueError, "sampling='log' does not support negative "
                                                              "values, found min_value: 0.0"),
    (lambda: Int("u", 1, 64, step=1, sampling="reverse_log"), ValueError, "expected step > 1"),
    (lambda: Choice("c", []), ValueError, "`values` must be provided"),
    (lambda: Choice("c", [1, "a"]), TypeError, "only one type"),
    (lambda: Choice("c", [None]), TypeError, "only `int`, `float`, `str`, or `bool`"),
    (lambda: Choice("c", ["a", "b"], ordered=True), ValueError, "`ordered` must be `False`"),
    (lambda: Choice("c", [1, 2], default=3), ValueError, "default value should be one of the choices"),
    (lambda: Boolean("b", default="yes"), ValueError, "`default` must be a Python boolean"),
    (lambda: Fixed("f", [1, 2]), ValueError, "`Fixed` value must be an `int`, `float`, `str`, or `bool`"),
])
def test_invalid_arguments_are_refused_naming_them(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_sampling_names():
    assert Int("i", 1, 8, sampling="LOG").sampling == "log"
    none = Int("i", 2, 4, sampling=None)
    assert (none.sampling, list(none.values)) == ("linear", [2, 3, 4])


ALL = [Int("units", 8, 64, step=8, default=16), Int("n", 1, 100, sampling="log"),
       Float("lr", 1e-4, 1e-1, sampling="log", default=1e-3), Float("d", 0, 0.5, step=0.1),
       Choice("opt", ["adam", "sgd"], default="sgd"), Choice("k", [3, 5], ordered=False),
       Boolean("bn", default=True), Fixed("act", "relu"), Fixed("w", 0.5),
       Int("units_2", 8, 32, conditions=[("layers", (2, 3))])]


@pytest.mark.parametrize("hp", ALL, ids=[f"{type(h).__name__}-{h.name}" for h in ALL])
def test_config_and_serialize_round_trip(hp):
    config = hp.get_config()
    assert config["name"] == hp.name and ("value" in config) == isinstance(hp, Fixed)
    for again in (type(hp).from_config(config), deserialize(serialize(hp)), type(hp)(**config)):
        assert type(again) is type(hp) and repr(again) == repr(hp)
        assert again.get_config() == config
        assert (again.kind, again.args, again.conditions) == (hp.kind, hp.args, hp.conditions)
        assert [again.random_sample(s) for s in range(20)] == [hp.random_sample(s) for s in range(20)]
    assert serialize(hp)["class_name"] == type(hp).__name__


def test_conditions_kept_as_pairs_and_written_as_keras_tuner_parents():
    hp = Int("units_2", 8, 32, conditions=[("layers", [2, 3])])
    assert hp.conditions == [("layers", (2, 3))]
    assert hp.get_config()["conditions"] == [
        {"class_name": "Parent", "config": {"name": "layers", "values": [2, 3]}}]
    assert Int.from_config(hp.get_config()).conditions == [("layers", (2, 3))]
    assert Int("u", 1, 2, conditions=("layers", 2)).conditions == [("layers", (2,))]
    with pytest.raises(TypeError, match="a condition must be"):
        Int("u", 1, 2, conditions=[object()])
    with pytest.raises(ValueError, match="cannot deserialize"):
        deserialize({"class_name": "Bogus", "config": {}})
    with pytest.raises(NotImplementedError):
        HyperParameter("base").random_sample()


def test_container_serializes_and_takes_objects_in():
    hp = HyperParameters()
    hp.Choice("layers", [1, 2, 3], default=2)
    with hp.conditional_scope("layers", [2, 3]):
        hp.Int("units_2", 8, 32, step=8)
    hp.values["layers"] = 3
    again = deserialize(serialize(hp))
    assert isinstance(again, HyperParameters) and again.values == {"layers": 3, "units_2": 8}
    assert [repr(d) for d in again.space] == [repr(d) for d in hp.space]
    assert again.space[1].conditions == [("layers", (2, 3))]
    # definitions made as objects are searched like hp.* calls
    declared = HyperParameters()
    declared.merge([Float("lr", 1e-4, 1e-2, sampling="log"), Boolean("bn")])
    assert declared.values == {"lr": 1e-4, "bn": False}
    defs = discover(lambda hp: hp.Int("units", 8, 16, step=8), declared=declared)
    space, _ = to_space(defs)
    assert space == {"lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
                     "bn": {"type": "bool"},
                     "units": {"type": "int", "low": 8, "high": 16, "step": 8}}


def test_grid_values_are_kerastuners_with_the_default_first_where_it_is_not_among_them():
    """KerasTuner's GridSearch walks each value list with the default put first, so
    ``Float("x", 1, 2)`` is tried at 1.0 and at its ten spread values (its own test counts
    5 x 11 trials for this space)."""
    from pipeline.space import SearchSpace

    defs = discover(lambda hp: (hp.Int("int", 1, 5), hp.Float("float", 1, 2),
                                hp.Int("odd", 1, 7, step=3, default=2)))
    space, _ = to_space(defs, grid=True)
    assert space["float"]["grid"][0] == 1.0 and len(space["float"]["grid"]) == 11
    assert "grid" not in space["int"]  # its step grid 1..5 holds its default already
    assert space["odd"]["grid"] == [2, 1, 4, 7]
    assert len(SearchSpace.from_dict(space).grid()) == 5 * 11 * 4
    assert "grid" not in to_space(defs)[0]["float"]  # random search samples the range


def test_hp_calls_refuse_what_the_classes_refuse():
    hp = HyperParameters()
    with pytest.raises(ValueError, match="min_value must be an int"):
        hp.Int("u", 0.5, 4)
    with pytest.raises(TypeError, match="only one type"):
        hp.Choice("c", [1, "a"])
    assert hp.values == {} and hp.space == []
    assert hp.Float("x", 1, 2, step=0.5) == 1.0 and hp.Boolean("b", default=True) is True


def test_same_answers_as_keras_tuner():
    """Value for value against the installed KerasTuner (its sampling, probabilities, configs)."""
    real = pytest.importorskip("keras_tuner").engine.hyperparameters
    rng = random.Random(0)
    for ours in ALL[:-1]:
        config = ours.get_config()
        theirs = getattr(real, type(ours).__name__)(**config)
        assert repr(ours) == repr(theirs)
        assert ours.get_config() == theirs.get_config()
        assert list(ours.get_config()) == list(theirs.get_config())  # search_space_summary prints it
        assert list(ours.values) == pytest.approx(sorted(theirs.values) if ours.kind in (
            "int", "float") and ours.step is None else list(theirs.values))
        assert [ours.random_sample(s) for s in SEEDS] == [theirs.random_sample(s) for s in SEEDS]
        probs = [rng.random() for _ in range(200)] + [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
        assert [ours.prob_to_value(p) for p in probs] == [theirs.prob_to_value(p) for p in probs]
        assert [ours.value_to_prob(v) for v in ours.values] == [theirs.value_to_prob(v)
                                                                 for v in ours.values]
        assert repr(deserialize(real.serialize(theirs))) == repr(ours)
        assert repr(real.deserialize(serialize(ours))) == repr(theirs)


@pytest.mark.parametrize("call", [lambda: Int("units", 8, 64).to_proto(), lambda: Choice.from_proto(None),
                                  lambda: HyperParameters().to_proto(),
                                  lambda: HyperParameters.from_proto(None)])
def test_protos_are_refused_naming_what_to_use_instead(call):
    """KerasTuner's to_proto/from_proto (its gRPC distribution's) are not provided: the call
    says so and names the config/serialize round trips instead of an AttributeError."""
    with pytest.raises(NotImplementedError, match=r"protocol buffers are not provided.*get_config"):
        call()
