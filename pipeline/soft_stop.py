"""A search that stops starting trials, and lets the running ones finish.

Tune's ``time_budget_s`` (``search.time_budget_s``) is a hard limit: at the deadline it
stops every trial still running. Optuna's ``optimize(timeout=...)`` and ``study.stop()``
are soft: no trial starts after the deadline (or the stop), and those running finish.
:class:`SoftStop` gives a Tune run that behaviour, for ``search.start_trials_for_s`` and
for the Optuna front door: once its deadline passes or its condition holds, it marks the
search algorithm finished, so Tune asks it for no more trials and ends the run when the
running ones end.

Example:
    >>> from ray.tune.search import BasicVariantGenerator
    >>> search = BasicVariantGenerator()
    >>> stop = SoftStop(search, seconds=0.0)
    >>> stop.setup()
    >>> stop.on_step_begin(0, [])
    >>> search.is_finished()
    True
"""

from __future__ import annotations

import time
from typing import Any, Callable

from ray import tune


class SoftStop(tune.Callback):
    """Finishes ``search_alg`` once ``seconds`` have passed since the run started (this
    process's run: a resumed run counts again), or once ``when()`` is true.

    ``since`` (``time.monotonic()``) starts the clock earlier than the run, e.g. when
    ``optimize`` was called. Tune pickles its run configuration with the search algorithm
    (one pickle, so a resumed run's copy still finishes the algorithm Tune uses); ``when``
    and the clock stay in this process.
    """

    def __init__(self, search_alg: Any, seconds: float | None = None,
                 when: Callable[[], bool] | None = None, since: float | None = None):
        self.search_alg, self.seconds, self.when, self.since = search_alg, seconds, when, since

    def __getstate__(self) -> dict[str, Any]:
        return {"search_alg": self.search_alg, "seconds": self.seconds, "when": None, "since": None}

    def setup(self, stop: Any = None, num_samples: int | None = None,
              total_num_samples: int | None = None, **info: Any) -> None:
        if self.since is None:
            self.since = time.monotonic()

    @property
    def due(self) -> bool:
        """The deadline has passed or the condition holds."""
        late = (self.seconds is not None and self.since is not None
                and time.monotonic() - self.since >= self.seconds)
        return late or bool(self.when is not None and self.when())

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        if not self.search_alg.is_finished() and self.due:
            self.search_alg.set_finished()
