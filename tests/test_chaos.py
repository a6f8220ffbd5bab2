"""The short chaos soak: one fault of each kind during a search on the local multi-node
cluster, then nothing lost (``benchmarks/chaos_soak.py``; the long version runs on demand,
see the README's Reliability section).

28 trials of 6 epochs, a checkpoint every 2, faults 2-4 s apart (storage, node, driver,
process with seed 0): ~95 s on 2 idle CPUs (16 trials were enough until trial workers'
garbage collection got cheaper: the search then ended 52 s in, before the driver and
process faults); on a loaded machine the search slows more than the faults, so the
margin grows.
The soak fails (and so this test) if the search ends before all four faults are in."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT

# multi-node clusters, killed processes, storage outages: `make test-slow` (CI runs it too)
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]  # waits up to 900 s for its subprocess

pytest.importorskip("ray")
if not sys.platform.startswith("linux"):
    pytest.skip("cluster.local process bookkeeping needs /proc", allow_module_level=True)

LINE = re.compile(r"chaos: (\d+) trials, (\d+) faults \((\d+) node, (\d+) driver, (\d+) storage, "
                  r"(\d+) process\), (\d+) lost, max lost epochs per fault (\d+), wall (\d+) s")
SHORT = ["--minutes", "2", "--one-of-each", "--every", "2", "4", "--trials", "28", "--epochs", "6",
         "--checkpoint-every", "2", "--seed", "0"]


def test_short_chaos_soak_loses_nothing(tmp_path):
    started = time.monotonic()
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "chaos_soak.py"), *SHORT,
                           "--keep", str(tmp_path / "soak")], cwd=ROOT, capture_output=True,
                          text=True, timeout=900)
    print(proc.stderr[-4000:])
    last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    match = LINE.fullmatch(last)
    assert match, f"unexpected last line {last!r}:\n{proc.stderr[-4000:]}"
    trials, faults, node, driver, storage, process, lost, worst, _ = map(int, match.groups())
    assert (trials, faults, node, driver, storage, process) == (28, 4, 1, 1, 1, 1), last
    assert lost == 0 and proc.returncode == 0, f"{last}\n{proc.stderr[-4000:]}"
    assert worst <= 2  # one checkpoint interval
    print(f"{last} (test wall {time.monotonic() - started:.0f} s)")
