"""``distribution_strategy=`` on the KerasTuner door: what each trial's worker rebuilds.

KerasTuner builds and fits every trial under the strategy, in its one process. Here a
``MirroredStrategy`` (or ``OneDeviceStrategy``) is rebuilt inside each trial's worker over
the devices Ray gives it; a ``MultiWorkerMirroredStrategy`` makes each trial a data-parallel
run of Ray Train workers (:mod:`pipeline.distributed`). Other strategies are refused.
"""

from __future__ import annotations

import sys
from typing import Any


def mirrored_gpus(strategy: Any) -> int | None:
    """``distribution_strategy=`` as the trials take it: None (none, or multi-worker), else
    GPUs per trial.

    A strategy over N GPUs asks ``resources_per_trial={"gpu": N}`` unless given, one over
    the CPU asks none (0). A ``MultiWorkerMirroredStrategy`` is :func:`multiworker`'s.
    """
    if strategy is None:
        return None
    import tensorflow as tf

    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return None
    if not isinstance(strategy, (tf.distribute.MirroredStrategy, tf.distribute.OneDeviceStrategy)):
        raise ValueError(
            f"distribution_strategy: {type(strategy).__name__} is not supported by this front "
            "door (it takes MirroredStrategy and OneDeviceStrategy, rebuilt in each trial over "
            "the devices Ray gives it, and MultiWorkerMirroredStrategy, whose trials run on "
            "resources_per_trial['workers'] Ray Train workers)")
    devices = list(getattr(strategy.extended, "worker_devices", ()))
    return sum("GPU" in d.upper() for d in devices)


def multiworker(strategy: Any, resources: dict[str, Any]) -> int | None:
    """Workers per trial for ``distribution_strategy=MultiWorkerMirroredStrategy(...)``, else None.

    Each trial then runs on N Ray Train workers (:mod:`pipeline.distributed`), each
    building the model under a ``MultiWorkerMirroredStrategy`` of its own (Ray Train sets
    ``TF_CONFIG``). N is ``resources_per_trial["workers"]`` when given; else the number of
    workers (chief included) of the cluster the strategy was configured with (``TF_CONFIG``,
    read through ``strategy.cluster_resolver``); else 1. ``workers`` without this strategy
    is refused.
    """
    given = resources.get("workers")
    tf = sys.modules.get("tensorflow")  # no strategy can exist unless TensorFlow is imported
    if tf is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        if given is not None and given != 1:
            raise ValueError(
                "resources_per_trial: 'workers' is supported by this front door only with "
                "distribution_strategy=tf.distribute.MultiWorkerMirroredStrategy() (each trial "
                "then runs on that many Ray Train workers)")
        return None
    import keras

    if keras.backend.backend() != "tensorflow":
        raise ValueError("distribution_strategy: MultiWorkerMirroredStrategy needs the TensorFlow "
                         f"Keras backend; it is {keras.backend.backend()} (set KERAS_BACKEND=tensorflow)")
    if given is not None:
        return int(given)
    resolver = getattr(strategy, "cluster_resolver", None)
    cluster = resolver.cluster_spec().as_dict() if resolver is not None else {}
    return max(1, sum(len(cluster.get(job, ())) for job in ("chief", "worker")))


def check_multiworker(executions_per_trial: int, custom_fit: bool) -> None:
    """What KerasTuner does that multi-worker trials cannot: refused where the tuner is made."""
    if executions_per_trial > 1:
        raise ValueError("executions_per_trial > 1 is not supported with distribution_strategy="
                         "MultiWorkerMirroredStrategy (each trial is one Ray Train run); use 1")
    if custom_fit:
        raise ValueError("a HyperModel with its own fit is not supported with distribution_strategy="
                         "MultiWorkerMirroredStrategy (its model.fit would run without the data "
                         "sharding and reporting of the workers); put the fit arguments in search()")
