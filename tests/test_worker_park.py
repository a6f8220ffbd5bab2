"""Trial workers kept from one Tune run to the next (pipeline.worker_park), on real Ray Tune.

The runs here are what a front door runs (:func:`pipeline.runner.run` with a trainable
function), inside a park as the front doors' own Ray has one; each trial reports its
worker's pid, so which process ran which run's trials is seen, not assumed.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from pipeline.worker_park import WorkerPark


def _spec(tmp_path, name: str, cpu: float = 1, trials: int = 4):
    from pipeline.spec import parse_spec

    return parse_spec({
        "name": name,
        "data": {"source": "external"},
        "space": {"x": {"type": "choice", "values": [1, 2, 3, 4]}},
        "training": {"epochs": 1},
        "objective": {"metric": "score", "mode": "max"},
        "searcher": {"name": "random"},
        "scheduler": {"name": "fifo"},
        "resources": {"cpu": cpu, "gpu": 0},
        "search": {"trials": trials, "max_concurrent": 2},
        "storage": {"path": str(tmp_path)},
    }, source="test")


def _trial_in(folder):
    """A front door's trial function: it reports through Tune's session, and leaves its
    worker's pid in ``folder``."""
    def trial(config):
        from ray import tune

        open(os.path.join(folder, f"{os.getpid()}-{config['x']}-{time.monotonic_ns()}"), "w").close()
        tune.report({"score": float(config["x"])})
    return trial


def _run(tmp_path, name: str, cpu: float = 1, trials: int = 4):
    """The run's results: (statuses, pids of its trials' workers, seconds it took)."""
    from pipeline.runner import run

    pids = tmp_path / f"{name}-pids"
    pids.mkdir()
    start = time.monotonic()
    results = run(_spec(tmp_path, name, cpu, trials), trainable=_trial_in(str(pids)), progress=False)
    took = time.monotonic() - start
    return (list(results.dataframe()["status"]), {int(f.name.split("-")[0]) for f in pids.iterdir()},
            took)


def _free_cpus(ray, want: float, timeout_s: float = 20.0) -> float:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        free = ray.available_resources().get("CPU", 0)
        if free >= want:
            return free
        time.sleep(0.2)
    return ray.available_resources().get("CPU", 0)


def test_the_next_run_takes_the_last_runs_workers(ray_session, tmp_path):
    """The second run's trials run in the processes of the first's, and all four of each
    finish; released, the park gives its CPUs back."""
    park = WorkerPark(keep_s=120)
    try:
        with park.active():
            first, first_pids, _ = _run(tmp_path, "first")
        assert first == ["TERMINATED"] * 4
        assert len(park) >= 1, "nothing was parked as the first run ended"
        assert ray_session.available_resources().get("CPU", 0) <= 2 - len(park)  # still theirs
        with park.active():
            second, second_pids, _ = _run(tmp_path, "second")
        assert second == ["TERMINATED"] * 4
        assert park.adopted >= 1
        assert second_pids & first_pids, (first_pids, second_pids)
    finally:
        park.release()
    assert len(park) == 0
    assert _free_cpus(ray_session, 2) == 2


def test_a_run_needing_other_resources_releases_the_park(ray_session, tmp_path):
    """Two 1-CPU actors parked on 2 CPUs would leave a 2-CPU trial waiting forever: the
    park is released as that trial asks for its actor, and the run goes on at once."""
    park = WorkerPark(keep_s=90)
    try:
        with park.active():
            _, first_pids, _ = _run(tmp_path, "small")
            assert len(park) >= 1
            statuses, big_pids, took = _run(tmp_path, "big", cpu=2, trials=2)
        assert statuses == ["TERMINATED"] * 2
        assert not big_pids & first_pids
        assert took < 60, f"the 2-CPU run waited for the parked actors: {took:.0f} s"
    finally:
        park.release()


def test_a_dead_parked_worker_costs_its_trial_nothing(ray_session, tmp_path):
    """A parked actor's process killed between runs (OOM killer, a node's end): the next
    run's trial gets another actor and every trial of it finishes."""
    park = WorkerPark(keep_s=120)
    try:
        with park.active():
            _, first_pids, _ = _run(tmp_path, "before")
            assert len(park) >= 1
            for pid in first_pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(1.0)  # Ray notices the dead workers
            statuses, after_pids, _ = _run(tmp_path, "after")
        assert statuses == ["TERMINATED"] * 4
        assert not after_pids & first_pids
    finally:
        park.release()


def test_a_run_without_a_park_does_not_wait_for_parked_workers(ray_session, tmp_path):
    """A run of the same process outside any park (the script's own Tune run) releases the
    parked actors as its trials ask for theirs, instead of waiting until their time is up."""
    park = WorkerPark(keep_s=90)
    try:
        with park.active():
            _run(tmp_path, "parked", cpu=1)
        assert len(park) >= 1
        statuses, _, took = _run(tmp_path, "outside", cpu=2, trials=2)
        assert statuses == ["TERMINATED"] * 2
        assert took < 60, f"waited for the park to release: {took:.0f} s"
        assert len(park) == 0
    finally:
        park.release()


def test_an_unused_park_releases_its_workers_after_keep_s(ray_session, tmp_path):
    park = WorkerPark(keep_s=1.0)
    with park.active():
        _run(tmp_path, "idle")
    assert len(park) >= 1
    assert _free_cpus(ray_session, 2, timeout_s=30) == 2
    assert len(park) == 0


@pytest.mark.parametrize("keep", ["0"])
def test_keep_zero_parks_nothing(ray_session, tmp_path, monkeypatch, keep):
    monkeypatch.setenv("PIPELINE_KEEP_WORKERS_S", keep)
    park = WorkerPark()
    with park.active():
        statuses, _, _ = _run(tmp_path, "none")
    assert statuses == ["TERMINATED"] * 4
    assert len(park) == 0


def _slow_trial(config):  # reports every 0.2 s for a minute: running when its run is stopped
    from ray import tune

    for step in range(300):
        time.sleep(0.2)
        tune.report({"score": float(step)})


def test_a_trial_stopped_while_it_trains_is_not_parked(ray_session, tmp_path):
    """A run stopped by its time budget stops its running trials while their actors are
    still training: such an actor is ended, as before, not parked (the next run's trial
    would wait behind the training it still does)."""
    from pipeline.runner import run
    from pipeline.spec import parse_spec

    raw = _spec(tmp_path, "budget", trials=2).model_dump(mode="json", exclude_none=True)
    raw["search"]["time_budget_s"] = 4
    park = WorkerPark(keep_s=120)
    try:
        with park.active():
            results = run(parse_spec(raw, source="test"), trainable=_slow_trial, progress=False)
        assert set(results.dataframe()["status"]) == {"TERMINATED"}
        assert len(park) == 0
    finally:
        park.release()
    assert _free_cpus(ray_session, 2) == 2


def test_only_cpu_trials_of_the_pipelines_trainables_are_parked():
    from ray import tune

    class Swappable:
        swappable_function = True

    from pipeline.worker_park import _swappable

    cpu = tune.PlacementGroupFactory([{"CPU": 1}])
    assert _swappable(Swappable, cpu)
    assert not _swappable(Swappable, tune.PlacementGroupFactory([{"CPU": 1, "GPU": 0.5}]))
    assert not _swappable(Swappable, tune.PlacementGroupFactory([{"CPU": 1}, {"CPU": 1}]))
    assert not _swappable(object, cpu)


def test_a_malformed_keep_time_names_the_variable(monkeypatch):
    monkeypatch.setenv("PIPELINE_KEEP_WORKERS_S", "ten")
    with pytest.raises(ValueError, match="PIPELINE_KEEP_WORKERS_S must be a number of seconds"):
        WorkerPark()
