"""The KerasTuner door's search space: found by building the user's models on the driver.

KerasTuner grows its space while trials run; here it must be known before the first trial
starts (a Ray Tune searcher samples it). :func:`discover_space` builds the hypermodel with a
recording :class:`~pipeline.compat._hyperparameters.HyperParameters` (conditions kept);
:func:`dry_fit` adds what a ``HyperModel.fit`` declares, by calling it on a model that does
not train.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from pipeline.compat._hyperparameters import HyperParameter, HyperParameters, discover
from pipeline.compat._kt_run_trial import _DryModel
from pipeline.compat._kt_trial import not_a_model
from pipeline.data import Dataset

log = logging.getLogger("pipeline.compat.keras_tuner")


@dataclass
class Discovered:
    """What the builds showed: the space, and what ``search()`` must know about the models."""

    defs: dict[str, HyperParameter]
    not_a_model: str | None  # the error of a build that returned no Keras model (search() raises it)
    lazy_models: bool  # a model left unbuilt (subclassed, no Input) may declare more when called
    initial: list[str]  # the names KerasTuner knows before its first trial (build with defaults)


def discover_space(hypermodel: Any, declared: HyperParameters | None, allow_new_entries: bool,
                   extra: Callable[[HyperParameters], Any] | None = None,
                   sample: np.ndarray | None = None) -> Discovered:
    """Every hyperparameter the hypermodel's build (and ``extra``) declares. A model the build
    leaves unbuilt (a subclassed model, a Sequential without ``Input``) may declare more when
    it is first called (in ``call``, a ``Lambda``): with ``sample`` (two rows of the search's
    data) each such model is called on it too."""
    import keras

    not_model: list[str] = []
    lazy = False

    def build(hp):
        nonlocal lazy
        # no full garbage collection per build: with Keras, TensorFlow and Ray loaded
        # in the driver each took 0.5-0.8 s (3 per tuner), where KerasTuner's takes none
        keras.backend.clear_session(free_memory=False)
        if hypermodel is not None:
            model = hypermodel.build(hp)
            if not isinstance(model, keras.Model) and len(not_model) < 1:
                not_model.append(not_a_model(model))
            elif not model.built:
                lazy = True
                if sample is not None:
                    try:
                        model(sample)
                    except Exception as exc:  # noqa: BLE001 - the trial raises it, if real
                        log.debug("search-space discovery: calling the model stopped: %s", exc)
        if extra is not None:
            extra(hp)

    initial: list[str] = []
    defs = discover(build, declared, initial=initial)
    if declared is not None:
        new = [n for n in defs if n not in declared._defs]
        if new and not allow_new_entries:
            raise RuntimeError(f"`allow_new_entries` is `False`, but the build function uses "
                               f"hyperparameters not in `hyperparameters`: {new}")
    keras.backend.clear_session(free_memory=False)
    return Discovered(defs, not_model[0] if not_model else None, lazy, initial)


def head(data: Dataset, n: int) -> Dataset:
    """The first ``n`` rows of each split (a dry run's data)."""
    return Dataset(data.x_train[:n], data.y_train[:n], data.x_val[:n], data.y_val[:n],
                   data.x_test[:0], data.y_test[:0], data.num_classes)


def dry_fit(hypermodel: Any, data: Dataset, args: dict[str, Any], dataset_batch: int | None = None,
            no_data: bool = False) -> Callable[[HyperParameters], None]:
    """A recorder that calls the HyperModel's fit with a model whose training does nothing,
    to record hyperparameters that ``fit`` declares (``batch_size`` and the like); data as
    the user passed it (two rows of arrays, or a two-row tf.data dataset)."""
    kwargs = {**args, "callbacks": []}
    if dataset_batch:
        import tensorflow as tf

        def pack(x, y):
            return (tf.data.Dataset.from_tensor_slices((x[:2], y[:2])).batch(2),)
    else:
        def pack(x, y):
            return x[:2], y[:2]
    if len(data.x_val):
        kwargs["validation_data"] = pack(data.x_val, data.y_val)
        if dataset_batch:
            kwargs["validation_data"] = kwargs["validation_data"][0]

    def extra(hp):
        model = _DryModel()
        try:
            hypermodel.fit(hp, model, *(() if no_data else pack(data.x_train, data.y_train)),
                           **kwargs)
        except Exception as exc:  # noqa: BLE001 - user code may need a real model
            log.debug("dry run of HyperModel.fit stopped: %s", exc)

    return extra


def exhaustive(space: dict[str, dict[str, Any]], max_trials: int | None,
               seed: int) -> list[dict[str, Any]] | None:
    """Every configuration of a finite space, in an order drawn from the seed, when there are
    no more than ``max_trials`` of them (else None): KerasTuner's random and Bayesian searches
    never try a configuration twice and end when none is left, so they try each once."""
    finite = all(p["type"] in ("fixed", "bool", "choice", "int")
                 or (p["type"] == "float" and p.get("step")) for p in space.values())
    if not finite or not max_trials:
        return None
    from pipeline.space import SearchSpace

    grid = SearchSpace.from_dict(space).grid()
    if len(grid) > max_trials:
        return None
    random.Random(seed).shuffle(grid)
    return grid
