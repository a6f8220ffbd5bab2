"""Helpers shared by the front doors: results read without Ray, a picklable stdout."""

from __future__ import annotations

import contextlib
import sys
from typing import Iterator

import pyarrow.fs as pafs

from pipeline.results import Results


class CompatResults(Results):
    """:class:`Results` whose failed trials' errors are read without a running Ray.

    Ray's ``Trial.error_file`` needs an initialized Ray; the front doors read
    results after their own Ray session ended, so the error file is read from
    the trial's folder in the experiment storage instead.
    """

    def _error(self, trial) -> str | None:
        try:
            return super()._error(trial)
        except AssertionError:
            pass
        text = "error"
        name = getattr(trial.run_metadata, "error_filename", None)
        if name:
            fs = self.where.fs or pafs.LocalFileSystem()
            try:
                with fs.open_input_stream(f"{trial.path}/{name}") as f:
                    text = f.read().decode(errors="replace")
            except (OSError, AttributeError):
                text = "error (details not readable here)"
        lines = [ln for ln in text.strip().splitlines() if ln.strip()]
        return lines[-1] if lines else "error"


class _ForwardStdout:
    """Writes to the stdout it replaced; pickles to nothing (then writes to the process's stdout).

    Tune pickles its callbacks with the experiment state; the pipeline's progress
    callback keeps ``sys.stdout``, which in notebooks (ipykernel) and under pytest
    is an unpicklable object.
    """

    def __init__(self, target=None):
        self._target = target

    @property
    def target(self):
        return self._target if self._target is not None else sys.__stdout__

    def write(self, text: str) -> int:
        return self.target.write(text)

    def flush(self) -> None:
        self.target.flush()

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self._target = None

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.target, name)


@contextlib.contextmanager
def picklable_stdout() -> Iterator[None]:
    """Within the block, ``sys.stdout`` is a picklable forwarder to the current stdout."""
    original = sys.stdout
    sys.stdout = _ForwardStdout(original)
    try:
        yield
    finally:
        sys.stdout = original
