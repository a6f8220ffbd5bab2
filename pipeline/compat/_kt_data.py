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


def _array(value: Any, what: str) -> np.ndarray:
    if isinstance(value, dict):
        raise TypeError(f"{what}: multi-input/-output data is not supported by this front door; "
                        "pass one NumPy array")
    if hasattr(value, "element_spec") or inspect.isgenerator(value):
        raise TypeError(f"{what}: tf.data datasets and generators are not supported; pass NumPy arrays")
    return np.asarray(value)


def make_dataset(x: Any, y: Any, validation_data: Any = None,
                 validation_split: float | None = None) -> Dataset:
    """A :class:`Dataset` from ``fit``-style arrays.

    ``validation_split`` takes the last rows, as Keras does; the test split is empty.
    """
    if y is None:
        raise TypeError("search() needs `x` and `y` arrays")
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
