"""Model builders and callbacks used by the tests to inject real faults."""

from __future__ import annotations

import os
from pathlib import Path

import keras


def nan_or_fine(hp, input_shape, num_classes):
    """A small MLP; with ``poison=True`` its output is NaN, so the loss is NaN."""
    inputs = keras.Input(shape=input_shape)
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Dense(8, activation="relu")(x)
    if hp.get("poison"):
        x = keras.layers.Lambda(lambda t: t * float("nan"))(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs)


class FailOnce(keras.callbacks.Callback):
    """Raises at the start of ``epoch`` (1-based) the first time only (marker file)."""

    def __init__(self, marker: str, epoch: int):
        super().__init__()
        self.marker, self.epoch = Path(marker), epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch + 1 == self.epoch and not self.marker.exists():
            self.marker.write_text(str(os.getpid()))
            raise RuntimeError(f"injected failure at epoch {self.epoch}")


class AlwaysFail(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 1:
            raise RuntimeError("injected permanent failure")


class RecordThread(keras.callbacks.Callback):
    """Appends ``pid thread-id thread-name`` to ``path`` when a trial's training begins."""

    def __init__(self, path: str):
        super().__init__()
        self.path = Path(path)

    def on_train_begin(self, logs=None):
        import threading

        t = threading.current_thread()
        with self.path.open("a") as f:
            f.write(f"{os.getpid()} {t.ident} {t.name}\n")


class KillWorkerOnce(keras.callbacks.Callback):
    """SIGKILLs its own process at the start of ``epoch`` (1-based), the first time only, in
    the Ray Train worker of world rank ``rank`` (a worker of a multi-worker trial lost).
    Every worker appends ``rank epoch pid`` to ``marker + ".log"`` as each epoch begins."""

    def __init__(self, marker: str, epoch: int, rank: int = 1):
        super().__init__()
        self.marker, self.epoch, self.rank = Path(marker), epoch, rank

    def on_epoch_begin(self, epoch, logs=None):
        import signal

        import ray.train

        rank = ray.train.get_context().get_world_rank()
        with open(f"{self.marker}.log", "a") as f:
            f.write(f"{rank} {epoch + 1} {os.getpid()}\n")
        if epoch + 1 == self.epoch and rank == self.rank and not self.marker.exists():
            self.marker.write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)


class LoseNamedCheckpointOnce(keras.callbacks.Callback):
    """At the start of ``epoch`` (1-based), the first time only: moves the trial's newest
    checkpoint folder under ``root`` to a higher number and raises. Tune's retry then names
    a checkpoint gone from storage while a newer whole one of the trial is there, as after
    a driver killed between Tune's deletion of an old checkpoint and its next state save."""

    def __init__(self, marker: str, epoch: int, root: str):
        super().__init__()
        self.marker, self.epoch, self.root = Path(marker), epoch, Path(root)

    def on_epoch_begin(self, epoch, logs=None):
        if epoch + 1 != self.epoch or self.marker.exists():
            return
        newest = max(self.root.rglob("checkpoint_*"), key=lambda p: p.name)
        moved = newest.with_name("checkpoint_000099")
        newest.rename(moved)
        self.marker.write_text(f"{newest}\n{moved}")
        raise RuntimeError(f"injected failure at epoch {self.epoch}")


def tiny_kt_build(hp):
    """A KerasTuner build function over a 3-feature, 2-class problem: units and learning rate."""
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(hp.Int("units", 2, 4)),
                              keras.layers.Dense(2, activation="softmax")])
    model.compile(keras.optimizers.Adam(hp.Choice("lr", [1e-2, 1e-3])),
                  "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


class Scale(keras.layers.Layer):
    """A custom layer nobody registered with Keras (``keras.models.load_model`` cannot
    rebuild a model holding it)."""

    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[-1],), initializer="ones")

    def call(self, x):
        return x * self.w


class ScaledNet(keras.Model):
    """A subclassed model (unbuilt until called) around :class:`Scale`."""

    def __init__(self, units: int, classes: int = 2):
        super().__init__()
        self.flat, self.scale = keras.layers.Flatten(), Scale()
        self.hidden = keras.layers.Dense(units, activation="relu")
        self.out = keras.layers.Dense(classes, activation="softmax")

    def call(self, x):
        return self.out(self.hidden(self.scale(self.flat(x))))


def scaled_kt_build(hp):
    """A KerasTuner build function returning an unbuilt subclassed model with a custom layer."""
    model = ScaledNet(hp.Int("units", 2, 4))
    model.compile(keras.optimizers.Adam(hp.Choice("lr", [1e-2, 3e-2])),
                  "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def scaled_net(hp, num_classes):
    """A spec builder (``tests.models:scaled_net``) whose model Keras cannot save whole."""
    return ScaledNet(int(hp.get("units", 8)), num_classes)
