"""Where a trial continues from: its checkpoints on storage, and Tune's view of them.

A checkpoint is a folder ``checkpoint_NNNNNN`` in the trial's storage folder holding
``model.keras`` (or, for a model Keras cannot save whole, ``model.weights.h5``: see
:func:`save_model`) and ``state.json`` (epoch, history, the trial's id, the model's build
config). Tune names the
one a restored trial continues from, as its experiment state last saved it; what is
stored may be newer (the state is saved every 10 s or more), and with a
``num_to_keep`` the named one may even be deleted already (Tune deletes old
checkpoints at once and saves the state after). A trial here continues from its
newest whole checkpoint on storage either way.
"""

from __future__ import annotations

import json
import os
import posixpath
import zipfile
from pathlib import Path
from typing import Any

MODEL_FILE = "model.keras"
# the weights alone, of a model Keras cannot save whole (a subclassed model without get_config)
WEIGHTS_FILE = "model.weights.h5"
STATE_FILE = "state.json"


def save_model(model: Any, folder: str) -> None:
    """Save the model into a checkpoint folder: whole (``model.keras``) when Keras can, else
    its weights (``model.weights.h5``), as KerasTuner saves every model. A subclassed model
    whose ``__init__`` takes arguments and that has no ``get_config`` cannot be saved whole;
    its trial goes on, and whoever restores it rebuilds the model (:func:`load_weights_into`)."""
    path = os.path.join(folder, MODEL_FILE)
    try:
        model.save(path)
    except (NotImplementedError, TypeError, ValueError):
        if os.path.exists(path):
            os.remove(path)
        model.save_weights(os.path.join(folder, WEIGHTS_FILE))


def build_config(model: Any) -> dict[str, Any] | None:
    """What a rebuilt model needs to create its weights before loading them (JSON-safe)."""
    return json.loads(json.dumps(model.get_build_config())) if model.built else None


def load_weights_into(model: Any, folder: str) -> Any:
    """Give a model rebuilt by its builder (KerasTuner's way) a checkpoint's weights and
    optimizer state; an unbuilt one (subclassed, Sequential without ``Input``) is first built
    as the saved one was. Needs no custom object registered."""
    import keras

    whole = os.path.join(folder, MODEL_FILE)
    if not model.built:
        state = json.loads(Path(folder, STATE_FILE).read_text())
        config = state.get("build_config")
        if config is None and os.path.exists(whole):  # a checkpoint from before build_config
            with zipfile.ZipFile(whole) as archive:
                config = json.loads(archive.read("config.json")).get("build_config")
        if config:
            model.build_from_config(config)  # a subclassed model: its call runs symbolically,
            model.built = model.built or bool(model.weights)  # its layers get their weights
    optimizer = getattr(model, "optimizer", None)
    if isinstance(optimizer, keras.optimizers.Optimizer) and not optimizer.built:
        optimizer.build(model.trainable_variables)  # its saved state loads too
    model.load_weights(whole if os.path.exists(whole) else os.path.join(folder, WEIGHTS_FILE))
    return model


def newest_own_checkpoint(fs, folder: str, trial_id: str, default=None):
    """The newest whole checkpoint (by epoch) of trial ``trial_id`` in its storage ``folder``.

    A driver SIGKILLed and resumed (`run SPEC --resume`) restores each trial from the
    checkpoint named by the experiment state Tune last saved to storage, every 10 s or
    more: a trial may have stored later checkpoints, its final one included, before the
    kill, or have none named yet. Continuing from the newest one that holds this trial's
    id runs no stored epoch again (the chaos soak found finished trials re-run).
    Candidates that cannot be read (half written, storage away) are passed over;
    ``default`` if none is left.
    """
    import pyarrow.fs as pafs
    from ray import tune

    try:
        infos = fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
    except (OSError, ValueError):
        return default
    best, best_epoch = default, -1
    for info in infos:
        if info.type != pafs.FileType.Directory or not info.base_name.startswith("checkpoint_"):
            continue
        try:
            with fs.open_input_stream(f"{info.path}/{STATE_FILE}") as f:
                state = json.loads(f.read().decode())
            whole = any(fs.get_file_info(f"{info.path}/{name}").size
                        for name in (MODEL_FILE, WEIGHTS_FILE))
        except (OSError, ValueError):
            continue
        epoch = state.get("epoch") if isinstance(state, dict) else None
        if state.get("trial_id") == trial_id and whole and isinstance(epoch, int) and epoch > best_epoch:
            best, best_epoch = tune.Checkpoint(info.path, filesystem=fs), epoch
    return best


def own_checkpoint(checkpoint, trial_id: str):
    """What the trial continues from: :func:`newest_own_checkpoint` of its storage folder,
    else ``checkpoint`` (Tune's, maybe None)."""
    if checkpoint is not None:
        fs, folder = checkpoint.filesystem, posixpath.dirname(checkpoint.path.rstrip("/"))
    else:  # Ray's session API names the folder; not public, so its absence is no error
        try:
            from ray.train._internal.session import get_storage

            storage = get_storage()
            fs, folder = storage.storage_filesystem, storage.trial_fs_path
        except Exception:  # noqa: BLE001
            return None
    return newest_own_checkpoint(fs, folder, trial_id, checkpoint)


def stored_checkpoints_only(trainable: Any) -> Any:
    """``trainable`` (a function) as Tune's trainable class, whose restore takes the trial's
    newest whole stored checkpoint when the one Tune names is gone from storage.

    Tune refuses to restore from a deleted checkpoint ("does not exist on storage
    anymore") before the trial's own code runs, so a driver killed between Tune's
    deletion of an old checkpoint and its next state save could not be resumed. The
    class keeps the function's name (trial names and folders derive from it).
    """
    from ray.tune.trainable.function_trainable import wrap_function

    base = wrap_function(trainable)

    class _StoredCheckpointsOnly(base):  # type: ignore[misc, valid-type]
        # every such class differs only in its trial function: a run may take over another
        # run's actor by giving it its own (pipeline.worker_park)
        swappable_function = True

        def restore(self, checkpoint_path):
            return super().restore(_still_stored(checkpoint_path, self.trial_id))

    _StoredCheckpointsOnly.__name__ = _StoredCheckpointsOnly.__qualname__ = base.__name__
    return _StoredCheckpointsOnly


def _still_stored(result: Any, trial_id: str) -> Any:
    """Tune's restore argument, its checkpoint swapped for the trial's newest whole stored one
    if it is gone from storage (a PBT donor's, or a trial with none left: as it was)."""
    from ray.tune.trainable.trainable import _TrainingResult

    checkpoint = getattr(result, "checkpoint", None)
    if checkpoint is None:
        return result
    fs, path = checkpoint.filesystem, checkpoint.path.rstrip("/")
    try:
        gone = fs.get_file_info(path).type.name == "NotFound"
    except OSError:  # storage away: Tune's own check and retries decide
        return result
    if not gone:
        return result
    newest = newest_own_checkpoint(fs, posixpath.dirname(path), trial_id)
    if newest is None:
        return result
    return _TrainingResult(checkpoint=newest, metrics=result.metrics)
