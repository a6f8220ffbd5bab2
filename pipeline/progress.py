"""Progress for ``run``: a refreshing panel on a terminal, one line per event otherwise.

On a terminal a single rich panel shows trials by state, the best value so far
and the time left in the budget, redrawn at most twice a second. When stdout is
not a terminal (batch runs, Kubernetes logs) it prints one line per finished
trial and nothing per epoch, so logs stay short and the driver stays idle.
"""

from __future__ import annotations

import math
import sys
import time
from collections import Counter
from typing import Any, TextIO

from ray.tune import Callback
from ray.tune.progress_reporter import TrialProgressCallback


class Progress(Callback):
    """Tune callback; ``live=None`` picks the panel when ``stream`` is a terminal."""

    REFRESH_S = 0.5

    def __init__(self, metric: str, mode: str, total: int, epochs: int,
                 stream: TextIO | None = None, time_budget_s: float | None = None,
                 live: bool | None = None):
        self.metric, self.mode, self.total, self.epochs = metric, mode, total, epochs
        self._stream = stream
        self.time_budget_s = time_budget_s
        self.live = self.stream.isatty() if live is None else live
        self.best: float | None = None
        self.best_trial: str | None = None
        self.done = 0
        self.start = time.monotonic()
        self._last: dict[str, dict[str, Any]] = {}
        self._states: dict[str, str] = {}
        self._panel: Any = None  # rich.live.Live once drawn
        self._drawn = 0.0

    @property
    def stream(self) -> TextIO:
        return self._stream or sys.stdout

    def __getstate__(self) -> dict[str, Any]:
        # Tune saves callbacks with the experiment state: streams and panels stay behind.
        return {**self.__dict__, "_stream": None, "_panel": None}

    # -- state -------------------------------------------------------------
    def _better(self, value: float) -> bool:
        if value is None or not math.isfinite(value):
            return False
        return self.best is None or (value > self.best if self.mode == "max" else value < self.best)

    def on_trial_start(self, iteration, trials, trial, **info):
        self._states[trial.trial_id] = "running"
        self._draw()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self._last[trial.trial_id] = result
        value = result.get(self.metric)
        if isinstance(value, (int, float)) and self._better(value):
            self.best, self.best_trial = float(value), trial.trial_id
        self._draw()

    def on_trial_complete(self, iteration, trials, trial, **info):
        epochs = self._last.get(trial.trial_id, {}).get("epoch", 0)
        self._end(trials, trial, "finished" if epochs >= self.epochs else "stopped early")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._end(trials, trial, "FAILED")

    def on_experiment_end(self, trials, **info):
        if self._panel is not None:
            self._panel.update(self._render(), refresh=True)
            self._panel.stop()
            self._panel = None

    # -- output ------------------------------------------------------------
    def _best_text(self) -> str:
        return "-" if self.best is None else f"{self.best:.4f} ({self.best_trial})"

    def _end(self, trials, trial, how: str) -> None:
        self.done += 1
        self._states[trial.trial_id] = how
        if self.live:
            self._draw(force=True)
            return
        running = sum(t.status == "RUNNING" for t in trials)
        epochs = self._last.get(trial.trial_id, {}).get("epoch", 0)
        print(f"[{self.done}/{self.total}] {trial.trial_id} {how} after {epochs} epochs"
              f" | running {running} | best {self.metric}={self._best_text()}"
              f" | {time.monotonic() - self.start:.0f}s", file=self.stream, flush=True)

    def _render(self):
        from rich.panel import Panel

        counts = Counter(self._states.values())
        elapsed = time.monotonic() - self.start
        left = "" if not self.time_budget_s else f", {max(0, self.time_budget_s - elapsed):.0f}s left in budget"
        body = "\n".join([
            f"trials  {self.done}/{self.total} done: {counts['finished']} finished, "
            f"{counts['stopped early']} stopped early, {counts['FAILED']} failed; {counts['running']} running",
            f"best    {self.metric} = {self._best_text()}",
            f"time    {elapsed:.0f}s{left}",
        ])
        return Panel(body, title="tuning", expand=False)

    def _draw(self, force: bool = False) -> None:
        if not self.live:
            return
        now = time.monotonic()
        if not force and now - self._drawn < self.REFRESH_S:
            return
        self._drawn = now
        if self._panel is None:
            from rich.console import Console
            from rich.live import Live

            self._panel = Live(self._render(), console=Console(file=self.stream),
                               auto_refresh=False, transient=False, vertical_overflow="visible")
            self._panel.start()
        self._panel.update(self._render(), refresh=True)



class TuneTrialLinesOff(TrialProgressCallback):
    """Tune's own per-trial lines, silenced: the run's progress is :class:`Progress`'s.

    Tune adds its ``TrialProgressCallback`` unless one is given; at ``verbose=0`` it still
    prints "Trial ... completed. Last result: " for a trial that ended without a result
    (an Optuna door trial that started after ``study.stop()``). Given this one, it prints
    nothing.
    """

    def _print(self, msg: str) -> None:
        pass
