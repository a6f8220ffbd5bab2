"""Tune's per-trial result files (``result.json``, ``progress.csv``), never shortened.

Tune's logger callbacks write each trial's rows to the driver's staging folder and, when
a trial starts again with a checkpoint, first copy the file back from the experiment's
storage. The JSON logger does that at *every* start, including the restart of a trial
that PBT paused and exploited, and the storage copy is whatever the last sync left:
rows reported since then were dropped (a PBT trial on two workers kept 1 of its 4
epochs in ``result.json``; ``progress.csv``, set up once per trial, kept all four).

The callbacks here copy from storage only when it holds more than the driver has (a
driver that resumes an experiment in a fresh staging folder still gets the stored rows).

    >>> from pipeline.result_files import JsonRows, CsvRows
    >>> [type(c).__name__ for c in (JsonRows(), CsvRows())]
    ['JsonRows', 'CsvRows']
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

if TYPE_CHECKING:
    from ray.tune.experiment import Trial


def _stored_is_longer(file_name: str, trial: "Trial") -> bool:
    """Whether the storage's copy of the trial's file has more bytes than the driver's."""
    local = Path(trial.local_path or "", file_name)
    if not local.exists():
        return True
    storage = trial.storage
    if storage is None:
        return False
    remote = Path(storage.trial_fs_path, file_name).as_posix()
    try:
        info = storage.storage_filesystem.get_file_info(remote)
    except OSError:
        return False  # storage unreachable: keep what the driver has
    return info.size is not None and info.size > local.stat().st_size


class _NeverShorter:
    def _restore_from_remote(self, file_name: str, trial: "Trial") -> None:
        if _stored_is_longer(file_name, trial):
            super()._restore_from_remote(file_name, trial)  # type: ignore[misc]


class JsonRows(_NeverShorter, JsonLoggerCallback):
    """Tune's ``result.json`` logger, minus the copy that loses the newest rows."""


class CsvRows(_NeverShorter, CSVLoggerCallback):
    """Tune's ``progress.csv`` logger, minus the copy that loses the newest rows."""
