"""One trace per ``fit`` in trial workers: Keras' training state built before tracing.

Keras 3 (3.15 here) with TensorFlow and no ``tf.distribute`` strategy builds the optimizer's
slots and the compiled metrics' variables lazily, inside the first trace of the train step.
TensorFlow then traces the step a second time, as it must for a function that created
variables, so every trial's first ``fit`` traces its train step twice (measured on mnist1d
models in a one-thread worker: first one-epoch ``fit`` 1.5 s of CPU for an MLP, 1.7 s for a
small CNN; 0.9 s and 1.3 s traced once). Under a strategy Keras builds that state first,
from the input's shapes (``_symbolic_build``); :func:`install` makes it do so without one
too, in the trial workers (``pipeline.trainable.trial_session``), whichever door the
trial came through and whoever calls ``fit``: the user's own objective included.

The variables are the same, created in the same order from the same seeds: weights,
histories and metrics come out identical (checked in ``tests/test_keras_build.py``). Only
shapes are read (the arrays' or the ``tf.data`` dataset's element spec), never a batch;
other inputs (Python generators, ``PyDataset``) and any failure to build ahead are left to
Keras' own build in the trace, as before.

    >>> install(); install()  # idempotent
    >>> from keras.src.backend.tensorflow.trainer import TensorFlowTrainer
    >>> from pipeline._patch import is_wrapped
    >>> is_wrapped(TensorFlowTrainer, "_maybe_symbolic_build", _build_ahead)
    True
"""

from __future__ import annotations

import logging
from typing import Any

from pipeline._patch import wrap_once

log = logging.getLogger(__name__)


def _symbolic_inputs(iterator: Any) -> Any:
    """Symbolic tensors shaped as a Keras epoch iterator's batches (batch dimension None),
    read from its arrays or its dataset's element spec; None for other inputs."""
    from keras import KerasTensor, tree
    from keras.src.backend import standardize_dtype

    adapter: Any = getattr(iterator, "data_adapter", None)
    kind = type(adapter).__name__
    if kind == "ArrayDataAdapter":  # NumPy arrays, tensors: never copied into a pipeline here
        data, shape = adapter._inputs, lambda v: (None, *v.shape[1:])
    elif kind == "TFDatasetAdapter":
        data, shape = adapter.get_tf_dataset().element_spec, lambda v: tuple(v.shape)
    else:  # generators, PyDatasets, other loaders: left to Keras
        return None
    return tree.map_structure(
        lambda v: None if v is None else KerasTensor(shape(v), standardize_dtype(v.dtype)), data)


def install() -> None:
    """Patch Keras' TensorFlow trainer in this process (once); a no-op where Keras differs."""
    try:
        from keras.src.backend.tensorflow.trainer import TensorFlowTrainer
    except ImportError:  # another backend, or a Keras laid out differently: nothing to do
        return
    if hasattr(TensorFlowTrainer, "_maybe_symbolic_build") and hasattr(TensorFlowTrainer, "_symbolic_build"):
        wrap_once(TensorFlowTrainer, "_maybe_symbolic_build", _build_ahead)


def _build_ahead(original: Any) -> Any:
    def _maybe_symbolic_build(self: Any, iterator: Any = None, data_batch: Any = None) -> None:
        if self._distribute_strategy is not None:  # Keras builds ahead itself
            return original(self, iterator=iterator, data_batch=data_batch)
        try:
            batch = data_batch if iterator is None else _symbolic_inputs(iterator)
            if batch is not None:
                self._symbolic_build(data_batch=batch)
        except Exception:  # noqa: BLE001 - Keras' own lazy build, in the trace, takes over
            log.debug("building the training state ahead failed", exc_info=True)

    return _maybe_symbolic_build
