"""Every registered searcher and scheduler survives Ray's pickling, as Tune pickles them.

Tune pickles the search algorithm and scheduler with ``ray.cloudpickle`` into the
experiment state (``tuner.pkl``, ``searcher-state-*.pkl``) and ``--resume``
unpickles them; Optuna 5.1's NSGA-II sampler broke that with a lock. These tests
build each registry entry from a spec, use it, round-trip it, and use it again.
"""

from __future__ import annotations

import doctest
import threading

import pytest
from ray import cloudpickle

import pipeline.portable
from pipeline.portable import PortableLock, check_portable, portable_locks
from pipeline.spec import parse_spec
from searchers import SCHEDULERS, SEARCHERS
from tests.conftest import tiny_spec

MULTI = {"objective": {"metric": ["val_accuracy", "num_params"], "mode": ["max", "min"]}}


def _spec(tmp_path, searcher: str, scheduler: str = "fifo", **sections):
    raw = tiny_spec(tmp_path, searcher={"name": searcher}, scheduler={"name": scheduler}, **sections)
    if searcher == "manual":
        raw["searcher"]["points_to_evaluate"] = [{"units": 16, "learning_rate": 0.01}]
    if searcher == "grid":
        raw["space"]["learning_rate"]["grid"] = [0.001, 0.01]
    return parse_spec(raw)


def _result(spec, value: float) -> dict:
    metrics = spec.objective.metric if spec.objective.multi else [spec.objective.metric]
    return {**{m: value * (i + 1) for i, m in enumerate(metrics)}, "training_iteration": 1}


def _searcher_cases():
    cases = [(name, {}) for name in SEARCHERS]
    cases += [(name + "-multi", MULTI) for name in SEARCHERS if SEARCHERS[name].multi_objective]
    return cases


@pytest.mark.parametrize("name,sections", _searcher_cases(), ids=[c[0] for c in _searcher_cases()])
def test_every_searcher_round_trips_through_ray_cloudpickle(tmp_path, name, sections):
    searcher = name.removesuffix("-multi")
    spec = _spec(tmp_path, searcher, **sections)
    alg, param_space = SEARCHERS[searcher].build(spec, spec.search_space())
    params = set(spec.search_space().params)
    if SEARCHERS[searcher].variant_generator:
        # Ray's variant generator: Tune samples param_space; the generator must travel
        restored = cloudpickle.loads(cloudpickle.dumps(alg))
        assert type(restored) is type(alg)
        assert set(param_space) == params
        return
    # use it first, so the pickled state is not just the constructor's
    for i in range(3):
        config = alg.suggest(f"t{i}")
        assert set(config) == params, config
        alg.on_trial_complete(f"t{i}", _result(spec, 0.5 + i / 10))
    restored = cloudpickle.loads(cloudpickle.dumps(alg))  # what tuner.pkl holds
    config = restored.suggest("t3")
    assert set(config) == params, config
    restored.on_trial_complete("t3", _result(spec, 0.9))
    # what --resume reads: the searcher state Tune saves into the experiment folder
    alg.save_to_dir(str(tmp_path), session_str="x")
    fresh, _ = SEARCHERS[searcher].build(spec, spec.search_space())
    fresh.restore_from_dir(str(tmp_path))
    assert set(fresh.suggest("t4")) == params


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_every_scheduler_round_trips_through_ray_cloudpickle(tmp_path, name):
    spec = _spec(tmp_path, "random" if name == "pbt" else "tpe", name)
    scheduler = SCHEDULERS[name].build(spec, spec.search_space())
    restored = cloudpickle.loads(cloudpickle.dumps(scheduler))
    if scheduler is None:  # fifo: Tune's default FIFOScheduler
        assert restored is None
        return
    assert type(restored).__name__ == type(scheduler).__name__
    plain = (int, float, str, bool, type(None))
    settings = {k: v for k, v in vars(scheduler).items() if isinstance(v, plain)}
    assert settings and {k: vars(restored)[k] for k in settings} == settings
    # what Tune does next with it
    assert restored.set_search_properties(spec.objective.metric, spec.objective.mode)


def test_optuna_nsga2_sampler_keeps_working_after_a_round_trip():
    import optuna

    sampler = portable_locks(optuna.samplers.NSGAIISampler(seed=0, population_size=4))
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    study.optimize(lambda t: (t.suggest_float("x", 0, 1), t.suggest_int("n", 1, 9)), n_trials=6)
    copy = cloudpickle.loads(cloudpickle.dumps(study.sampler))
    study2 = optuna.create_study(directions=["maximize", "minimize"], sampler=copy)
    study2.add_trials(study.trials)
    study2.optimize(lambda t: (t.suggest_float("x", 0, 1), t.suggest_int("n", 1, 9)), n_trials=4)
    assert len(study2.trials) == 10


def test_portable_lock_is_a_lock_and_pickles_unlocked():
    lock = PortableLock()
    with lock:
        assert lock.locked()
        copy = cloudpickle.loads(cloudpickle.dumps(lock))
    assert not copy.locked() and not lock.locked()
    rlock = PortableLock(reentrant=True)
    seen = []
    with rlock, rlock:  # reentrant
        other = threading.Thread(target=lambda: seen.append(rlock.locked()))
        other.start()
        other.join()
        copy = cloudpickle.loads(cloudpickle.dumps(rlock))
    assert seen == [True] and not rlock.locked() and not copy.locked()


def test_check_portable_names_the_object_and_the_attribute():
    class Sampler:
        def __init__(self):
            self.state = {"cache": threading.Lock()}

    with pytest.raises(TypeError) as info:
        check_portable({"pruner": object(), "sampler": Sampler()})
    message = str(info.value)
    assert message.startswith("sampler (Sampler) cannot be sent to Ray workers")
    assert "at sampler.state['cache']" in message
    assert "_thread.lock" in message

    lock = threading.Lock()

    def objective(trial):
        with lock:
            return 1.0

    with pytest.raises(TypeError, match=r"objective \(function\).*at objective\.<closure lock>"):
        check_portable({"objective": objective})
    class Fixed:
        def __init__(self):
            self.lock = threading.RLock()

    check_portable({"sampler": portable_locks(Fixed())})  # fine: nothing raised
    check_portable({"objective": lambda trial: 1.0, "callbacks": []})


def test_portable_docstring_example_runs():
    result = doctest.testmod(pipeline.portable)
    assert result.attempted >= 4 and result.failed == 0
