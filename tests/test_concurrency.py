"""search.max_concurrent: unset, as many trials as the cluster holds (Ray's default), at most trials."""

from __future__ import annotations

import pytest

import pipeline
from pipeline.runner import _with_concurrency
from pipeline.spec import parse_spec
from tests.conftest import tiny_spec

pytestmark = pytest.mark.usefixtures("ray_session")  # a local Ray with 2 CPUs


def _spec(tmp_path, trials: int, cpu: float, cap: int | None = None):
    raw = tiny_spec(tmp_path, search={"trials": trials}, resources={"cpu": cpu})
    raw["search"].pop("max_concurrent")
    if cap:
        raw["search"]["max_concurrent"] = cap
    return parse_spec(raw)


@pytest.mark.parametrize("trials,cpu,cap,expected,why", [
    (10, 1, None, 2, "the cluster's 2 CPUs"),
    (10, 0.5, None, 4, "the cluster's 2 CPUs"),
    (3, 0.5, None, 3, "one per trial"),
    (10, 2, None, 1, "the cluster's 2 CPUs"),
    (10, 0.5, 1, 1, "search.max_concurrent"),
])
def test_default_concurrency_is_what_the_cluster_holds(tmp_path, trials, cpu, cap, expected, why):
    spec = _spec(tmp_path, trials, cpu, cap)
    assert spec.search.max_concurrent == cap
    effective, reason = _with_concurrency(spec)
    assert (effective.search.max_concurrent, reason) == (expected, why)


def test_run_reports_its_concurrency_first(tmp_path, capsys):
    raw = tiny_spec(tmp_path, search={"trials": 2}, training={"epochs": 1})
    raw["search"].pop("max_concurrent")
    res = pipeline.run(raw, progress="lines")
    first = capsys.readouterr().out.splitlines()[0]
    assert first == "tiny: 2 trials, 2 at a time (the cluster's 2 CPUs), on 1 Ray node(s)"
    assert len(res.dataframe()) == 2
