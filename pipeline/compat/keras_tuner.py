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
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import inspect
import logging
import math
import os
import random
import shutil
import types
import weakref
from typing import Any, Callable

import numpy as np

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
    discover,
    serialize,
    to_space,
)
from pipeline.compat._kt_data import read_fit_data
from pipeline.compat._kt_objective import (
    MultiObjective,
    Objective,
    _as_objective,
    _objectives,
)
from pipeline.compat._kt_oracle import (
    BayesianOptimizationOracle,
    GridSearchOracle,
    HyperbandOracle,
    Oracle,
    RandomSearchOracle,
    custom_driving,
)
from pipeline.compat._kt_run_trial import _DryModel
from pipeline.compat._kt_trial import MULTI_OBJECTIVE, _Job, _trial, not_a_model, worker_trial
from pipeline.data import Dataset
from pipeline.results import Results
from pipeline.spec import Spec, parse_spec
from pipeline.storage import SPEC_FILE, Location, locate

__all__ = [
    "HyperParameters", "HyperModel", "Objective", "Tuner", "RandomSearch", "GridSearch",
    "BayesianOptimization", "Hyperband", "errors",
    "HyperParameter", "Int", "Float", "Choice", "Boolean", "Fixed", "serialize", "deserialize",
    "Oracle", "oracles", "tuners", "BaseTuner",
]

log = logging.getLogger(__name__)

# -- hypermodels ------------------------------------------------------------------------------


class HyperModel:
    """Subclass and define ``build(hp)``; optionally ``fit(hp, model, *args, **kwargs)``."""

    def __init__(self, name: str | None = None, tunable: bool = True):
        self.name, self.tunable = name, tunable

    def build(self, hp: HyperParameters):
        raise NotImplementedError

    def declare_hyperparameters(self, hp: HyperParameters) -> None:
        self.build(hp)

    def fit(self, hp: HyperParameters, model, *args, **kwargs):
        return model.fit(*args, **kwargs)


def _mirrored_gpus(strategy: Any) -> int | None:
    """``distribution_strategy=`` as the trials take it: None (none, or multi-worker), else
    GPUs per trial.

    KerasTuner builds and fits every trial under the strategy, in its one process. A
    ``MirroredStrategy`` (or ``OneDeviceStrategy``) is rebuilt inside each trial's worker
    over the devices Ray gives it, and the model is built under its scope: a strategy
    over N GPUs asks ``resources_per_trial={"gpu": N}`` unless given, one over the CPU
    asks none (0). A ``MultiWorkerMirroredStrategy`` is :func:`_multiworker`'s; other
    strategies are refused.
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


def _multiworker(strategy: Any, resources: dict[str, Any]) -> int | None:
    """Workers per trial for ``distribution_strategy=MultiWorkerMirroredStrategy(...)``, else None.

    Each trial then runs on N Ray Train workers (:mod:`pipeline.distributed`), each
    building the model under a ``MultiWorkerMirroredStrategy`` of its own (Ray Train sets
    ``TF_CONFIG``). N is ``resources_per_trial["workers"]`` when given; else the number of
    workers (chief included) of the cluster the strategy was configured with (``TF_CONFIG``,
    read through ``strategy.cluster_resolver``); else 1. ``workers`` without this strategy
    is refused.
    """
    import sys

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


def _check_multiworker(tuner: "Tuner") -> None:
    """What KerasTuner does that multi-worker trials cannot: refused where the tuner is made."""
    if tuner.executions_per_trial > 1:
        raise ValueError("executions_per_trial > 1 is not supported with distribution_strategy="
                         "MultiWorkerMirroredStrategy (each trial is one Ray Train run); use 1")
    if tuner._custom_fit():
        raise ValueError("a HyperModel with its own fit is not supported with distribution_strategy="
                         "MultiWorkerMirroredStrategy (its model.fit would run without the data "
                         "sharding and reporting of the workers); put the fit arguments in search()")


class DefaultHyperModel(HyperModel):
    """A build function as a HyperModel (KerasTuner's name for it: ``tuner.hypermodel``)."""

    def __init__(self, build_fn: Callable[[HyperParameters], Any]):
        super().__init__(getattr(build_fn, "__name__", None))
        self.build_fn = build_fn

    def build(self, hp: HyperParameters):
        return self.build_fn(hp)


def _head(data: Dataset, n: int) -> Dataset:
    """The first ``n`` rows of each split (a dry run's data)."""
    return Dataset(data.x_train[:n], data.y_train[:n], data.x_val[:n], data.y_val[:n],
                   data.x_test[:0], data.y_test[:0], data.num_classes)


def _has_custom_fit(hypermodel: HyperModel) -> bool:
    return type(hypermodel).fit is not HyperModel.fit


# -- tuners -----------------------------------------------------------------------------------

# search() without data, for a HyperModel whose own fit finds it: no rows travel to the trials
_NO_DATA = Dataset(*(np.zeros((0, 1), np.float32), np.zeros((0,), np.int64)) * 3, num_classes=1)
_IGNORED = {"logger", "tuner_id", "cleanup"}
_ORACLE = (
    "Expected `oracle` argument to be an instance of `Oracle`, got {!r}: one of "
    "kt.oracles.RandomSearchOracle, GridSearchOracle, BayesianOptimizationOracle or "
    "HyperbandOracle (the trials run on Ray Tune's searcher for it; another one may be picked "
    "with searcher=...)")
_OWN_ORACLE = ("{} makes its own oracle (KerasTuner: multiple values for argument 'oracle'); "
               "pass an oracle to kt.Tuner(oracle=..., hypermodel=...) instead")
_CUSTOM_ORACLE = (
    "{name} overrides {methods} of KerasTuner's Oracle: a custom oracle cannot drive this front "
    "door's trials (they are sampled by a searcher on Ray Tune, in other processes). Pass one of "
    "kt.oracles.RandomSearchOracle, GridSearchOracle, BayesianOptimizationOracle or "
    "HyperbandOracle, or pick a Ray Tune searcher with searcher=...")
_RUN_TRIAL = (
    "Tuner.run_trial is not called directly on this front door: search() runs each trial as a "
    "Ray Tune trial (a subclass's own run_trial runs there, pipeline.compat._kt_run_trial)")
_HYPERBAND_RUN_TRIAL = (
    "a run_trial override is not supported with Hyperband on this front door: its brackets set "
    "each trial's epochs and stop trials between epochs, which a run_trial reporting once cannot "
    "follow; use RandomSearch, GridSearch or BayesianOptimization (or a HyperModel.fit)")
_TERMINAL = {"TERMINATED", "ERROR"}
# searchers that one tuner may store under either name: GridSearch cut short by max_trials
# runs "manual"; BayesianOptimization runs "tpe" where PyTorch is missing
_FAMILY = {"manual": "grid", "tpe": "gp"}


def _hyperband_brackets(max_epochs: int, factor: int) -> int:
    """KerasTuner's number of Hyperband brackets: how often ``factor`` divides ``max_epochs``
    before the budget falls below one epoch."""
    brackets, epochs = 0, float(max_epochs)
    while epochs >= 1:
        epochs /= factor
        brackets += 1
    return brackets


def _hyperband_trials(max_epochs: int, factor: int, iterations: int) -> int:
    """Configurations KerasTuner's Hyperband tries: the first round of every bracket."""
    brackets = _hyperband_brackets(max_epochs, factor)
    end0 = math.ceil(1 + math.log(max_epochs, factor))
    per_iteration = sum(math.ceil(end0 / (b + 1) * factor ** b) for b in range(brackets))
    return max(1, per_iteration * max(1, iterations))


# The Ray start of each tuner made and not searched yet (by id: the tuner, weakly; its start).
_UNSEARCHED: dict[int, tuple[Any, EarlyStart]] = {}


def _claim_start(tuner: "Tuner", warm: tuple[int, float] | None) -> EarlyStart:
    """The early Ray start for a new tuner: the one of a tuner made before and not searched
    (still starting Ray, perhaps) when it joins the same cluster, taken over; else a new one.
    Two starts under way at once would both call ``ray.init`` (a script or notebook making
    a second tuner before searching the first: "ray.init twice" in its ``search()``)."""
    for key, (ref, early) in list(_UNSEARCHED.items()):
        old = ref()
        if old is not None and old._early is not early:
            del _UNSEARCHED[key]  # searched meanwhile
            continue
        if early.owned and early.address == tuner.address:
            del _UNSEARCHED[key]
            if old is not None:
                old._early = None  # its search, if any, joins the running Ray
            early.warm = warm
            _UNSEARCHED[id(tuner)] = (weakref.ref(tuner), early)
            return early
    early = EarlyStart.claim(tuner.address, warm)
    _UNSEARCHED[id(tuner)] = (weakref.ref(tuner), early)
    return early


def _check_oracle(oracle: Any) -> None:
    """An ``oracle=`` this front door can search as KerasTuner would, else an error."""
    if not isinstance(oracle, Oracle):
        raise ValueError(_ORACLE.format(oracle))
    custom = custom_driving(oracle)
    if custom:
        raise NotImplementedError(_CUSTOM_ORACLE.format(name=type(oracle).__name__,
                                                        methods=", ".join(custom)))
    if not any(cls in _TUNER_OF for cls in type(oracle).__mro__):
        raise NotImplementedError(
            f"{type(oracle).__name__} samples no trials of its own (KerasTuner's base Oracle: its "
            "populate_space is abstract): pass one of kt.oracles.RandomSearchOracle, "
            "GridSearchOracle, BayesianOptimizationOracle or HyperbandOracle")


def _tuner_of(oracle: Oracle) -> "type[Tuner]":
    """The tuner class whose search an oracle of this class stands for."""
    return next(_TUNER_OF[cls] for cls in type(oracle).__mro__ if cls in _TUNER_OF)


def _exhaustive(tuner: "Tuner", space: dict) -> list[dict[str, Any]] | None:
    """Every configuration of a finite space, in an order drawn from the seed, when there are
    no more than ``max_trials`` of them (else None): KerasTuner's random and Bayesian searches
    never try a configuration twice and end when none is left, so they try each once."""
    if tuner.searcher != tuner._algo._searcher and not (tuner.searcher == "tpe"
                                                        and tuner._algo._searcher == "gp"):
        return None  # a searcher the user chose searches as it does
    finite = all(p["type"] in ("fixed", "bool", "choice", "int")
                 or (p["type"] == "float" and p.get("step")) for p in space.values())
    if not finite or not tuner.max_trials:
        return None
    from pipeline.space import SearchSpace

    grid = SearchSpace.from_dict(space).grid()
    if len(grid) > tuner.max_trials:
        return None
    random.Random(tuner.seed).shuffle(grid)
    return grid


class Tuner:
    """The common base of the tuners (KerasTuner's ``Tuner``), run on Ray Tune.

    As in KerasTuner, ``Tuner(oracle=kt.oracles.RandomSearchOracle(...), hypermodel=...)``
    searches with the oracle's algorithm and arguments (objective, max_trials, seed,
    hyperparameters, ...); without an oracle it searches at random.
    """

    _searcher = "optuna-random"
    _scheduler = "fifo"
    _oracle_class: type[Oracle] = RandomSearchOracle
    # set by the algorithm's _setup (BayesianOptimization's, Hyperband's)
    num_initial_points: int | None
    max_epochs: int
    factor: int
    hyperband_iterations: int

    def __init__(self, hypermodel=None, objective=None, max_trials: int | None = 10,
                 executions_per_trial: int = 1, max_retries_per_trial: int = 0,
                 max_consecutive_failed_trials: int = 3, seed: int | None = None,
                 hyperparameters: HyperParameters | None = None, tune_new_entries: bool = True,
                 allow_new_entries: bool = True, directory: str | None = None,
                 project_name: str | None = None, overwrite: bool = False,
                 optimizer=None, loss=None, metrics=None,
                 searcher: str | None = None, searcher_options: dict | None = None,
                 scheduler: str | None = None, scheduler_options: dict | None = None,
                 resources_per_trial: dict | None = None, max_concurrent_trials: int | None = None,
                 address: str | None = None, storage: str | None = None,
                 distribution_strategy=None, **kwargs):
        self.mirrored_gpus = _mirrored_gpus(distribution_strategy)
        if self.mirrored_gpus and "gpu" not in (resources_per_trial or {}):
            resources_per_trial = {**(resources_per_trial or {}), "gpu": self.mirrored_gpus}
        self.workers = _multiworker(distribution_strategy, resources_per_trial or {})
        if self.workers is not None:
            resources_per_trial = {**(resources_per_trial or {}), "workers": self.workers}
        self._own_run_trial = type(self).run_trial is not Tuner.run_trial
        oracle = kwargs.pop("oracle", None)
        if oracle is None and isinstance(hypermodel, Oracle):  # KerasTuner's order: Tuner(oracle, hypermodel)
            oracle, hypermodel, objective = hypermodel, objective, None
        if oracle is None:
            oracle = self._oracle_class(objective=objective, max_trials=max_trials, seed=seed,
                                        hyperparameters=hyperparameters,
                                        allow_new_entries=allow_new_entries,
                                        tune_new_entries=tune_new_entries,
                                        max_retries_per_trial=max_retries_per_trial,
                                        max_consecutive_failed_trials=max_consecutive_failed_trials)
        else:  # the search it stands for, with its arguments (never ignored)
            _check_oracle(oracle)
            objective, max_trials, seed = oracle.objective_arg, oracle.max_trials, oracle.seed
            hyperparameters = oracle.declared
            allow_new_entries, tune_new_entries = oracle.allow_new_entries, oracle.tune_new_entries
            max_retries_per_trial = oracle.max_retries_per_trial
            max_consecutive_failed_trials = oracle.max_consecutive_failed_trials
        self._oracle: Oracle = oracle
        self._algo: type[Tuner] = _tuner_of(oracle)
        # KerasTuner's cap on a model's trainable parameters: a bigger one fails its trial
        self.max_model_size: int | None = kwargs.pop("max_model_size", None)
        unknown = set(kwargs) - _IGNORED
        if unknown:
            raise TypeError(f"unexpected keyword arguments: {', '.join(sorted(unknown))}")
        for key in kwargs:
            log.warning("%s=%r is not used by this front door", key, kwargs[key])
        if self._own_run_trial and issubclass(self._algo, Hyperband):
            raise NotImplementedError(_HYPERBAND_RUN_TRIAL)
        if hypermodel is None and not self._own_run_trial:
            raise ValueError("Received `hypermodel=None`. We only allow not specifying "
                             "`hypermodel` if the user defines the search space in "
                             "`Tuner.run_trial()` by creating a custom `Tuner` class and "
                             "override `Tuner.run_trial()`.")
        self.hypermodel: HyperModel | None
        if hypermodel is None:  # the run_trial override declares the space and trains
            self.hypermodel = None
        elif isinstance(hypermodel, HyperModel):
            self.hypermodel = hypermodel
        elif callable(hypermodel):
            self.hypermodel = DefaultHyperModel(hypermodel)
        else:  # KerasTuner's error type
            raise errors.FatalValueError(
                "The `hypermodel` argument should be either a build function (hp -> compiled "
                f"Keras model) or an instance of `HyperModel`; got {hypermodel!r}")
        _objectives(objective, True)  # an unknown metric's direction: refused here, as KerasTuner
        self.objective = objective
        self.max_trials = max_trials
        self.executions_per_trial = int(executions_per_trial)
        self.max_retries_per_trial = int(max_retries_per_trial)
        self.max_consecutive_failed_trials = max_consecutive_failed_trials
        self.seed = random.randint(1, 10 ** 6) if seed is None else int(seed)
        self.tune_new_entries, self.allow_new_entries = tune_new_entries, allow_new_entries
        self._declared = hyperparameters
        self.directory = directory or "."  # as given (a str or a pathlib.Path), as KerasTuner
        self.project_name = project_name or "untitled_project"
        self.overwrite = overwrite
        self.optimizer, self.loss, self.metrics = optimizer, loss, metrics
        self.compile_kwargs = {k: v for k, v in (("optimizer", optimizer), ("loss", loss),
                                                 ("metrics", metrics)) if v is not None}
        if self.compile_kwargs and "optimizer" not in self.compile_kwargs:
            raise ValueError("pass `optimizer` together with `loss`/`metrics` "
                             "(the tuner compiles the model)")
        self.searcher = searcher or self._algo._searcher
        self.searcher_options = dict(searcher_options or {})
        self.scheduler = scheduler or self._algo._scheduler
        self.scheduler_options = dict(scheduler_options or {})
        self.resources = {"cpu": 1, "gpu": 0, **(resources_per_trial or {})}
        self.max_concurrent_trials = max_concurrent_trials
        self.address = address
        self.storage = os.fspath(storage or self.directory)
        self.notes: list[str] = []
        self._results: Results | None = None
        self._algo._setup(self)
        if self.workers is not None:
            _check_multiworker(self)
        self._defs = self._discover()
        self._reload()
        self._early = None
        if not self._finished():  # Ray starts while the script prepares its data
            # the first trials' workers start and import TensorFlow meanwhile (cluster.prewarm);
            # not for Ray Train's workers (multi-worker trials), which Train starts itself
            at_once = min(n for n in (self.max_trials, self.max_concurrent_trials, 10**6) if n)
            warm = None if self.workers is not None else (at_once, float(self.resources["cpu"]))
            self._early = _claim_start(self, warm)

    # -- space ----------------------------------------------------------------------------

    def _discover(self, extra: Callable[[HyperParameters], Any] | None = None,
                  sample: np.ndarray | None = None) -> dict[str, HyperParameter]:
        """The search space: every hyperparameter the build (and ``extra``) declares. A model
        the build leaves unbuilt (a subclassed model, a Sequential without ``Input``) may
        declare more when it is first called (in ``call``, a ``Lambda``): with ``sample``
        (two rows of the search's data) each such model is called on it too."""
        import keras

        not_model: list[str] = []
        self._lazy_models = False

        def build(hp):
            # no full garbage collection per build: with Keras, TensorFlow and Ray loaded
            # in the driver each took 0.5-0.8 s (3 per tuner), where KerasTuner's takes none
            keras.backend.clear_session(free_memory=False)
            if self.hypermodel is not None:
                model = self.hypermodel.build(hp)
                if not isinstance(model, keras.Model) and len(not_model) < 1:
                    not_model.append(not_a_model(model))
                elif not model.built:
                    self._lazy_models = True
                    if sample is not None:
                        try:
                            model(sample)
                        except Exception as exc:  # noqa: BLE001 - the trial raises it, if real
                            log.debug("search-space discovery: calling the model stopped: %s", exc)
            if extra is not None:
                extra(hp)

        defs = discover(build, self._declared)
        if self._declared is not None:
            new = [n for n in defs if n not in self._declared._defs]
            if new and not self.allow_new_entries:
                raise RuntimeError(f"`allow_new_entries` is `False`, but the build function uses "
                                   f"hyperparameters not in `hyperparameters`: {new}")
        keras.backend.clear_session(free_memory=False)
        self._not_a_model = not_model[0] if not_model else None  # search() raises it
        return defs

    def _fixed_names(self) -> list[str]:
        if self._declared is None or self.tune_new_entries:
            return []
        return [n for n in self._defs if n not in self._declared._defs]

    def _space(self) -> dict[str, dict[str, Any]]:
        space, notes = to_space(self._defs, grid=self.searcher in ("grid", "manual"),
                                fixed=self._fixed_names())
        for note in notes:
            if note not in self.notes:
                log.warning(note)
                self.notes.append(note)
        return space or {"__default__": {"type": "fixed", "value": 0}}

    def search_space_summary(self, extended: bool = False) -> None:
        print("Search space summary")
        print(f"Default search space size: {len(self._defs)}")
        for name, d in self._defs.items():
            print(f"{name} ({_KT_NAMES[str(d.kind)]})")
            print({k: v for k, v in d.get_config().items() if k != "name"})  # as KerasTuner prints it

    # -- spec -----------------------------------------------------------------------------

    # What each search algorithm (RandomSearch, GridSearch, ...) decides, for a tuner whose
    # oracle is of that algorithm (kt.Tuner(oracle=kt.oracles.GridSearchOracle(...)) as well).

    @staticmethod
    def _setup(tuner: "Tuner") -> None:
        """Algorithm-specific settings, once the tuner's arguments are stored."""

    @staticmethod
    def _plan_trials(tuner: "Tuner") -> int | None:
        return tuner.max_trials

    @staticmethod
    def _plan_searcher(tuner: "Tuner", space: dict) -> dict[str, Any]:
        every = _exhaustive(tuner, space)
        if every is not None:
            return {"name": "manual", "points_to_evaluate": every}
        return {"name": tuner.searcher, "options": tuner.searcher_options}

    @staticmethod
    def _plan_epochs(tuner: "Tuner", epochs: int | None) -> int:
        return int(epochs or 1)

    def _trials(self) -> int | None:
        return self._algo._plan_trials(self)

    def _searcher_spec(self, space: dict) -> dict[str, Any]:
        return self._algo._plan_searcher(self, space)

    def _scheduler_spec(self) -> dict[str, Any]:
        return {"name": self.scheduler, "options": self.scheduler_options}

    def _epochs(self, epochs: int | None) -> int:
        return self._algo._plan_epochs(self, epochs)

    def build_spec(self, epochs: int | None = 1, batch_size: int | None = None, verbose: int = 0,
                   has_validation: bool = True) -> Spec:
        """The pipeline spec this tuner runs (also handy to save as YAML)."""
        objectives = _objectives(self.objective, has_validation)
        if len(objectives) > 1:
            metric, mode = MULTI_OBJECTIVE, "min"
        else:
            metric, mode = objectives[0].name, objectives[0].direction
        space = self._space()
        raw: dict[str, Any] = {
            "name": self.project_name,
            "data": {"source": "external"},  # arrays passed from Python
            "space": space,
            "training": {"epochs": self._epochs(epochs), "batch_size": int(batch_size or 32),
                         "verbose": 2 if verbose == 2 else 0},
            "objective": {"metric": metric, "mode": mode},
            "searcher": self._searcher_spec(space),
            "scheduler": self._scheduler_spec(),
            "resources": self.resources,
            "search": {"trials": self._trials()} | (
                {"max_concurrent": self.max_concurrent_trials} if self.max_concurrent_trials else {}),
            "storage": {"path": self.storage},
            "failure": {"max_failures": self.max_retries_per_trial},
            "seed": self.seed,
        }
        if raw["search"]["trials"] is None:
            del raw["search"]["trials"]
        return parse_spec(raw, source=f"{type(self).__name__}")

    # -- storage ----------------------------------------------------------------------------

    @property
    def project_dir(self) -> str:
        return self._where().path

    def _where(self) -> Location:
        return locate(self.storage, self.project_name)

    def _is_ours(self, where: Location) -> bool:
        import pyarrow.fs as pafs

        fs = where.fs or pafs.LocalFileSystem()
        return fs.get_file_info(f"{where.path}/{SPEC_FILE}").type == pafs.FileType.File

    def _reload(self) -> None:
        where = self._where()
        if not where.exists():
            return
        if self.overwrite:
            self._delete(where)
            return
        if not self._is_ours(where):
            raise FileExistsError(f"{where.path} exists but holds no pipeline experiment "
                                  "(a KerasTuner project?); pass overwrite=True or another project_name")
        self._results = Results(where)
        stored = self._results.spec
        was = (_FAMILY.get(stored.searcher.name, stored.searcher.name), stored.scheduler.name)
        planned = self._searcher_spec(self._space())["name"]  # "manual" for an exhausted space
        now = {(_FAMILY.get(n, n), self.scheduler) for n in (self.searcher, planned)}
        if was not in now:
            # KerasTuner cannot reload another tuner's oracle either
            raise RuntimeError(
                f"Error reloading the existing project {where.path}: it was searched with "
                f"searcher {stored.searcher.name!r} and scheduler {stored.scheduler.name!r}, this "
                f"{type(self).__name__} uses {self.searcher!r} and {self.scheduler!r}. Change the "
                "`project_name` or pass `overwrite=True` to start it again")

    def reload(self) -> None:
        """KerasTuner's ``reload()``: read the project's stored trials (``directory/project_name``)
        again, e.g. after another tuner searched it."""
        where = self._where()
        if where.exists() and self._is_ours(where):
            self._results = Results(where)

    def _delete(self, where: Location) -> None:
        import pyarrow.fs as pafs

        fs = where.fs or pafs.LocalFileSystem()
        entries = fs.get_file_info(pafs.FileSelector(where.path))
        names = {e.base_name for e in entries}
        if names and not (SPEC_FILE in names or "oracle.json" in names):
            raise FileExistsError(f"refusing to overwrite {where.path}: it is neither a pipeline "
                                  "experiment nor a KerasTuner project")
        if where.fs is None:
            shutil.rmtree(where.path)
        else:
            fs.delete_dir(where.path)

    def _finished(self) -> bool:
        if self._results is None:
            return False
        try:
            df = self._results.dataframe()
            total = self._results.spec.num_trials
        except Exception:  # noqa: BLE001 - no experiment state yet: not finished
            return False
        return len(df) >= total and bool(df["status"].isin(_TERMINAL).all())

    # -- search ---------------------------------------------------------------------------

    def search(self, *fit_args, **fit_kwargs) -> None:
        """Run the search; arguments as for ``model.fit`` (x, y, epochs, validation_*, callbacks...)."""
        import keras
        from ray import tune

        from cluster.connect import ray_session
        from pipeline.compat._kt_guard import SearchGuard
        from pipeline.portable import check_portable
        from pipeline.runner import effective_spec, run

        bound = inspect.signature(keras.Model.fit).bind(None, *fit_args, **fit_kwargs)
        given = set(bound.arguments) | set(bound.arguments.get("kwargs", {}))
        args = dict(bound.arguments)
        args.pop("self", None)
        args.update(args.pop("kwargs", {}))
        x, y = args.pop("x", None), args.pop("y", None)
        validation_data = args.pop("validation_data", None)
        validation_split = args.pop("validation_split", None)
        callbacks = list(args.pop("callbacks", None) or [])
        verbose = args.pop("verbose", 1)
        epochs = args.get("epochs")
        try:  # each execution of a trial gets its own copy, as in KerasTuner
            copy.deepcopy(callbacks)
        except Exception as exc:  # noqa: BLE001 - whatever deepcopy raises
            raise errors.FatalValueError(
                "All callbacks used during a search should be deep-copyable (each execution of "
                f"a trial gets its own copy); {exc!r}") from exc
        if self._not_a_model:  # KerasTuner's first trial stops the search there
            raise errors.FatalTypeError(self._not_a_model)
        if "sample_weight" in args:
            raise TypeError("sample_weight is not supported by this front door")
        # a HyperModel or run_trial whose own fit finds its data, or a model whose fit needs
        # none: KerasTuner allows search() without data (the fit gets what search() got)
        no_data = x is None and y is None and validation_data is None
        if no_data:
            data, dataset_batch = _NO_DATA, None
        else:
            data, dataset_batch = read_fit_data(x, y, validation_data, validation_split)
        if dataset_batch is not None:
            if args.get("batch_size") is not None:
                raise ValueError("batch_size must not be given with a tf.data dataset (it is batched)")
            if not self._custom_fit():
                args["batch_size"] = dataset_batch
            if verbose:
                print(f"search(): the tf.data dataset was read once into {len(data.x_train)} rows "
                      f"(batches of {dataset_batch}) and is shipped to the trials; its maps and "
                      "shuffles ran once here, not every epoch (trials reshuffle the rows each epoch)")

        if self._finished():
            print(f"Reloading results from {self.results.where.path}: the search has finished")
            return
        if self._own_run_trial:
            from pipeline.compat._kt_run_trial import dry_run_trial

            self._defs = self._discover(extra=dry_run_trial(self, self._trial_kwargs(
                _head(data, 2), args, callbacks, epochs, dataset_batch, no_data, given, dry=True)))
        elif self._custom_fit() and (x is not None or no_data):
            self._defs = self._discover(extra=self._dry_fit(data, args, dataset_batch, no_data),
                                        sample=None if no_data else data.x_train[:2])
        elif self._lazy_models and not no_data:
            self._defs = self._discover(sample=data.x_train[:2])
        spec = self.build_spec(epochs, args.get("batch_size"), verbose if verbose != "auto" else 1,
                               has_validation=len(data.x_val) > 0)
        if self.executions_per_trial > 1:
            from searchers import SCHEDULERS

            if SCHEDULERS[spec.scheduler.name].needs_checkpoints:
                raise ValueError(f"executions_per_trial > 1 cannot be combined with the "
                                 f"'{spec.scheduler.name}' scheduler")
        fit_kwargs_out = {k: v for k, v in args.items() if k != "epochs"}
        if self._custom_fit() and "verbose" in fit_kwargs:
            fit_kwargs_out["verbose"] = spec.training.verbose
        objectives = _objectives(self.objective, len(data.x_val) > 0)
        job = _Job(
            hypermodel=self.hypermodel, defs=list(self._defs.values()),
            objectives=[(o.name, o.direction) for o in objectives], callbacks=callbacks,
            fit_kwargs=fit_kwargs_out, executions=self.executions_per_trial,
            compile_kwargs=self.compile_kwargs, custom_fit=self._custom_fit(),
            pass_epochs=epochs is not None or issubclass(self._algo, Hyperband),
            dataset_batch=dataset_batch, mirrored=self.mirrored_gpus is not None, no_data=no_data,
            cwd=os.getcwd(), objective_given=self.objective is not None,
            max_model_size=self.max_model_size,
        )
        if self._own_run_trial:
            from pipeline.compat._kt_run_trial import shipped_tuner

            job.tuner = shipped_tuner(self)
            job.trial_kwargs = self._trial_kwargs(None, args, callbacks, epochs, dataset_batch,
                                                  no_data, given)
        resume = self._results is not None
        check_portable({**self._shipped_hypermodel(), **({"tuner": job.tuner} if job.tuner else {}),
                        "callbacks": callbacks,
                        "fit arguments": fit_kwargs_out, "compile arguments": self.compile_kwargs})
        early, self._early = self._early, None
        _UNSEARCHED.pop(id(self), None)
        guard = SearchGuard(self.max_consecutive_failed_trials)
        with ray_session(self.address, early=early):
            if self.workers is not None:  # each trial: Ray Train workers under their own strategy
                door: dict[str, Any] = {"data": data, "worker_body": functools.partial(worker_trial, job)}
            else:
                door = {"trainable": tune.with_parameters(_trial, data=data.for_trials(),
                                                          spec=effective_spec(spec), job=job)}
            results = run(spec, address=self.address, resume=resume, progress=bool(verbose),
                          callbacks=[guard], stop=guard.stopper, **door)
        self._results = Results(results.where)
        if guard.fatal is not None:  # a trial raised kt.errors.FatalError: the search stopped
            raise guard.fatal
        if guard.too_many is not None:  # the search stopped there, as KerasTuner's does
            raise RuntimeError(f"Number of consecutive failures exceeded the limit of "
                               f"{self.max_consecutive_failed_trials}.\n{guard.too_many}")
        self._check_failures()

    def run_trial(self, trial, *args, **kwargs):
        """KerasTuner's hook for a custom trial: override it in a subclass (it then runs in each
        Ray Tune trial, :mod:`pipeline.compat._kt_run_trial`); not called directly here."""
        raise NotImplementedError(_RUN_TRIAL)

    def _trial_kwargs(self, data: Dataset | None, args: dict[str, Any], callbacks: list,
                      epochs: int | None, dataset_batch: int | None, no_data: bool,
                      given: set[str], dry: bool = False) -> dict[str, Any]:
        """The fit arguments a run_trial override gets, as given to search() (``data`` None:
        the trial adds its copy of the data; ``dry``: no user callbacks)."""
        from pipeline.compat._kt_run_trial import fit_keywords

        out = {k: v for k, v in args.items() if k in given and k != "epochs"}
        if "callbacks" in given:
            out["callbacks"] = [] if dry else callbacks
        if epochs is not None:
            out["epochs"] = epochs
        return out if data is None else fit_keywords(data, out, dataset_batch, no_data)

    def _custom_fit(self) -> bool:
        return self.hypermodel is not None and _has_custom_fit(self.hypermodel)

    def _shipped_hypermodel(self) -> dict[str, Any]:
        """The hypermodel as the user knows it, for errors naming what cannot travel to Ray."""
        if self.hypermodel is None:
            return {}
        if isinstance(self.hypermodel, DefaultHyperModel):
            fn = self.hypermodel.build_fn
            return {f"build function {getattr(fn, '__name__', fn)!s}": fn}
        return {"hypermodel": self.hypermodel}

    def _dry_fit(self, data: Dataset, args: dict[str, Any], dataset_batch: int | None = None,
                 no_data: bool = False):
        """Call the HyperModel's fit with a model whose training does nothing, to record
        hyperparameters that ``fit`` declares (``batch_size`` and the like); data as the
        user passed it (two rows of arrays, or a two-row tf.data dataset)."""
        hypermodel = self.hypermodel

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

    def _check_failures(self) -> None:
        limit = self.max_consecutive_failed_trials
        if not limit or self._results is None:
            return
        df = self._results.dataframe()
        run_length, last_error = 0, None
        for status, error in zip(df["status"], df["error"]):
            run_length = run_length + 1 if status == "ERROR" else 0
            last_error = error if status == "ERROR" else last_error
            if run_length >= limit:
                raise RuntimeError(f"Number of consecutive failures exceeded the limit of {limit}.\n"
                                   f"{last_error}")

    # -- results ----------------------------------------------------------------------------

    @property
    def results(self):
        """The pipeline :class:`~pipeline.results.Results` of this project."""
        if self._results is None:
            raise RuntimeError("no results yet: call search() first")
        return self._results

    @property
    def oracle(self):
        """KerasTuner's ``tuner.oracle``: the tuner's oracle (the one given, else its class's),
        showing the trials, best trials, objective (a read-only view)."""
        res = self._results
        if res is not None and res.metric != MULTI_OBJECTIVE:
            objective: Any = Objective(res.metric, res.mode)
        else:  # KerasTuner's oracle keeps an Objective (a MultiObjective for a list)
            objective = None if self.objective is None else _as_objective(self.objective, True)
        return self._oracle._attach(res, objective, self.max_trials, self._oracle_space(),
                                    self._hp_of)

    def _oracle_space(self) -> HyperParameters:
        """``oracle.hyperparameters``: as in KerasTuner, the user's ``hyperparameters=`` object
        itself when the search tunes nothing else (``tune_new_entries=False``, or no new
        entry); else the whole space, with the defaults active under the defaults."""
        declared = self._declared
        if declared is not None and (not self.tune_new_entries
                                     or all(n in declared._defs for n in self._defs)):
            return declared
        return HyperParameters.defaults(self._defs.values())

    def _best_trials(self, n: int) -> list[str]:
        if self._results is None:
            return []
        return list(self._results.leaderboard(n)["trial_id"])

    def _hp_of(self, trial_id: str) -> HyperParameters:
        space = self.results.spec.search_space()
        config = self.results.configs.get(trial_id, {})
        values = {k: v for k, v in space.active(config).items() if k != "__default__"}
        return HyperParameters.replay(self._defs.values(), values)

    def get_best_hyperparameters(self, num_trials: int = 1) -> list[HyperParameters]:
        """The best trials' hyperparameters, best first."""
        return [self._hp_of(t) for t in self._best_trials(num_trials)]

    def get_best_models(self, num_models: int = 1) -> list:
        """The best trials' models, loaded from their best checkpoints."""
        return [self.results.load_model(t) for t in self._best_trials(num_models)]

    def results_summary(self, num_trials: int = 10) -> None:
        """Print the best trials as KerasTuner does."""
        print("Results summary")
        print(f"Results in {self.project_dir}")
        print("Showing %d best trials" % num_trials)
        res = self._results
        if res is None:
            return
        metric, mode = res.metric, res.mode
        if metric == MULTI_OBJECTIVE:
            print(MultiObjective(_objectives(self.objective, True)))
        else:
            print(Objective(metric, mode))
        board = res.leaderboard(num_trials)
        for _, row in board.iterrows():
            print()
            print(f"Trial {row['trial_id']} summary")
            print("Hyperparameters:")
            values = self._hp_of(row["trial_id"]).values
            for name, value in values.items():
                print(f"{name}:", value)
            if not values:
                print("default configuration")
            print(f"Score: {row[metric]}")

    @property
    def remaining_trials(self) -> int | None:
        if self._results is None:
            return self._trials()
        return max(0, self._results.spec.num_trials - self._results.num_trials)


_KT_NAMES = {"int": "Int", "float": "Float", "choice": "Choice", "bool": "Boolean", "fixed": "Fixed"}


class RandomSearch(Tuner):
    """Random search (Optuna's random sampler through the pipeline: conditions kept exactly)."""

    _searcher = "optuna-random"
    _oracle_class = RandomSearchOracle

    def __init__(self, hypermodel=None, objective=None, max_trials: int = 10, seed=None,
                 hyperparameters=None, tune_new_entries=True, allow_new_entries=True,
                 max_retries_per_trial=0, max_consecutive_failed_trials=3, **kwargs):
        if "oracle" in kwargs:
            raise TypeError(_OWN_ORACLE.format(type(self).__name__))
        super().__init__(hypermodel, objective, max_trials=max_trials, seed=seed,
                         hyperparameters=hyperparameters, tune_new_entries=tune_new_entries,
                         allow_new_entries=allow_new_entries,
                         max_retries_per_trial=max_retries_per_trial,
                         max_consecutive_failed_trials=max_consecutive_failed_trials, **kwargs)


class GridSearch(Tuner):
    """Every combination of the values (KerasTuner's ten values for a stepless float)."""

    _searcher = "grid"
    _oracle_class = GridSearchOracle

    def __init__(self, hypermodel=None, objective=None, max_trials: int | None = None, seed=None,
                 hyperparameters=None, tune_new_entries=True, allow_new_entries=True,
                 max_retries_per_trial=0, max_consecutive_failed_trials=3, **kwargs):
        if "oracle" in kwargs:
            raise TypeError(_OWN_ORACLE.format(type(self).__name__))
        super().__init__(hypermodel, objective, max_trials=max_trials, seed=seed,
                         hyperparameters=hyperparameters, tune_new_entries=tune_new_entries,
                         allow_new_entries=allow_new_entries,
                         max_retries_per_trial=max_retries_per_trial,
                         max_consecutive_failed_trials=max_consecutive_failed_trials, **kwargs)

    @staticmethod
    def _plan_searcher(tuner: Tuner, space: dict) -> dict[str, Any]:
        if tuner.searcher == "grid" and tuner.max_trials:
            from pipeline.space import SearchSpace

            grid = SearchSpace.from_dict(space).grid()
            if tuner.max_trials < len(grid):
                return {"name": "manual", "points_to_evaluate": grid[: tuner.max_trials]}
        return Tuner._plan_searcher(tuner, space)

    @staticmethod
    def _plan_trials(tuner: Tuner) -> int | None:
        return None


class BayesianOptimization(Tuner):
    """Gaussian-process Bayesian optimization (Optuna's GPSampler)."""

    _searcher = "gp"
    _oracle_class = BayesianOptimizationOracle

    def __init__(self, hypermodel=None, objective=None, max_trials: int = 10,
                 num_initial_points: int | None = None, alpha: float = 1e-4, beta: float = 2.6,
                 seed=None, hyperparameters=None, tune_new_entries=True, allow_new_entries=True,
                 max_retries_per_trial=0, max_consecutive_failed_trials=3, **kwargs):
        if "oracle" in kwargs:
            raise TypeError(_OWN_ORACLE.format(type(self).__name__))
        oracle = BayesianOptimizationOracle(
            objective, max_trials, num_initial_points, alpha, beta, seed, hyperparameters,
            allow_new_entries, tune_new_entries, max_retries_per_trial,
            max_consecutive_failed_trials)
        super().__init__(hypermodel, oracle=oracle, **kwargs)

    @staticmethod
    def _setup(tuner: Tuner) -> None:
        oracle = tuner._oracle
        assert isinstance(oracle, BayesianOptimizationOracle)
        tuner.num_initial_points = oracle.num_initial_points
        if tuner.searcher == "gp" and importlib.util.find_spec("torch") is None:
            log.warning("Optuna's GPSampler needs PyTorch, which is not installed; "
                        "BayesianOptimization uses TPE instead")
            tuner.searcher = "tpe"
        if oracle.num_initial_points and tuner.searcher in ("gp", "tpe"):
            tuner.searcher_options.setdefault("n_startup_trials", int(oracle.num_initial_points))


class Hyperband(Tuner):
    """Hyperband's brackets over random configurations (as KerasTuner's Hyperband samples
    them), up to ``max_epochs`` epochs per trial; ``searcher="tpe"`` (or any other) instead.

    By default the brackets run as asynchronous successive halving (Ray's ASHA): the same
    number of configurations, the same brackets (``max_epochs / factor**s`` epochs before
    the first cut, at most ``max_epochs``) and the same ``factor``, but a trial is cut or
    promoted as soon as its rung has enough results instead of waiting for its whole
    bracket, so no CPU idles and no trial is paused, saved and restored.
    ``synchronous=True`` runs KerasTuner's exact synchronous brackets (Ray's HyperBand).
    """

    # Random, as KerasTuner's: with TPE's ever better proposals passing the rungs' cutoffs,
    # ASHA trained 225-238 epochs for KerasTuner's 166 on benchmarks/front_doors.py's
    # kt_hyperband (random: 185, best val accuracy 0.965 vs KerasTuner's 0.931).
    _searcher = "optuna-random"
    _scheduler = "asha"
    _oracle_class = HyperbandOracle

    def __init__(self, hypermodel=None, objective=None, max_epochs: int = 100, factor: int = 3,
                 hyperband_iterations: int = 1, seed=None, hyperparameters=None,
                 tune_new_entries=True, allow_new_entries=True, max_retries_per_trial=0,
                 max_consecutive_failed_trials=3, max_trials: int | None = None,
                 synchronous: bool = False, **kwargs):
        if "oracle" in kwargs:
            raise TypeError(_OWN_ORACLE.format(type(self).__name__))
        if synchronous and not kwargs.get("scheduler"):
            kwargs["scheduler"] = "hyperband"
        oracle = HyperbandOracle(objective, max_epochs, factor, hyperband_iterations, seed,
                                 hyperparameters, allow_new_entries, tune_new_entries,
                                 max_retries_per_trial, max_consecutive_failed_trials)
        oracle.max_trials = max_trials  # this front door's cap on the configurations tried
        super().__init__(hypermodel, oracle=oracle, **kwargs)

    @staticmethod
    def _setup(tuner: Tuner) -> None:
        oracle = tuner._oracle
        assert isinstance(oracle, HyperbandOracle)
        tuner.max_epochs, tuner.factor = int(oracle.max_epochs), int(oracle.factor)
        tuner.hyperband_iterations = int(oracle.hyperband_iterations)
        if tuner.scheduler in ("hyperband", "asha"):
            tuner.scheduler_options.setdefault("reduction_factor", tuner.factor)
        if tuner.scheduler == "asha":
            brackets = _hyperband_brackets(tuner.max_epochs, tuner.factor)
            first_cut = math.ceil(tuner.max_epochs / tuner.factor ** (brackets - 1))
            tuner.scheduler_options.setdefault("grace_period", max(1, first_cut))
            tuner.scheduler_options.setdefault("brackets", brackets)

    @staticmethod
    def _plan_trials(tuner: Tuner) -> int | None:
        n = _hyperband_trials(tuner.max_epochs, tuner.factor, tuner.hyperband_iterations)
        return min(n, tuner.max_trials) if tuner.max_trials else n

    @staticmethod
    def _plan_epochs(tuner: Tuner, epochs: int | None) -> int:
        return tuner.max_epochs  # KerasTuner's Hyperband sets the epochs itself


# KerasTuner's BaseTuner (an oracle and a run_trial of one's own, no model needed) is, here,
# the Tuner itself: a Tuner subclass overriding run_trial may leave hypermodel out.
BaseTuner = Tuner

_TUNER_OF: dict[type, type[Tuner]] = {
    RandomSearchOracle: RandomSearch, GridSearchOracle: GridSearch,
    BayesianOptimizationOracle: BayesianOptimization, HyperbandOracle: Hyperband}
# KerasTuner's namespaces: kt.oracles.RandomSearchOracle, kt.tuners.RandomSearch, ...
oracles = types.SimpleNamespace(**{c.__name__: c for c in _TUNER_OF})
tuners = types.SimpleNamespace(Tuner=Tuner, BaseTuner=BaseTuner, RandomSearch=RandomSearch,
                               GridSearch=GridSearch,
                               BayesianOptimization=BayesianOptimization, Hyperband=Hyperband)

# KerasTuner's public names this front door does not provide, and why (module __getattr__:
# they raise an AttributeError that says so, not a bare "no attribute").
_NOT_PROVIDED = {
    "synchronized": "KerasTuner's oracle-internal decorator is not provided: this front door's "
                    "oracle drives no trials (Ray Tune's searchers choose them)",
}


def __getattr__(name: str) -> Any:
    if name in _NOT_PROVIDED:
        raise AttributeError(f"keras_tuner.{name}: {_NOT_PROVIDED[name]} "
                             "(README: Coming from KerasTuner or Optuna)")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# A script importing this door starts Ray now, while it goes on to import Keras and make
# its data; the tuner takes that start over (cluster.connect.EarlyStart).
EarlyStart.at_import(warm_env=True)
