"""Optimizer and learning-rate schedule from a trial's hyperparameters.

``build_optimizer(hp, training, steps_per_epoch)`` reads (defaults in brackets;
``training`` is the spec's training section, whose values are the fallbacks):

* ``optimizer`` [training.optimizer]: ``adam``, ``adamw``, ``sgd``, ``rmsprop``
  or any other Keras optimizer name;
* ``learning_rate`` [training.learning_rate]: the initial learning rate;
* ``momentum``: ``sgd`` [0.9] and ``rmsprop`` [0.0]; ``nesterov`` [false] for ``sgd``;
* ``weight_decay``: decoupled weight decay for ``adamw`` [Keras: 0.004] (any
  optimizer accepts it);
* ``lr_schedule`` [constant]:

  - ``constant``;
  - ``cosine``: cosine decay to ``lr_min_ratio`` x lr [0.0] over
    ``lr_decay_steps`` steps [all of training: epochs x steps_per_epoch];
  - ``step``: multiply by ``lr_decay_rate`` [0.5] every ``lr_step_epochs``
    epochs [max(1, epochs // 3)];
  - ``exponential``: multiply by ``lr_decay_rate`` [0.5] per epoch, smoothly.

Schedules count optimizer steps, so ``steps_per_epoch`` (ceil(n_train /
batch_size)) is needed for every schedule but ``constant``.

Example:
    >>> from pipeline.spec import TrainingSpec
    >>> opt = build_optimizer({"optimizer": "sgd", "momentum": 0.8, "lr_schedule": "step",
    ...                        "lr_step_epochs": 2}, TrainingSpec(epochs=6), steps_per_epoch=10)
    >>> type(opt).__name__, round(float(opt.momentum), 2), opt._learning_rate.decay_steps
    ('SGD', 0.8, 20)
"""

from __future__ import annotations

import math
from typing import Any

SCHEDULES = ("constant", "cosine", "step", "exponential")


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    """Optimizer steps in one epoch of ``n_train`` samples."""
    return max(1, math.ceil(int(n_train) / int(batch_size)))


def build_schedule(hp: dict[str, Any], learning_rate: float, epochs: int,
                   steps_per_epoch: int | None):
    """A float (constant) or a ``keras.optimizers.schedules.LearningRateSchedule``."""
    import keras

    kind = str(hp.get("lr_schedule") or "constant").lower()
    if kind not in SCHEDULES:
        raise ValueError(f"lr_schedule: unknown schedule '{kind}' (known: {', '.join(SCHEDULES)})")
    if kind == "constant":
        return learning_rate
    if not steps_per_epoch:
        raise ValueError(f"lr_schedule: '{kind}' needs steps_per_epoch")
    schedules = keras.optimizers.schedules
    rate = float(hp.get("lr_decay_rate", 0.5))
    if kind == "cosine":
        steps = int(hp.get("lr_decay_steps") or epochs * steps_per_epoch)
        return schedules.CosineDecay(learning_rate, decay_steps=max(1, steps),
                                     alpha=float(hp.get("lr_min_ratio", 0.0)))
    if kind == "step":
        every = int(hp.get("lr_step_epochs") or max(1, epochs // 3))
        return schedules.ExponentialDecay(learning_rate, decay_steps=max(1, every * steps_per_epoch),
                                          decay_rate=rate, staircase=True)
    steps = int(hp.get("lr_decay_steps") or steps_per_epoch)
    return schedules.ExponentialDecay(learning_rate, decay_steps=max(1, steps), decay_rate=rate)


def build_optimizer(hp: dict[str, Any], training: Any, steps_per_epoch: int | None = None):
    """A Keras optimizer instance for the trial's hyperparameters over ``training``'s defaults."""
    import keras

    name = str(hp.get("optimizer", training.optimizer))
    cls = type(keras.optimizers.get(name))  # raises ValueError on an unknown name
    lr = float(hp.get("learning_rate", training.learning_rate))
    kwargs: dict[str, Any] = {
        "learning_rate": build_schedule(hp, lr, training.epochs, steps_per_epoch)}
    key = name.lower()
    if key == "sgd":
        kwargs["momentum"] = float(hp.get("momentum", 0.9))
        kwargs["nesterov"] = bool(hp.get("nesterov", False))
    elif key == "rmsprop" and "momentum" in hp:
        kwargs["momentum"] = float(hp["momentum"])
    if hp.get("weight_decay") is not None:
        kwargs["weight_decay"] = float(hp["weight_decay"])
    return cls(**kwargs)
