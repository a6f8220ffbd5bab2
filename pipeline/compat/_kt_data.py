"""``fit``-style arrays as the pipeline's :class:`~pipeline.data.Dataset` (KerasTuner front door)."""

from __future__ import annotations

import inspect
import math
from typing import Any

import numpy as np

from pipeline.data import Dataset


def _num_classes(y: np.ndarray) -> int:
    if y.ndim > 1 and y.shape[-1] > 1:
        return int(y.shape[-1])
    if np.issubdtype(y.dtype, np.integer) and y.size:
        return int(y.max()) + 1
    return 1


_SHIPPABLE = "pass NumPy arrays (x, y) or a finite tf.data.Dataset of (x, y) batches"


def _array(value: Any, what: str) -> np.ndarray:
    if isinstance(value, dict):
        raise TypeError(f"{what}: multi-input/-output data is not supported by this front door; "
                        "pass one NumPy array")
    if _is_tf_data(value):
        raise TypeError(f"{what}: a tf.data dataset here needs `x` to be one too; {_SHIPPABLE}")
    if inspect.isgenerator(value) or inspect.isgeneratorfunction(value) or _is_py_dataset(value):
        raise TypeError(f"{what}: a Python generator or keras PyDataset runs in this process only and "
                        f"cannot be sent to trials in other processes; {_SHIPPABLE}")
    return np.asarray(value)


def _is_tf_data(value: Any) -> bool:
    return hasattr(value, "element_spec") and hasattr(value, "as_numpy_iterator")


def _is_py_dataset(value: Any) -> bool:
    return any(c.__name__ in ("PyDataset", "Sequence") and c.__module__.startswith("keras")
               for c in type(value).__mro__)


def _read_tf_data(ds: Any, what: str) -> tuple[np.ndarray, np.ndarray, int]:
    """(x, y, batch size): a finite tf.data dataset of (x, y) batches, read once into arrays.

    Keras takes each element of a dataset as one batch; the first batch's length is the
    batch size the trials keep. What the pipeline computes (maps, augmentation, shuffling)
    runs this once, not every epoch: the trials then shuffle the rows every epoch themselves.
    """
    import tensorflow as tf

    if int(ds.cardinality()) == int(tf.data.INFINITE_CARDINALITY):
        raise ValueError(f"{what}: the tf.data dataset repeats for ever; pass it without "
                         ".repeat() (each trial runs the epochs over it)")
    xs, ys = [], []
    for element in ds.as_numpy_iterator():
        if not isinstance(element, tuple) or len(element) != 2:
            raise TypeError(f"{what}: the tf.data dataset must yield (x, y) batches (sample weights "
                            f"and x-only datasets are not supported); {_SHIPPABLE}")
        xb, yb = element
        if isinstance(xb, dict) or isinstance(yb, dict):
            raise TypeError(f"{what}: multi-input/-output data is not supported by this front door")
        xs.append(np.asarray(xb))
        ys.append(np.asarray(yb))
    if not xs:
        raise ValueError(f"{what}: the tf.data dataset is empty")
    if xs[0].ndim == 0:
        raise ValueError(f"{what}: the tf.data dataset yields single rows; batch it (.batch(32)) "
                         "as model.fit needs")
    return np.concatenate(xs), np.concatenate(ys), len(xs[0])


def read_fit_data(x: Any, y: Any, validation_data: Any = None,
                  validation_split: float | None = None) -> tuple[Dataset, int | None]:
    """(:class:`Dataset`, batch size of a tf.data ``x`` or None) from ``fit``-style data.

    ``x`` and ``validation_data`` may each be finite tf.data datasets of (x, y) batches,
    read once here; Keras refuses ``validation_split`` with a dataset, and so does this.
    """
    batch_size = None
    if _is_tf_data(x):
        if y is not None:
            raise ValueError("`y` must not be given when `x` is a tf.data dataset (it yields (x, y))")
        if validation_split:
            raise ValueError("validation_split is only supported for NumPy arrays, not for a "
                             "tf.data dataset (as in Keras): pass validation_data")
        x, y, batch_size = _read_tf_data(x, "x")
    if _is_tf_data(validation_data):
        validation_data = _read_tf_data(validation_data, "validation_data")[:2]
    return make_dataset(x, y, validation_data, validation_split), batch_size


def make_dataset(x: Any, y: Any, validation_data: Any = None,
                 validation_split: float | None = None) -> Dataset:
    """A :class:`Dataset` from ``fit``-style arrays.

    ``validation_split`` takes the last rows, as Keras does; the test split is empty.
    """
    if y is None:
        if inspect.isgenerator(x) or inspect.isgeneratorfunction(x) or _is_py_dataset(x):
            _array(x, "x")  # the error that says what to pass
        raise TypeError(f"search() needs `y` with `x`: {_SHIPPABLE}")
    x, y = _array(x, "x"), _array(y, "y")
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} rows but y has {len(y)}")
    if validation_data is not None:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) < 2:
            raise TypeError("validation_data must be a tuple (x_val, y_val)")
        x_tr, y_tr = x, y
        x_val = _array(validation_data[0], "validation x")
        y_val = _array(validation_data[1], "validation y")
    elif validation_split:
        split_at = int(math.floor(len(x) * (1.0 - validation_split)))
        x_tr, y_tr, x_val, y_val = x[:split_at], y[:split_at], x[split_at:], y[split_at:]
    else:
        x_tr, y_tr, x_val, y_val = x, y, x[:0], y[:0]
    return Dataset(x_tr, y_tr, x_val, y_val, x[:0], y[:0], _num_classes(y))
