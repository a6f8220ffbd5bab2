"""A Tune stopper that ends the whole run once a driver-side callback says so.

The KerasTuner door watches trials from the driver (a ``tune.Callback``) for
``kt.errors.FatalError`` and too many failures in a row, which end KerasTuner's search at
once. :class:`StopWhen` turns the watcher's ``stopping`` into Tune's ``stop_all``. (The
Optuna door's ``study.stop()`` lets running trials finish, as Optuna does:
:mod:`pipeline.soft_stop`.)
"""

from __future__ import annotations

from typing import Any

from ray import tune


class StopWhen(tune.Stopper):
    """Stops every trial once ``watcher.stopping`` is true.

    Tune pickles its run configuration (the experiment state): a pickled copy keeps no
    watcher and never stops anything.
    """

    def __init__(self, watcher: Any):
        self.watcher = watcher

    def __getstate__(self) -> dict[str, Any]:
        return {"watcher": None}

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return False

    def stop_all(self) -> bool:
        return self.watcher is not None and bool(self.watcher.stopping)
