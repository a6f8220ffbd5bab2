"""KerasTuner's ``keras_tuner.errors`` (``kt.errors.*``), and what the search does with them.

User code (a build function, a ``HyperModel.fit``) raises these to tell the tuner about a
trial, as in KerasTuner:

* :class:`FailedTrialError`: this trial failed (it is recorded ERROR, the search goes on);
* :class:`FatalError` and its ``ValueError``/``TypeError``/``RuntimeError`` kinds: the
  search must stop (:mod:`pipeline.compat._kt_guard` stops it) and ``search()`` raises it.

    >>> issubclass(FatalValueError, ValueError) and issubclass(FatalValueError, FatalError)
    True
"""

from __future__ import annotations

__all__ = ["FailedTrialError", "FatalError", "FatalValueError", "FatalTypeError", "FatalRuntimeError"]


class FailedTrialError(Exception):
    """Raised in a trial: the trial failed, the search goes on."""


class FatalError(Exception):
    """Raised in a trial: the whole search stops and ``search()`` raises it."""


class FatalValueError(FatalError, ValueError):
    """A :class:`FatalError` that is a ``ValueError``."""


class FatalTypeError(FatalError, TypeError):
    """A :class:`FatalError` that is a ``TypeError``."""


class FatalRuntimeError(FatalError, RuntimeError):
    """A :class:`FatalError` that is a ``RuntimeError``."""
