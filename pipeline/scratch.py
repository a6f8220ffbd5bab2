"""Scratch folders of a trial process (a checkpoint to upload, one read back), never left behind.

A process removes its scratch folder when done with it; one killed meanwhile (SIGKILL, the
OOM killer, a node lost, Ray ending its workers at shutdown) cannot, and over a long search
on a cluster that fills the machine's temporary folder with saved models. So each folder's
name carries the process id, and making a scratch folder first removes those of the same
kind left by processes of this user that no longer run.

    >>> import os
    >>> with scratch("doc-") as d:
    ...     os.path.basename(d).startswith(f"doc-{os.getpid()}-") and os.path.isdir(d)
    True
    >>> os.path.exists(d)
    False
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from typing import Iterator


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def sweep(prefix: str, root: str | None = None) -> list[str]:
    """Remove the ``<prefix><pid>-*`` folders in ``root`` (the temporary folder) that belong
    to this user and whose process no longer runs; return their paths."""
    root = root or tempfile.gettempdir()
    try:
        names = os.listdir(root)
    except OSError:
        return []
    removed = []
    for name in names:
        pid = name[len(prefix):].split("-", 1)[0] if name.startswith(prefix) else ""
        if not pid.isdigit() or _alive(int(pid)):
            continue
        path = os.path.join(root, name)
        try:
            if os.lstat(path).st_uid != os.getuid():
                continue  # another user's, on a shared machine
        except OSError:
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


@contextmanager
def scratch(prefix: str, root: str | None = None) -> Iterator[str]:
    """A new folder ``<root>/<prefix><pid>-XXXX`` for the block, removed after it (and those
    of dead processes before it: :func:`sweep`)."""
    sweep(prefix, root)
    folder = tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=root)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
