"""Stored results: leaderboard, export, best config and best model, no cluster needed.

Example (after a run)::

    from pipeline.results import Results
    res = Results.open("results/digits-tpe-asha")
    print(res.leaderboard(5))
    model = res.best_model()
"""

from __future__ import annotations

import json
import logging
import math
import os
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.spec import Spec, parse_spec
from pipeline.storage import SPEC_FILE, Location, locate_experiment


class _NoResultsYet(logging.Filter):
    """Drops what Tune's ``ExperimentAnalysis`` logs about trials that ended before their
    first result (stopped by a time budget, a callback or a scheduler, or failed at once):
    "Failed to fetch metrics" and an ERROR "No checkpoints have been found". Not errors
    here: such trials are in the results with their status."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not ("Failed to fetch metrics" in message
                    or "No checkpoints have been found" in message)


def quiet_analysis() -> None:
    """Keep :class:`_NoResultsYet`'s lines from the user (once per process; where Tune reads
    runs back: at the end of a run and in :class:`Results`)."""
    logger = logging.getLogger("ray.tune.analysis.experiment_analysis")
    if not any(isinstance(f, _NoResultsYet) for f in logger.filters):
        logger.addFilter(_NoResultsYet())


def pareto_mask(values, modes: list[str]):
    """True for the rows of ``values`` (n trials x k objectives) that no other row dominates."""
    import numpy as np

    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return np.zeros(len(values), dtype=bool)
    costs = values * np.array([-1.0 if m == "max" else 1.0 for m in modes])
    mask = np.ones(len(costs), dtype=bool)
    for i, c in enumerate(costs):
        dominated = np.all(costs <= c, axis=1) & np.any(costs < c, axis=1)
        mask[i] = not dominated.any()
    return mask


class Results:
    """Every trial of one experiment, read from its storage folder."""

    def __init__(self, where: Location):
        self.where = where

    @classmethod
    def open(cls, path: str, endpoint_override: str | None = None) -> "Results":
        where = locate_experiment(path, endpoint_override)
        if not where.exists():
            raise FileNotFoundError(f"no experiment at {path}")
        return cls(where)

    @cached_property
    def spec(self) -> Spec:
        """The stored spec, checked by its schema only: reading results needs none of the
        user's code, data or optional packages (loading a model may need its builder's module)."""
        import yaml

        return parse_spec(yaml.safe_load(self.where.read_text(SPEC_FILE)), environment=False)

    @cached_property
    def _analysis(self):
        from ray.tune import ExperimentAnalysis

        quiet_analysis()
        return ExperimentAnalysis(self.where.path, storage_filesystem=self.where.fs)

    @property
    def metric(self) -> str:
        return self.spec.objective.primary[0]

    @property
    def mode(self) -> str:
        return self.spec.objective.primary[1]

    def _error(self, trial) -> str | None:
        """The last line of the trial's error, read from storage (no Ray needed)."""
        if trial.status != "ERROR":
            return None
        text = ""
        name = trial.run_metadata.error_filename
        if name:
            try:
                fs = self.where.fs or __import__("pyarrow.fs", fromlist=["LocalFileSystem"]).LocalFileSystem()
                with fs.open_input_stream(f"{trial.path}/{name}") as f:
                    text = f.read().decode(errors="replace")
            except (OSError, ValueError):
                text = ""
        lines = [ln for ln in text.strip().splitlines() if ln.strip()]
        return lines[-1] if lines else "error (details not stored)"

    @cached_property
    def histories(self) -> dict[str, pd.DataFrame]:
        """Per trial, one row per reported epoch (Tune's ``progress.csv``), oldest first.

        Tune stores a trial's history and the experiment state as separate files; a storage
        outage or a kill in the middle of saving them can keep a trial's checkpoint but lose
        rows of its history (the first ones, or ones between a checkpoint and the next sync).
        Epochs missing from the stored history are then taken from the history the trial's
        latest checkpoint holds (``from_checkpoint`` is True), and the rows sorted by epoch.
        """
        from pipeline.trainable import RESTORED_AT_END

        frames = dict(self._analysis.trial_dataframes)
        reached: dict[str, int] = {}  # the last epoch a trial reported, repeats included
        for tid, frame in list(frames.items()):
            if frame is not None and "epoch" in frame and frame["epoch"].notna().any():
                reached[tid] = int(frame["epoch"].max())
            if frame is not None and RESTORED_AT_END in frame:  # a last epoch reported again
                frames[tid] = frame[frame[RESTORED_AT_END] != True].drop(  # noqa: E712
                    columns=RESTORED_AT_END).reset_index(drop=True)
        for trial in self._analysis.trials:
            df: Any = frames.get(trial.trial_id)
            stored = df is not None and not df.empty
            have = set(df["epoch"].dropna().astype(int)) if stored and "epoch" in df else set()
            last = max(max(have, default=0), reached.get(trial.trial_id, 0))
            if stored and set(range(1, last + 1)) <= have:
                continue  # nothing missing: don't read the checkpoint
            kept = [r for r in self._checkpoint_history(trial)
                    if isinstance(r.get("epoch"), int) and r["epoch"] not in have]
            if kept:
                lost = pd.DataFrame(kept).assign(from_checkpoint=True)
                merged = lost if df is None or df.empty else pd.concat(
                    [lost, df.assign(from_checkpoint=False)], ignore_index=True)
                frames[trial.trial_id] = merged.sort_values("epoch", kind="stable", ignore_index=True)
        return frames

    def _checkpoint_history(self, trial) -> list[dict[str, Any]]:
        import posixpath

        from pipeline.checkpoints import STATE_FILE, newest_own_checkpoint

        try:
            checkpoint = self._analysis.get_last_checkpoint(trial)
            if checkpoint is None:
                return []
            if self.spec.scheduler.name != "pbt":  # Tune's record may lag behind (see there)
                checkpoint = newest_own_checkpoint(
                    checkpoint.filesystem, posixpath.dirname(checkpoint.path.rstrip("/")),
                    trial.trial_id, checkpoint)
            with checkpoint.filesystem.open_input_stream(f"{checkpoint.path}/{STATE_FILE}") as f:
                return list(json.loads(f.read().decode()).get("history", []))
        except (OSError, ValueError, KeyError):
            return []

    @cached_property
    def _rows(self) -> list[dict[str, Any]]:
        space = self.spec.search_space()
        frames = self.histories
        rows = []
        for trial in self._analysis.trials:
            df = frames.get(trial.trial_id)
            history = df if df is not None else pd.DataFrame()
            row: dict[str, Any] = {"trial_id": trial.trial_id, "status": trial.status}
            for name, value in space.active(trial.config).items():
                row[f"config/{name}"] = value
            row["epochs"] = int(history["epoch"].max()) if "epoch" in history and len(history) else 0
            for metric, mode in zip(self.spec.objective.metrics, self.spec.objective.modes):
                col = history[metric].dropna() if metric in history else pd.Series(dtype=float)
                best = (col.max() if mode == "max" else col.min()) if len(col) else math.nan
                row[metric] = float(best)
            if len(history):
                last = history.iloc[-1]
                for key in ("loss", "val_loss", "accuracy", "val_accuracy"):
                    if key in history and f"last/{key}" not in row:
                        row[f"last/{key}"] = float(last[key])
            row["error"] = self._error(trial)
            rows.append(row)
        return rows

    def dataframe(self) -> pd.DataFrame:
        """One row per trial: active config, best objective values, epochs, status, error."""
        return pd.DataFrame(self._rows)

    def leaderboard(self, n: int | None = None) -> pd.DataFrame:
        """Trials that reported the objective, best first."""
        df = self.dataframe()
        if df.empty:
            return df
        df = df[df[self.metric].notna()].sort_values(self.metric, ascending=self.mode == "min")
        return df.head(n) if n else df

    def pareto_front(self) -> pd.DataFrame:
        """Trials no other trial beats on every objective (multi-objective runs), best first."""
        metrics, modes = self.spec.objective.metrics, self.spec.objective.modes
        df = self.dataframe().dropna(subset=metrics)
        if df.empty:
            return df
        front = df[pareto_mask(df[metrics].to_numpy(), modes)]
        return front.sort_values(metrics[0], ascending=modes[0] == "min")

    @property
    def num_trials(self) -> int:
        return len(self._rows)

    @cached_property
    def best_trial(self):
        board = self.leaderboard(1)
        if board.empty:
            raise LookupError("no trial reported the objective metric")
        tid = board.iloc[0]["trial_id"]
        return next(t for t in self._analysis.trials if t.trial_id == tid)

    @property
    def best_config(self) -> dict[str, Any]:
        return self.spec.search_space().active(self.best_trial.config)

    @property
    def best_value(self) -> float:
        return float(self.leaderboard(1).iloc[0][self.metric])

    @cached_property
    def configs(self) -> dict[str, dict[str, Any]]:
        """Per trial id, the configuration the trial ran with, as Tune gave it."""
        return {t.trial_id: dict(t.config or {}) for t in self._analysis.trials}

    def checkpoint(self, trial_id: str, which: str = "best"):
        """A trial's checkpoint (a Ray ``Checkpoint``), or None if it saved none.

        ``which``: ``"best"`` (by the objective; the latest when no checkpoint was scored)
        or ``"latest"``.
        """
        if which not in ("best", "latest"):
            raise ValueError(f"which must be 'best' or 'latest', not {which!r}")
        trial = next((t for t in self._analysis.trials if t.trial_id == trial_id), None)
        if trial is None:
            raise KeyError(f"no trial {trial_id!r} in {self.where.path}")
        found = None
        if which == "best":
            found = self._analysis.get_best_checkpoint(trial, self.metric, self.mode)
        found = found or self._analysis.get_last_checkpoint(trial)
        if found is None:  # Tune recorded none (a trial a resumed driver found already done,
            # from a state saved before its checkpoints): the trial's newest stored one
            from pipeline.checkpoints import newest_own_checkpoint

            found = newest_own_checkpoint(trial.storage.storage_filesystem,
                                          trial.storage.trial_fs_path, trial.trial_id)
        return found

    def load_model(self, trial_id: str | None = None, which: str = "best"):
        """A trial's Keras model (default: the best trial's) loaded from its checkpoint.

        Loading a model needs what built it: a user builder's module must be importable.
        """
        import keras

        import pipeline.preprocessing  # noqa: F401  (registers the custom layers saved models use)
        from pipeline.checkpoints import MODEL_FILE, WEIGHTS_FILE

        trial_id = trial_id or self.best_trial.trial_id
        checkpoint = self.checkpoint(trial_id, which)
        if checkpoint is None:
            raise LookupError(f"trial {trial_id} has no checkpoint")
        with checkpoint.as_directory() as d:
            if not os.path.exists(os.path.join(d, MODEL_FILE)):
                raise LookupError(
                    f"trial {trial_id} saved only its weights ({WEIGHTS_FILE}): Keras could not "
                    "save its model whole (a subclassed model without get_config). Build the "
                    "model with the trial's hyperparameters and load them (the KerasTuner door's "
                    "tuner.get_best_models() does)")
            return keras.models.load_model(os.path.join(d, MODEL_FILE))

    def best_checkpoint(self):
        checkpoint = self.checkpoint(self.best_trial.trial_id)
        if checkpoint is None:
            raise LookupError(f"trial {self.best_trial.trial_id} has no checkpoint")
        return checkpoint

    def best_model(self):
        """The best trial's model, loaded from its best checkpoint."""
        return self.load_model()

    def evaluate_best(self) -> dict[str, float]:
        """Metrics of the best model on the held-out test split (never seen by the search)."""
        from pipeline.data import Dataset, load_dataset

        data = load_dataset(self.spec.data, self.spec.seed)  # sharded: streamed from the test shards
        if (len(data.x_test) if isinstance(data, Dataset) else data.rows("test")) == 0:
            raise LookupError("data.test_fraction is 0: there is no test split")
        model = self.best_model()
        batch_size = int(self.best_config.get("batch_size", self.spec.training.batch_size))
        test = ({"x": data.x_test, "y": data.y_test} if isinstance(data, Dataset)
                else data.eval_inputs("test", batch_size))
        values = model.evaluate(**test, verbose=0, return_dict=True)
        return {f"test_{k}": float(v) for k, v in values.items()}

    def export(self, file: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write every trial's config and metrics as .parquet, .csv or .json.

        An existing file (or link) at ``file`` raises ``FileExistsError`` unless
        ``overwrite``; then it is replaced, never written through.
        """
        import io

        from pipeline.safe_io import write_file

        path = Path(file)
        df = self.dataframe()
        suffix = path.suffix.lower()
        if suffix == ".parquet":
            buf = io.BytesIO()
            df.to_parquet(buf, engine="pyarrow", index=False)
            data: bytes | str = buf.getvalue()
        elif suffix == ".csv":
            data = df.to_csv(index=False)
        elif suffix == ".json":
            data = json.dumps(df.to_dict(orient="records"), indent=2, default=str)
        else:
            raise ValueError(f"--export: unsupported file type '{suffix}' (use .parquet, .csv or .json)")
        return write_file(path, data, overwrite=overwrite)

    def format_leaderboard(self, n: int = 10) -> str:
        board = self.leaderboard(n)
        if board.empty:
            return "(no trial reported the objective metric)"
        cols = ["trial_id", "status", "epochs", *self.spec.objective.metrics,
                *[c for c in board.columns if c.startswith("config/")]]
        view = board[cols].rename(columns=lambda c: c.removeprefix("config/"))
        return view.to_string(index=False, float_format=lambda v: f"{v:.4g}")

    def summary(self) -> str:
        df = self.dataframe()
        counts = df["status"].value_counts().to_dict() if not df.empty else {}
        states = ", ".join(f"{v} {k.lower()}" for k, v in sorted(counts.items()))
        return f"{self.where.path}: {len(df)} trials ({states})"
