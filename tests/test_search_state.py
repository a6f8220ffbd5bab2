"""A search algorithm's state always goes back with the trial list it belongs to.

Tune uploads the experiment state (the trial list) and the searcher's files one by one;
a driver killed between them once left a searcher ahead of the trial list, and
``--resume`` lost a configured trial (the chaos soak, #17) or hung on a concurrency
limit. These tests cut the "upload" by hand: the searcher's files are newer than the
trial list, as they were then. The end-to-end version is in ``tests/test_faults.py``.
"""

from __future__ import annotations

import json

import pytest
from ray.tune.experiment import Experiment

import searchers
from pipeline.spec import parse_spec
from searchers._state import KEY
from tests.conftest import tiny_spec

TRIALS = 4


def _built(tmp_path, name: str):
    raw = tiny_spec(tmp_path, searcher={"name": name}, search={"trials": TRIALS, "max_concurrent": 1})
    spec = parse_spec(raw)
    alg, param_space, _ = searchers.build(spec, spec.search_space())
    metric, mode = spec.objective.primary
    alg.set_search_properties(metric, mode, param_space)
    alg.add_configurations([Experiment("exp", lambda config: None, num_samples=TRIALS,
                                       config=param_space, storage_path=str(tmp_path / "s"))])
    return alg


def _save(alg, staging, trials) -> None:
    """What Tune's controller does: the trial list first, then the searcher's own files."""
    (staging / "experiment_state-S.json").write_text(json.dumps(
        {"trial_data": [[t.trial_id, "{}"] for t in trials], "runner_data": {}, "stats": {}}))
    alg.save_to_dir(str(staging), session_str="S")


@pytest.mark.parametrize("name", ["random", "tpe"])
def test_a_searcher_ahead_of_the_stored_trial_list_is_restored_with_the_list(tmp_path, name):
    staging = tmp_path / "staging"
    staging.mkdir()
    alg = _built(tmp_path, name)
    first = alg.next_trial()
    _save(alg, staging, [first])
    snapshot = (staging / "experiment_state-S.json").read_bytes()
    assert KEY in json.loads(snapshot)
    alg.on_trial_complete(first.trial_id, {"val_accuracy": 0.5, "training_iteration": 1})
    second = alg.next_trial()
    _save(alg, staging, [first, second])
    assert len(list(staging.glob("*state-S.*"))) >= 2  # the searcher's files are still there too
    (staging / "experiment_state-S.json").write_bytes(snapshot)  # the list upload was cut

    again = _built(tmp_path, name)
    assert again.has_checkpoint(str(staging))
    again.restore_from_dir(str(staging))
    again.on_trial_complete(first.trial_id, {"val_accuracy": 0.5, "training_iteration": 1})  # resumed
    more = []
    while len(more) <= TRIALS:
        trial = again.next_trial()
        if trial is None:
            assert again.is_finished(), "the concurrency limit waits on a trial the list never held"
            break
        more.append(trial)
        again.on_trial_complete(trial.trial_id, {"val_accuracy": 0.5, "training_iteration": 1})
    assert len(more) == TRIALS - 1  # every configured trial is created exactly once
    if name == "random":  # the seeded generator continues where the list left off
        assert more[0].config == second.config
