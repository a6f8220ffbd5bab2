"""Fractional-GPU fencing: the computation, checked on CPU."""

from __future__ import annotations

import pytest

from pipeline.devices import configure, cpu_threads, gpu_memory_limit_mb, jax_env

GiB = 1024**3


@pytest.mark.parametrize("total_gib, fraction, expected_mb", [
    (80, 0.25, 20 * 1024 - 512),
    (141, 0.5, int(141 * 1024 * 0.5) - 512),
    (16, 1.0, 16 * 1024),
    (1, 0.1, 256),  # never below a usable floor
])
def test_gpu_memory_limit(total_gib, fraction, expected_mb):
    assert gpu_memory_limit_mb(total_gib * GiB, fraction) == expected_mb


def test_n_trials_fit_on_one_device():
    total = 80 * GiB
    for n in (2, 3, 4, 8):
        assert n * gpu_memory_limit_mb(total, 1 / n) <= total // (1024 * 1024)


def test_bad_fraction_rejected():
    with pytest.raises(ValueError):
        gpu_memory_limit_mb(GiB, 0)


def test_jax_fraction_and_cpu_threads():
    assert float(jax_env(0.25)["XLA_PYTHON_CLIENT_MEM_FRACTION"]) == pytest.approx(0.23)
    assert [cpu_threads(c) for c in (0.25, 1, 1.5, 4)] == [1, 1, 2, 4]


def test_configure_on_cpu_only_machine_sizes_threads():
    applied = configure(cpu=1, gpu=0.25)
    assert applied["threads"] == 1
    assert "memory_limit_mb" not in applied  # no GPU here: nothing to fence
