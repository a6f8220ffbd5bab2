"""Model builders: built-ins by name, or a user's ``package.module:function``.

A builder takes the trial's hyperparameters (a dict of the active searched
values merged over ``model.options``), the input shape and the number of
classes, and returns a Keras model. A builder that accepts ``x_train`` /
``y_train`` keywords also gets the training split (never the validation or
test split), to fit preprocessing inside the model. With sharded data streamed
from storage (:mod:`pipeline.streaming`) they are None, and a builder that takes
``train_stats`` gets the training split's statistics instead. The trainable compiles the
model (optimizer, schedule: :mod:`pipeline.optimizers`) unless the builder did.

Built-in hyperparameters (all optional; defaults in brackets):

* ``mlp``: ``layers`` [1], ``units`` [64], ``units_<i>`` per layer (1-based,
  falls back to ``units``), ``activation`` [relu], ``dropout`` [0.0],
  ``l2`` [0.0], ``batchnorm`` [False].
* ``cnn``: ``conv_layers`` [2], ``filters`` [32] (doubling per layer),
  ``filters_<i>`` per conv layer, ``kernel_size`` [3], ``dense_units`` [64],
  ``activation``, ``dropout``, ``l2``, ``batchnorm``. Rank-1 inputs are 1-D
  signals (Conv1D); rank-2 and rank-3 inputs are images (Conv2D).
* both: feature engineering ``scaling``, ``select_k`` (mlp only),
  ``noise_std``, ``shift``, ``flip`` (:mod:`pipeline.preprocessing`).

Their types and enumerated values are checked before a run starts, by
:mod:`pipeline.hyperparameters` (no Keras needed).
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any, Callable

from pipeline.registry import Registry

BUILDERS: Registry[Callable[..., Any]] = Registry("model builder")


def _regularizer(hp: dict[str, Any]):
    import keras

    return keras.regularizers.L2(float(hp["l2"])) if hp.get("l2") else None


def _block(x, hp: dict[str, Any]):
    import keras

    if hp.get("batchnorm"):
        x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Activation(hp.get("activation", "relu"))(x)
    if hp.get("dropout"):
        x = keras.layers.Dropout(float(hp["dropout"]))(x)
    return x


def _front(hp: dict[str, Any], input_shape: tuple[int, ...], x_train, train_stats):
    """Input, then the training-only augmentation, then scaling fitted on the training split."""
    import keras

    from pipeline import preprocessing as pre

    inputs = keras.Input(shape=input_shape)
    x = pre.augment(inputs, hp, input_shape)
    return inputs, pre.scale(x, hp, input_shape, x_train, train_stats)


@BUILDERS.register("mlp")
def build_mlp(hp: dict[str, Any], input_shape: tuple[int, ...], num_classes: int,
              x_train=None, y_train=None, train_stats=None):
    import keras

    from pipeline import preprocessing as pre

    inputs, x = _front(hp, input_shape, x_train, train_stats)
    x = keras.layers.Flatten()(x)
    x = pre.select(x, hp, x_train, y_train, train_stats)
    for i in range(1, int(hp.get("layers", 1)) + 1):
        units = int(hp.get(f"units_{i}", hp.get("units", 64)))
        x = keras.layers.Dense(units, kernel_regularizer=_regularizer(hp), name=f"dense_{i}")(x)
        x = _block(x, hp)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="output")(x)
    return keras.Model(inputs, outputs, name="mlp")


@BUILDERS.register("cnn")
def build_cnn(hp: dict[str, Any], input_shape: tuple[int, ...], num_classes: int,
              x_train=None, y_train=None, train_stats=None):
    import keras

    if int(hp.get("select_k") or 0) > 0:
        raise ValueError("select_k: feature selection applies to the mlp builder only "
                         "(a CNN needs its spatial layout)")
    inputs, x = _front(hp, input_shape, x_train, train_stats)
    if len(input_shape) == 1:
        x = keras.layers.Reshape((input_shape[0], 1))(x)
        conv, pool = keras.layers.Conv1D, keras.layers.MaxPooling1D
    else:
        x = keras.layers.Reshape((*input_shape[:2], 1))(x) if len(input_shape) == 2 else x
        conv, pool = keras.layers.Conv2D, keras.layers.MaxPooling2D
    filters = int(hp.get("filters", 32))
    for i in range(1, int(hp.get("conv_layers", 2)) + 1):
        width = int(hp.get(f"filters_{i}", filters * 2 ** (i - 1)))
        x = conv(width, int(hp.get("kernel_size", 3)), padding="same",
                 kernel_regularizer=_regularizer(hp), name=f"conv_{i}")(x)
        x = _block(x, hp)
        if x.shape[1] >= 4:
            x = pool(2)(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(int(hp.get("dense_units", 64)), kernel_regularizer=_regularizer(hp))(x)
    x = _block(x, hp)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="output")(x)
    return keras.Model(inputs, outputs, name="cnn")


def resolve_callable(ref: str) -> Callable[..., Any]:
    """Import ``package.module:function``."""
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


def resolve_builder(name: str) -> Callable[..., Any]:
    """A built-in by name, or ``package.module:function`` imported."""
    return BUILDERS[name] if name in BUILDERS else resolve_callable(name)


def build_model(builder: str | Callable[..., Any], hp: dict[str, Any],
                input_shape: tuple[int, ...], num_classes: int,
                x_train=None, y_train=None, train_stats=None):
    """Call the builder (a name or a callable) with the keyword arguments it accepts.

    ``x_train`` / ``y_train`` (the training split only) go to builders that name
    them or take ``**kwargs``; preprocessing fitted inside the model uses them.
    ``train_stats``: the training split's statistics when the data is streamed.
    """
    fn = builder if callable(builder) else resolve_builder(builder)
    params = inspect.signature(fn).parameters
    var_kw = any(p.kind is p.VAR_KEYWORD for p in params.values())
    offered = (("input_shape", input_shape), ("num_classes", num_classes),
               ("x_train", x_train), ("y_train", y_train), ("train_stats", train_stats))
    kwargs = {k: v for k, v in offered if k in params or var_kw}
    return fn(hp, **kwargs)
