"""Scratch folders of trial processes are removed even when the process was killed
(pipeline.scratch)."""

from __future__ import annotations

import doctest
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import pipeline.scratch
from pipeline.scratch import scratch, sweep

ROOT = Path(__file__).resolve().parent.parent


def test_doctest():
    result = doctest.testmod(pipeline.scratch)
    assert result.attempted >= 2 and result.failed == 0


def test_a_killed_process_folder_goes_with_the_next_scratch_folder(tmp_path):
    """A process SIGKILLed inside its scratch block leaves the folder (a saved model, say);
    the next scratch folder made there removes it, and only it."""
    code = ("import sys, time\nfrom pipeline.scratch import scratch\n"
            "with scratch('ckpt-', root=sys.argv[1]) as d:\n"
            "    open(d + '/model.keras', 'w').write('x')\n"
            "    print(d, flush=True)\n    time.sleep(300)\n")
    child = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE,
                             text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    left = child.stdout.readline().strip()
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    assert Path(left, "model.keras").is_file()  # killed: nothing removed it
    mine = tmp_path / f"ckpt-{os.getpid()}-live"  # a running process's (this one's)
    other = tmp_path / "ckpt-notapid"  # not a scratch folder's name
    mine.mkdir()
    other.mkdir()
    with scratch("ckpt-", root=str(tmp_path)) as new:
        assert not Path(left).exists()
        assert Path(new).is_dir() and mine.is_dir() and other.is_dir()
    assert not Path(new).exists()
    assert sweep("ckpt-", root=str(tmp_path)) == []  # nothing of a dead process is left


def test_another_users_folder_is_left_alone(tmp_path):
    """On a shared machine, a dead process's folder of another user is not this user's to remove."""
    if os.geteuid() != 0:
        pytest.skip("needs root to make a folder owned by another user")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    theirs = tmp_path / f"ckpt-{dead.stdout.strip()}-theirs"
    theirs.mkdir()
    os.chown(theirs, 65534, 65534)  # nobody's
    assert sweep("ckpt-", root=str(tmp_path)) == []
    assert theirs.is_dir()
    os.chown(theirs, os.getuid(), os.getgid())  # now this user's, its process still gone
    assert sweep("ckpt-", root=str(tmp_path)) == [str(theirs)]
