"""Shared fixtures: one Ray for the whole session, tiny specs, real parts only."""

from __future__ import annotations

import copy
import os
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Fake credentials for the S3-compatible server the tests run on loopback (moto).
# Set before Ray starts so trial workers inherit them.
for _key, _value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                     "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}.items():
    os.environ.setdefault(_key, _value)
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TINY = {
    "name": "tiny",
    "data": {"source": "digits", "limit": 360},
    "model": {"builder": "mlp"},
    "space": {
        "units": {"type": "int", "low": 8, "high": 32, "step": 8},
        "learning_rate": {"type": "float", "low": 1e-3, "high": 3e-2, "log": True},
    },
    "training": {"epochs": 2, "batch_size": 32},
    "objective": {"metric": "val_accuracy", "mode": "max"},
    "searcher": {"name": "tpe"},
    "scheduler": {"name": "fifo"},
    "resources": {"cpu": 1},
    "search": {"trials": 3, "max_concurrent": 2},
    "seed": 0,
}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "slow: own multi-node clusters, killed processes, storage outages, multi-worker "
                   "trials, whole scripts starting their own Ray, failed trials retried, and a few "
                   "other single tests of 15 s or more (make test-slow; make test leaves them out)")


# A test still running after pytest's faulthandler_timeout (pyproject.toml) prints what
# this process's Ray holds (below), and pytest every thread's stack; at pytest-timeout's
# limit the test fails, so a hung test costs minutes, not the CI run.
def _ray_holdings(test: str, after_s: float) -> None:
    import ray

    lines = [f"\n{test} still running after {after_s:g} s"]
    try:
        if ray.is_initialized():
            from ray.util import placement_group_table

            lines += [f"Ray resources: {ray.cluster_resources()}",
                      f"Ray resources free: {ray.available_resources()}",
                      *(f"placement group {pg.get('name') or pid[:8]}: {pg.get('state')} {pg.get('bundles')}"
                        for pid, pg in placement_group_table().items() if pg.get("state") != "REMOVED")]
    except Exception as exc:  # noqa: BLE001 - diagnostics only
        lines.append(f"Ray's state unavailable: {exc!r}")
    print("\n".join(lines), file=sys.stderr, flush=True)


@pytest.fixture(autouse=True)
def _report_a_hang(request):
    after_s = float(request.config.getini("faulthandler_timeout") or 0)
    if not after_s:
        yield
        return
    timer = threading.Timer(after_s, _ray_holdings, args=(request.node.nodeid, after_s))
    timer.daemon = True
    timer.start()
    yield
    timer.cancel()


def tiny_spec(tmp_path: Path, **sections) -> dict:
    """A small, fast spec dict; ``sections`` replace or update top-level sections."""
    raw = copy.deepcopy(TINY)
    raw["storage"] = str(tmp_path / "results")
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict) and key != "space":
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    return raw


@pytest.fixture(scope="session")
def ray_session():
    """A real local Ray, started once per test session (2 CPUs, no dashboard)."""
    import ray

    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # a front door whose search() failed before it began leaves its Ray up, or still starting
    import threading
    import time

    from cluster.connect import NO_DASHBOARD, TRIAL_PRIORITY

    starting = any(t.name == "ray-early-start" and t.is_alive() for t in threading.enumerate())
    deadline = time.time() + 30
    while starting and not ray.is_initialized() and time.time() < deadline:
        time.sleep(0.1)
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, **NO_DASHBOARD, logging_level="WARNING",
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT), **TRIAL_PRIORITY},
                          "worker_process_setup_hook": "cluster.prewarm.setup_worker"})
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def s3_server():
    """A real S3-compatible server (moto) on loopback; yields its endpoint URL."""
    from tests.s3faults import RestartableS3

    server = RestartableS3()
    server.start()
    yield server.endpoint
    server.stop()
