"""Tune's result-file loggers never replace a trial's newer rows with an older stored copy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def _trial(tmp_path: Path):
    """A real Tune trial with a checkpoint, its driver staging folder and its storage folder."""
    from ray.train import Checkpoint
    from ray.train._internal.session import _TrainingResult
    from ray.train._internal.storage import StorageContext
    from ray.tune.experiment import Trial

    storage = StorageContext(storage_path=str(tmp_path / "store"), experiment_dir_name="exp")
    trial = Trial("train", config={}, storage=storage, trial_id="t1", stub=True)
    trial.init_local_path()
    (tmp_path / "ck").mkdir()
    trial.run_metadata.checkpoint_manager.register_checkpoint(
        _TrainingResult(checkpoint=Checkpoint.from_directory(str(tmp_path / "ck")), metrics={}))
    Path(trial.storage.trial_fs_path).mkdir(parents=True)
    return trial


def _rows(epochs) -> str:
    return "".join(json.dumps({"epoch": e}) + "\n" for e in epochs)


def _restart_and_report(logger, trial, epoch: int) -> list[int]:
    """The trial starts again (PBT exploit, HyperBand resume) and reports one more epoch."""
    logger.log_trial_start(trial)
    logger.log_trial_result(epoch, trial, {"epoch": epoch})
    logger.log_trial_end(trial)
    text = Path(trial.local_path, "result.json").read_text()
    return [json.loads(line)["epoch"] for line in text.splitlines()]


@pytest.mark.parametrize("driver_has", [(1, 2, 3), None], ids=["newer-on-driver", "fresh-driver"])
def test_a_restarted_trial_keeps_the_rows_the_driver_has(ray_session, tmp_path, driver_has):
    from ray.tune.logger import JsonLoggerCallback

    from pipeline.result_files import JsonRows

    trial = _trial(tmp_path)
    Path(trial.storage.trial_fs_path, "result.json").write_text(_rows([1]))  # the last sync's copy
    local = Path(trial.local_path, "result.json")
    seen = {}
    for logger in (JsonLoggerCallback(), JsonRows()):
        local.unlink(missing_ok=True)
        if driver_has:
            local.write_text(_rows(driver_has))
        seen[type(logger).__name__] = _restart_and_report(logger, trial, 4)
    if driver_has:
        assert seen["JsonLoggerCallback"] == [1, 4]  # Tune's: rows 2 and 3 lost (why we have ours)
        assert seen["JsonRows"] == [1, 2, 3, 4]
    else:  # a driver resuming in a fresh staging folder still gets the stored rows
        assert seen["JsonRows"] == seen["JsonLoggerCallback"] == [1, 4]
