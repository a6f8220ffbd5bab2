"""Keeping a local cluster's files private: the state folder and Ray temp root (mode
0700, owned by us), the nodes' boot file that stops Ray from opening up its folders,
and the final pass that takes group and other write permission off what Ray left.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path

# AF_UNIX socket paths are limited to 107 bytes on Linux.  Ray puts its sockets
# at <temp-dir>/session_<date>_<time>_<usec>_<pid>/sockets/dash_MetricsHead:
# 68 bytes below the node directory, whose name ("/w12") takes 4 more.
_MAX_TEMP_ROOT_LEN = 34


def _private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) if needed and make it mode 0700, owned by us.

    Another local user must not be able to list, rename or plant anything in a
    cluster's state folder or Ray temp root (Ray would run a planted package).
    """
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.lstat()
    if not stat.S_ISDIR(st.st_mode):
        raise RuntimeError(f"--state-dir: {path} is not a folder (a link?); refusing to use it")
    if st.st_uid != os.getuid():
        raise RuntimeError(f"--state-dir: {path} belongs to uid {st.st_uid}, not you; "
                           "use a folder of your own")
    os.chmod(path, 0o700)
    return path


def _temp_root(state_dir: Path) -> tuple[Path, bool]:
    """Pick the Ray temp root: under state_dir if short enough, else /tmp (mode 0700 both).

    Returns (path, owned) where ``owned`` means stop() should delete it.
    """
    candidate = state_dir / "ray"
    if len(str(candidate)) <= _MAX_TEMP_ROOT_LEN:
        return _private_dir(candidate), False
    return Path(tempfile.mkdtemp(prefix="rlc-", dir="/tmp")), True  # mkdtemp: 0700


# Ray makes every folder it creates or touches mode 0777 "so other users can share it"
# (ray._common.utils.try_make_directory_shared), in every one of its Python processes:
# node folders, sessions, sockets, runtime_resources (where shipped code is unpacked and
# run from). The nodes of a local cluster get this sitecustomize first on their
# PYTHONPATH: it makes that function set mode 0700 instead, once Ray imports it (Ray is
# not imported any earlier), and then runs the sitecustomize it shadows, if any.
_SITECUSTOMIZE = """\
# Written by `python -m pipeline cluster up` (cluster/local.py); do not edit.
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys


def _private(path):
    try:
        os.chmod(path, 0o700)
    except OSError:
        pass


class _KeepRayFoldersPrivate(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "ray._common.utils":
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            module.try_make_directory_shared = _private

        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, _KeepRayFoldersPrivate())
_here = os.path.dirname(os.path.abspath(__file__))
for _folder in sys.path:
    _other = os.path.join(_folder or ".", "sitecustomize.py")
    if os.path.abspath(_folder or ".") != _here and os.path.isfile(_other):
        _spec = importlib.util.spec_from_file_location("_shadowed_sitecustomize", _other)
        _spec.loader.exec_module(importlib.util.module_from_spec(_spec))
        break
"""


def _boot_folder(state_dir: Path) -> Path:
    """``<state_dir>/boot`` with the nodes' sitecustomize (see _SITECUSTOMIZE)."""
    boot = _private_dir(state_dir / "boot")
    target = boot / "sitecustomize.py"
    tmp = boot / ".sitecustomize.py.part"
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(_SITECUSTOMIZE)
    os.replace(tmp, target)
    return boot


def _close_up(*roots: Path) -> None:
    """Take group and other write permission off everything under ``roots``."""
    for root in roots:
        for folder, _, files in os.walk(root):
            for p in [Path(folder), *(Path(folder) / n for n in files)]:
                with contextlib.suppress(OSError):
                    st = p.lstat()
                    if not stat.S_ISLNK(st.st_mode) and st.st_mode & (stat.S_IWOTH | stat.S_IWGRP):
                        os.chmod(p, stat.S_IMODE(st.st_mode) & ~(stat.S_IWOTH | stat.S_IWGRP))


def world_writable(*roots: Path) -> list[Path]:
    """Folders and files under ``roots`` (themselves included) that any user may write."""
    found = []
    for root in roots:
        for folder, dirs, files in os.walk(root):
            for p in [Path(folder), *(Path(folder) / n for n in files)]:
                with contextlib.suppress(OSError):
                    st = p.lstat()
                    if not stat.S_ISLNK(st.st_mode) and st.st_mode & stat.S_IWOTH:
                        found.append(p)
    return found
