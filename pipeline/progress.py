"""Terse progress for ``run``: one line per finished trial, never a flood."""

from __future__ import annotations

import math
import sys
import time
from typing import Any, TextIO

from ray.tune import Callback


class Progress(Callback):
    """Prints ``[done/total] trial ... | running N | best metric=value`` lines.

    A line is printed when a trial ends (completed, stopped early, or failed);
    nothing is printed per epoch, so the driver stays idle between events.
    """

    def __init__(self, metric: str, mode: str, total: int, epochs: int,
                 stream: TextIO | None = None):
        self.metric, self.mode, self.total, self.epochs = metric, mode, total, epochs
        self.stream = stream or sys.stdout
        self.best: float | None = None
        self.best_trial: str | None = None
        self.done = 0
        self.start = time.monotonic()
        self._last: dict[str, dict[str, Any]] = {}

    def _better(self, value: float) -> bool:
        if value is None or not math.isfinite(value):
            return False
        return self.best is None or (value > self.best if self.mode == "max" else value < self.best)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self._last[trial.trial_id] = result
        value = result.get(self.metric)
        if isinstance(value, (int, float)) and self._better(value):
            self.best, self.best_trial = float(value), trial.trial_id

    def _line(self, trials, trial, how: str) -> None:
        self.done += 1
        running = sum(t.status == "RUNNING" for t in trials)
        epochs = self._last.get(trial.trial_id, {}).get("epoch", 0)
        best = "-" if self.best is None else f"{self.best:.4f} ({self.best_trial})"
        print(f"[{self.done}/{self.total}] {trial.trial_id} {how} after {epochs} epochs"
              f" | running {running} | best {self.metric}={best}"
              f" | {time.monotonic() - self.start:.0f}s", file=self.stream, flush=True)

    def on_trial_complete(self, iteration, trials, trial, **info):
        epochs = self._last.get(trial.trial_id, {}).get("epoch", 0)
        self._line(trials, trial, "finished" if epochs >= self.epochs else "stopped early")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._line(trials, trial, "FAILED")
