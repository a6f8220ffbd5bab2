"""TensorFlow's start-up lines kept off the user's console; its errors still reach it.

Each Ray worker that imports TensorFlow prints its C++ start-up notes (oneDNN, CPU
instructions, "Could not find cuda drivers") and, on a machine without a GPU, a
``failed call to cuInit`` error line, before ``TF_CPP_MIN_LOG_LEVEL`` can apply; Ray copies
every worker's lines to the driver's console, interleaved with the progress lines. The
worker's standard error is captured (at file descriptor level, where C++ writes) around
TensorFlow's import and its first look at the devices, and replayed without those notes:
any other line, and everything when the import fails, still reaches the user.

:func:`install` runs in every worker process of a run, from the ``worker_process_setup_hook``
(:func:`cluster.prewarm.setup_worker`); it costs nothing until TensorFlow is imported.

>>> keep = [line for line in [
...     "I0000 00:00:1796500982.945857   27434 port.cc:153] oneDNN custom operations are on.",
...     "E0000 00:00:1796499111.964605    1576 cuda_platform.cc:52] failed call to cuInit: ...",
...     "Traceback (most recent call last):"] if not is_noise(line, gpu=False)]
>>> keep
['Traceback (most recent call last):']
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import re
import sys
import tempfile
from contextlib import contextmanager
from typing import Any, Iterator

# absl's INFO lines (I<mmdd> <time> <thread> <file>:<line>]) and its note about them
_INFO = re.compile(r"^I\d{4} [\d:.]+ +\d+ [\w./-]+:\d+\]")
_ABSL_NOTE = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
# the error every process without a CUDA driver logs at its first look at the devices
_NO_CUDA = re.compile(r"^E\d{4} .*cuda_platform\.cc:\d+\] failed call to cuInit")


def is_noise(line: str, gpu: bool) -> bool:
    """``line`` is a start-up note (or, without a GPU asked for, the no-driver error)."""
    line = line.rstrip("\n")
    if line.startswith(_ABSL_NOTE) or _INFO.match(line):
        return True
    return not gpu and bool(_NO_CUDA.match(line))


@contextmanager
def filtered_stderr(gpu: bool = False) -> Iterator[None]:
    """Capture file descriptor 2 for the block; replay it without noise (all of it on error)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable stderr: nothing to filter
        yield
        return
    capture = tempfile.TemporaryFile()
    failed = True
    try:
        os.dup2(capture.fileno(), 2)
        yield
        failed = False
    finally:
        try:
            sys.stderr.flush()
        except ValueError:
            pass
        os.dup2(saved, 2)
        os.close(saved)
        capture.seek(0)
        text = capture.read().decode(errors="replace")
        capture.close()
        kept = text if failed else "".join(
            line for line in text.splitlines(keepends=True) if not is_noise(line, gpu))
        if kept:
            os.write(2, kept.encode())


class _QuietLoader(importlib.abc.Loader):
    """TensorFlow's own loader, executing the module inside :func:`filtered_stderr`."""

    def __init__(self, inner: Any):
        self._inner = inner

    def create_module(self, spec):
        return self._inner.create_module(spec)

    def exec_module(self, module) -> None:
        with filtered_stderr():
            self._inner.exec_module(module)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _QuietFinder(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` once, as the other finders would, with the quiet loader."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


def install() -> None:
    """Quiet TensorFlow's import in this worker process, and its end (:func:`_unraisable`)."""
    if "tensorflow" not in sys.modules and not any(isinstance(f, _QuietFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietFinder())
    if not getattr(sys.unraisablehook, "_pipeline_quiet", False):
        sys.unraisablehook = _unraisable(sys.unraisablehook)


def _unraisable(default: Any) -> Any:
    """Python's hook for exceptions it cannot raise, less a worker's ``SystemExit``.

    Ray ends a worker (a trial's actor at the end of a run, all of them at shutdown) with
    SIGTERM, and its handler raises ``SystemExit``; when the signal lands while a weakref
    callback or finalizer runs, Python cannot raise it there and prints "Exception ignored
    in: ... SystemExit: 1" with a traceback, which Ray copies to the user's console (seen
    after a KerasTuner door search). It says nothing the user can act on; any other
    exception still goes to ``default``.
    """

    def hook(unraisable: Any) -> None:
        if not isinstance(unraisable.exc_value, SystemExit):
            default(unraisable)

    hook._pipeline_quiet = True  # type: ignore[attr-defined]
    return hook
