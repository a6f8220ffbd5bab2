"""Searchable feature engineering that runs inside the trial and is saved with the model.

Every transform is a Keras layer at the front of the built model, so the
``model.keras`` checkpoint carries it and ``results.best_model()`` applies the
same transform at inference. Statistics are fitted on the **training split
only** (the builder receives ``x_train``/``y_train``; the validation and test
splits never reach it). For sharded data streamed from storage the builder gets
no arrays but ``train_stats`` (:class:`pipeline.streaming.TrainStats`): the same
statistics, computed once on the driver by streaming the training shards.

Hyperparameters (defaults in brackets):

* ``scaling`` [none]: ``standard`` (x - mean) / std, or ``minmax`` (x - min) /
  (max - min), per feature, from the training split; a built-in
  ``keras.layers.Normalization`` with the statistics in its config. Constant
  features get a unit scale instead of a division by zero.
* ``select_k`` [0 = all]: keep the k features with the best ANOVA F-score
  (``sklearn.feature_selection.f_classif``) on the training split, with a
  :class:`SelectFeatures` gather layer whose ``indices`` are in its config.
* ``noise_std`` [0]: additive Gaussian noise (``GaussianNoise``), training only.
* ``shift`` [0]: random translation by up to this fraction of each spatial size:
  ``RandomTranslation`` for images (rank-2/3 inputs), a circular
  :class:`RandomRoll1D` for 1-D signals (rank-1 inputs); training only.
* ``flip`` [false]: ``RandomFlip``; ``true`` / ``horizontal``, ``vertical`` or
  ``horizontal_and_vertical`` (1-D signals: ``true`` reverses time); training only.

Order inside the model: augmentation (shift, flip, noise) on the raw input,
then scaling, then (after flattening, MLP only) feature selection.

Loading a checkpoint that uses :class:`SelectFeatures` or :class:`RandomRoll1D`
needs this module imported first (``import pipeline.preprocessing``), as with
any registered custom Keras layer.
"""

from __future__ import annotations

import warnings
from typing import Any

import keras
import numpy as np
from keras import ops

from pipeline.hyperparameters import FLIP_MODES, NO_FLIP, SCALINGS


@keras.saving.register_keras_serializable(package="pipeline")
class SelectFeatures(keras.layers.Layer):
    """Keeps the given feature indices of the last axis (a fixed gather)."""

    def __init__(self, indices, **kwargs):
        super().__init__(**kwargs)
        self.indices = [int(i) for i in indices]

    def call(self, inputs):
        return ops.take(inputs, ops.convert_to_tensor(self.indices, dtype="int32"), axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], len(self.indices))

    def get_config(self):
        return {**super().get_config(), "indices": list(self.indices)}


@keras.saving.register_keras_serializable(package="pipeline")
class RandomRoll1D(keras.layers.Layer):
    """Rolls each sample of a (batch, length[, channels]) signal circularly by a
    random whole number of steps in [-factor*length, factor*length]; training only."""

    def __init__(self, factor: float, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.factor = float(factor)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=None):
        length = inputs.shape[1]
        max_shift = int(round(self.factor * length))
        if not training or max_shift == 0:
            return inputs
        shift = keras.random.randint((ops.shape(inputs)[0],), -max_shift, max_shift + 1,
                                     seed=self.seed_generator, dtype="int32")
        idx = ops.mod(ops.arange(length, dtype="int32")[None, :] - shift[:, None], length)
        if len(inputs.shape) == 3:
            idx = ops.expand_dims(idx, -1) * ops.ones_like(inputs, dtype="int32")
        return ops.take_along_axis(inputs, idx, axis=1)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "factor": self.factor, "seed": self.seed}


def _needs_data(name: str, x_train, train_stats=None) -> None:
    if x_train is None and train_stats is None:
        raise ValueError(f"{name}: needs the training split (the builder got no x_train)")


def scaling_stats(kind: str, x_train: np.ndarray | None,
                  train_stats: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """(mean, variance) for a Normalization layer that implements ``kind`` scaling.

    From ``x_train``, or, for streamed data (no ``x_train``), from ``train_stats``
    (:class:`pipeline.streaming.TrainStats`, computed once on the driver).
    """
    if kind not in ("standard", "minmax"):
        raise ValueError(f"scaling: unknown value '{kind}' (known: {', '.join(SCALINGS)})")
    if x_train is None:
        center, scale = (np.asarray(v, dtype="float64") for v in train_stats.center_scale(kind))
    else:
        x = np.asarray(x_train, dtype="float64")
        if kind == "standard":
            center, scale = x.mean(axis=0), x.std(axis=0)
        else:
            center, scale = x.min(axis=0), x.max(axis=0) - x.min(axis=0)
    scale = np.where(scale > 1e-12, scale, 1.0)  # a constant feature is only centred
    return center.astype("float32"), (scale ** 2).astype("float32")


def select_indices(x_train: np.ndarray | None, y_train: np.ndarray | None, k: int,
                   train_stats: Any = None) -> list[int]:
    """The k best features of the flattened training split by ANOVA F-score, ascending.

    Streamed data (no ``x_train``) ranks by ``train_stats.f_scores()``, the same F-scores.
    """
    if x_train is None:
        scores = np.nan_to_num(np.asarray(train_stats.f_scores(), dtype="float64"),
                               nan=-np.inf)  # undefined (constant) features rank last
        best = np.argsort(scores, kind="mergesort")[-min(int(k), len(scores)):]
        return sorted(int(i) for i in best)
    from sklearn.feature_selection import SelectKBest, f_classif

    x = np.asarray(x_train).reshape(len(x_train), -1)
    with warnings.catch_warnings():  # constant features: F undefined, ranked last
        warnings.simplefilter("ignore")
        selector = SelectKBest(f_classif, k=min(int(k), x.shape[1])).fit(x, np.asarray(y_train))
    return [int(i) for i in selector.get_support(indices=True)]


def _flip_mode(value: Any) -> str | None:
    key = value.lower() if isinstance(value, str) else value
    if key in NO_FLIP:
        return None
    if key not in FLIP_MODES:
        raise ValueError(f"flip: unknown value '{value}' (use true, horizontal, vertical "
                         "or horizontal_and_vertical)")
    return FLIP_MODES[key]


def augment(x, hp: dict[str, Any], input_shape: tuple[int, ...]):
    """Training-only augmentation layers (shift, flip, noise) on the raw input."""
    shift = float(hp.get("shift") or 0.0)
    flip = _flip_mode(hp.get("flip"))
    noise = float(hp.get("noise_std") or 0.0)
    if len(input_shape) == 1:  # a 1-D signal
        if shift:
            x = RandomRoll1D(shift, name="aug_shift")(x)
        if flip:
            x = keras.layers.Reshape((1, input_shape[0], 1))(x)
            x = keras.layers.RandomFlip("horizontal", name="aug_flip")(x)
            x = keras.layers.Reshape(input_shape)(x)
    elif shift or flip:  # an image: (H, W) or (H, W, C)
        image = len(input_shape) == 3
        if not image:
            x = keras.layers.Reshape((*input_shape, 1))(x)
        if shift:
            x = keras.layers.RandomTranslation(shift, shift, fill_mode="constant",
                                               name="aug_shift")(x)
        if flip:
            x = keras.layers.RandomFlip(flip, name="aug_flip")(x)
        if not image:
            x = keras.layers.Reshape(input_shape)(x)
    if noise:
        x = keras.layers.GaussianNoise(noise, name="aug_noise")(x)
    return x


def scale(x, hp: dict[str, Any], input_shape: tuple[int, ...], x_train, train_stats=None):
    """Per-feature scaling fitted on the training split (a Normalization layer)."""
    kind = str(hp.get("scaling") or "none").lower()
    if kind == "none":
        return x
    _needs_data("scaling", x_train, train_stats)
    mean, variance = scaling_stats(kind, x_train, train_stats)
    axis = tuple(range(1, len(input_shape) + 1))
    return keras.layers.Normalization(axis=axis, mean=mean, variance=variance,
                                      name=f"scaling_{kind}")(x)


def select(x, hp: dict[str, Any], x_train, y_train, train_stats=None):
    """Feature selection on a flat tensor: the k best training-split features."""
    k = int(hp.get("select_k") or 0)
    if k <= 0 or k >= int(x.shape[-1]):
        return x
    _needs_data("select_k", x_train, train_stats)
    if x_train is not None and y_train is None:
        raise ValueError("select_k: needs the training labels (the builder got no y_train)")
    return SelectFeatures(select_indices(x_train, y_train, k, train_stats), name="select_k")(x)
