"""Helpers shared by the front doors: results read without Ray, a picklable stdout."""

from __future__ import annotations

import contextlib
import sys
from typing import Iterator

from pipeline.results import Results


class CompatResults(Results):
    """:class:`Results` for the front doors (errors are read from storage, no Ray needed)."""


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
