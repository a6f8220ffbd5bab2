"""KerasTuner's API on this pipeline: ``from pipeline.compat import keras_tuner as kt``.

The tuners take KerasTuner's constructor arguments (a build function or a
:class:`HyperModel`; ``objective`` as a name, :class:`Objective` or list;
``max_trials``, ``max_epochs``, ``factor``, ``hyperband_iterations``,
``executions_per_trial``, ``seed``, ``directory``, ``project_name``,
``overwrite``, ``max_retries_per_trial``, ``max_consecutive_failed_trials``,
``hyperparameters``, ``tune_new_entries``, ``allow_new_entries``,
``optimizer``/``loss``/``metrics``) plus the pipeline's own:

* ``searcher`` / ``searcher_options`` and ``scheduler`` / ``scheduler_options``
  (names from :mod:`searchers`, e.g. ``scheduler="asha"``);
* ``resources_per_trial`` (``{"cpu": 2, "gpu": 0.5}``), ``max_concurrent_trials``;
* ``address`` (join a Ray cluster) and ``storage`` (results folder or URI,
  instead of ``directory``).

``distribution_strategy``: a ``MirroredStrategy`` or ``OneDeviceStrategy`` is rebuilt in
each trial's worker over the devices Ray gives it (its GPU count becomes
``resources_per_trial["gpu"]`` unless given) and the model is built under its scope, as
KerasTuner does in its process. A ``MultiWorkerMirroredStrategy`` makes each trial a
data-parallel run of N Ray Train workers (:mod:`pipeline.distributed`), each holding
``resources_per_trial``'s ``cpu``/``gpu`` and building the model under a
``MultiWorkerMirroredStrategy`` of its own; N is ``resources_per_trial["workers"]``, else
the worker count of the cluster the strategy was configured with (``TF_CONFIG``), else 1.
The workers fit with the search's fit arguments, the data sharded across them
(``AutoShardPolicy.DATA``); ``batch_size`` stays the global batch, as for ``model.fit``
under any strategy; epochs reach Tune (rank 0's logs, averaged over the workers, and
``node_ids``) and checkpoints are kept as for a one-worker trial, so schedulers, results
and ``get_best_models`` work the same. Refused in that mode, where the tuner is made:
``executions_per_trial > 1`` and a ``HyperModel`` with its own ``fit``. Other strategies,
and ``resources_per_trial["workers"]`` without this one, are refused with an error
(never ignored).

Each tuner becomes a :class:`pipeline.spec.Spec`: the space is discovered by
building the model with a recording :class:`HyperParameters` (conditions kept),
the objective's direction is inferred as KerasTuner does, and

=======================  ==================  =============================================
KerasTuner               searcher            scheduler
=======================  ==================  =============================================
RandomSearch             optuna-random       fifo
GridSearch               grid (manual when   fifo
                         ``max_trials`` cuts
                         the grid short)
BayesianOptimization     gp (tpe when torch  fifo
                         is not installed)
Hyperband                optuna-random       asha with KerasTuner's brackets
                                             (``max_t=max_epochs``, ``reduction_factor=
                                             factor``); ``synchronous=True``: hyperband
=======================  ==================  =============================================

``search(x, y, ...)`` runs the trials through :func:`pipeline.runner.run` with a
trainable of this module, so user callbacks, a HyperModel's own ``fit`` and
``executions_per_trial`` behave as in KerasTuner. Results live in
``directory/project_name`` (a Tune experiment); ``overwrite=False`` reloads a
finished project instead of re-running it and resumes an unfinished one.

Differences from KerasTuner (by design):

* ``sampling="reverse_log"`` without a step is searched on a log scale;
* hyperparameters used only for values the discovery did not try get their
  default in a trial (KerasTuner would add them to the space then);
* a ``Tuner`` subclass's own ``run_trial`` runs in each Ray Tune trial, and also on the
  driver (two rows of data, models that do not train) while the space is discovered
  (:mod:`pipeline.compat._kt_run_trial`); not with ``Hyperband``;
* ``executions_per_trial > 1`` runs the executions one after another and reports
  their per-epoch mean afterwards (no early stopping inside such a trial;
  not combinable with pausing schedulers);
* inputs are NumPy arrays (or array-likes) or finite ``tf.data`` datasets of
  ``(x, y)`` batches, shipped to the trials once; Python generators and other
  inputs that cannot travel to the workers are refused with an error saying what
  to pass (:mod:`pipeline.compat._kt_data`).

As in KerasTuner, ``max_consecutive_failed_trials`` failures in a row stop the search
where they happen (``RuntimeError``), and a ``kt.errors.FatalError`` raised in a trial
stops it at once and comes out of ``search()`` (:mod:`pipeline.compat._kt_guard`).

This module is the door's public face; the parts live in private modules, as KerasTuner's
``engine/`` and ``tuners/``: :mod:`._kt_tuner` (the ``Tuner`` engine), :mod:`._kt_tuners`
(the algorithms), :mod:`._kt_space` (space discovery), :mod:`._kt_trial` (the trainable),
:mod:`._kt_project` (the project folder), :mod:`._kt_results` (best models, summaries,
``tuner.oracle``), :mod:`._kt_oracle`, :mod:`._kt_objective`, :mod:`._kt_hypermodel`,
:mod:`._kt_strategy`, :mod:`._kt_data`, :mod:`._kt_run_trial`, :mod:`._kt_guard`.
"""


from __future__ import annotations

import types
from typing import Any

from cluster.connect import EarlyStart
from pipeline.compat import _kt_errors as errors  # kt.errors.FailedTrialError, FatalError...
from pipeline.compat._hyperparameters import (
    Boolean,
    Choice,
    Fixed,
    Float,
    HyperParameter,
    HyperParameters,
    Int,
    deserialize,
    serialize,
)
from pipeline.compat._kt_hypermodel import HyperModel
from pipeline.compat._kt_objective import Objective
from pipeline.compat._kt_oracle import (
    BayesianOptimizationOracle,
    GridSearchOracle,
    HyperbandOracle,
    Oracle,
    RandomSearchOracle,
)
from pipeline.compat._kt_tuner import Tuner
from pipeline.compat._kt_tuners import BayesianOptimization, GridSearch, Hyperband, RandomSearch

__all__ = [
    "HyperParameters", "HyperModel", "Objective", "Tuner", "RandomSearch", "GridSearch",
    "BayesianOptimization", "Hyperband", "errors",
    "HyperParameter", "Int", "Float", "Choice", "Boolean", "Fixed", "serialize", "deserialize",
    "Oracle", "oracles", "tuners", "BaseTuner", "engine",
]

# KerasTuner's BaseTuner (an oracle and a run_trial of one's own, no model needed) is, here,
# the Tuner itself: a Tuner subclass overriding run_trial may leave hypermodel out.
BaseTuner = Tuner

# KerasTuner's namespaces: kt.oracles.RandomSearchOracle, kt.tuners.RandomSearch, ...
oracles = types.SimpleNamespace(
    RandomSearchOracle=RandomSearchOracle, GridSearchOracle=GridSearchOracle,
    BayesianOptimizationOracle=BayesianOptimizationOracle, HyperbandOracle=HyperbandOracle)
tuners = types.SimpleNamespace(Tuner=Tuner, BaseTuner=BaseTuner, RandomSearch=RandomSearch,
                               GridSearch=GridSearch,
                               BayesianOptimization=BayesianOptimization, Hyperband=Hyperband)

# KerasTuner's public names this front door does not provide, and why (module __getattr__:
# they raise an AttributeError that says so, not a bare "no attribute").
_NOT_PROVIDED = {
    "synchronized": "KerasTuner's oracle-internal decorator is not provided: this front door's "
                    "oracle drives no trials (Ray Tune's searchers choose them)",
    "SklearnTuner": "KerasTuner's scikit-learn tuner is not provided: this door tunes Keras models; "
                    "tune a scikit-learn model with the Optuna door (from pipeline.compat import "
                    "optuna), whose objective may be any Python function",
}

# KerasTuner's older module paths: kt.engine.hyperparameters.HyperParameters, kt.engine.tuner.Tuner...
engine = types.SimpleNamespace(
    hyperparameters=types.SimpleNamespace(
        HyperParameters=HyperParameters, HyperParameter=HyperParameter, Int=Int, Float=Float,
        Choice=Choice, Boolean=Boolean, Fixed=Fixed),
    hypermodel=types.SimpleNamespace(HyperModel=HyperModel),
    objective=types.SimpleNamespace(Objective=Objective),
    oracle=types.SimpleNamespace(Oracle=Oracle, Objective=Objective),
    tuner=types.SimpleNamespace(Tuner=Tuner),
    base_tuner=types.SimpleNamespace(BaseTuner=BaseTuner))


def _applications() -> Any:
    """KerasTuner's own application hypermodels (HyperResNet, HyperXception, HyperEfficientNet,
    HyperImageAugment): they build with this door's ``hp``, and its tuners take them."""
    try:
        import keras_tuner
    except ImportError:
        raise AttributeError(
            "keras_tuner.applications: KerasTuner's application hypermodels (HyperResNet, "
            "HyperXception, HyperEfficientNet, HyperImageAugment) are KerasTuner's own: "
            "pip install keras-tuner, and this door's tuners take them") from None
    return keras_tuner.applications


def __getattr__(name: str) -> Any:
    if name == "applications":
        return _applications()
    if name in _NOT_PROVIDED:
        raise AttributeError(f"keras_tuner.{name}: {_NOT_PROVIDED[name]} "
                             "(README: Coming from KerasTuner or Optuna)")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# A script importing this door starts Ray now, while it goes on to import Keras and make
# its data; the tuner takes that start over (cluster.connect.EarlyStart).
EarlyStart.at_import(warm_env=True)
