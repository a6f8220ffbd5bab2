"""Process bookkeeping for the local cluster: which processes live in a node's session.

Linux reads ``/proc``; elsewhere the functions fall back to ``os.kill`` and process groups.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def _proc_stat(pid: int) -> tuple[str, int, int, int] | None:
    """Return (state, ppid, session, starttime) of ``pid`` or None if gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    # comm may contain spaces/parentheses: split after the last ')'.
    fields = raw[raw.rfind(b")") + 2 :].split()
    try:
        return fields[0].decode(), int(fields[1]), int(fields[3]), int(fields[19])
    except (IndexError, ValueError):
        return None


def _start_time(pid: int) -> int:
    stat = _proc_stat(pid)
    return stat[3] if stat else 0


def _reap(pid: int) -> None:
    """Collect ``pid`` if it is an exited child of this process."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie (reaping our own children)."""
    _reap(pid)
    if Path("/proc").is_dir():
        stat = _proc_stat(pid)
        return stat is not None and stat[0] not in ("Z", "X")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _session_members(leader: int, start_time: int = 0) -> list[int]:
    """Live pids in the session led by ``leader`` (the leader included).

    Returns [] if ``leader`` now names a different process (pid reuse): Linux
    does not reuse a pid while a session still carries its id, so members
    found with a recorded leader either belong to our session, or the leader
    pid was reused and the start time differs.
    """
    if not Path("/proc").is_dir():
        return [leader] if _alive(leader) else []
    stat = _proc_stat(leader)
    if stat is not None and start_time and stat[3] != start_time:
        return []
    members = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        pid = int(name)
        st = _proc_stat(pid)
        if st is not None and st[2] == leader and st[0] not in ("Z", "X"):
            members.append(pid)
    return members


def _signal(pids: list[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _signal_session(leader: int, start_time: int, sig: int) -> list[int]:
    if not Path("/proc").is_dir():  # pragma: no cover - non-Linux fallback
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(leader, sig)
        return [leader]
    members = _session_members(leader, start_time)
    _signal(members, sig)
    return members
