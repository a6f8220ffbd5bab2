"""KerasTuner's ``Tuner`` on Ray Tune: the engine under every tuner of the KerasTuner door.

A tuner becomes a :class:`pipeline.spec.Spec` (space from :mod:`._kt_space`, the algorithm's
searcher and scheduler from its class in :mod:`._kt_tuners`, chosen by the oracle's class),
and ``search()`` runs it through :func:`pipeline.runner.run` with this door's trainable
(:mod:`._kt_trial`). The project folder is :mod:`._kt_project`'s, the results views are
:mod:`._kt_results`'s.
"""

from __future__ import annotations

import copy
import functools
import inspect
import logging
import os
import random
import weakref
from typing import Any, Callable, ClassVar

import numpy as np

from cluster.connect import EarlyStart
from pipeline.compat import _kt_errors as errors
from pipeline.compat import _kt_project as project
from pipeline.compat._hyperparameters import HyperParameter, HyperParameters, to_space
from pipeline.compat._kt_changes import warn_lost_changes
from pipeline.compat._kt_data import read_fit_data
from pipeline.compat._kt_hypermodel import DefaultHyperModel, HyperModel, from_keras_tuner, has_custom_fit
from pipeline.compat._kt_objective import _objectives
from pipeline.compat._kt_oracle import Oracle, RandomSearchOracle, custom_driving
from pipeline.compat._kt_results import TunerResults
from pipeline.compat._kt_space import Discovered, discover_space, dry_fit, exhaustive, head
from pipeline.compat._kt_strategy import check_multiworker, mirrored_gpus, multiworker
from pipeline.compat._kt_trial import MULTI_OBJECTIVE, _Job, _trial, worker_trial
from pipeline.data import Dataset
from pipeline.results import Results
from pipeline.spec import Spec, parse_spec
from pipeline.storage import Location, locate

log = logging.getLogger("pipeline.compat.keras_tuner")

_NO_DATA = Dataset(*(np.zeros((0, 1), np.float32), np.zeros((0,), np.int64)) * 3, num_classes=1)
_IGNORED = {"logger", "tuner_id", "cleanup"}
_ORACLE = (
    "Expected `oracle` argument to be an instance of `Oracle`, got {!r}: one of "
    "kt.oracles.RandomSearchOracle, GridSearchOracle, BayesianOptimizationOracle or "
    "HyperbandOracle (the trials run on Ray Tune's searcher for it; another one may be picked "
    "with searcher=...)")
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
    if not any(cls in Tuner._algorithms for cls in type(oracle).__mro__):
        raise NotImplementedError(
            f"{type(oracle).__name__} samples no trials of its own (KerasTuner's base Oracle: its "
            "populate_space is abstract): pass one of kt.oracles.RandomSearchOracle, "
            "GridSearchOracle, BayesianOptimizationOracle or HyperbandOracle")


def _tuner_of(oracle: Oracle) -> "type[Tuner]":
    """The tuner class whose search an oracle of this class stands for."""
    return next(Tuner._algorithms[cls] for cls in type(oracle).__mro__ if cls in Tuner._algorithms)




class Tuner(TunerResults):
    """The common base of the tuners (KerasTuner's ``Tuner``), run on Ray Tune.

    As in KerasTuner, ``Tuner(oracle=kt.oracles.RandomSearchOracle(...), hypermodel=...)``
    searches with the oracle's algorithm and arguments (objective, max_trials, seed,
    hyperparameters, ...); without an oracle it searches at random.
    """

    _searcher = "optuna-random"
    _scheduler = "fifo"
    _oracle_class: type[Oracle] = RandomSearchOracle
    _brackets = False  # the algorithm sets each trial's epochs and stops trials between them
    # the search algorithm (a Tuner subclass) for each oracle class: each algorithm's class
    # registers itself by declaring its _oracle_class (pipeline.compat._kt_tuners)
    _algorithms: ClassVar[dict[type[Oracle], type[Tuner]]] = {}
    # set by the algorithm's _setup (BayesianOptimization's, Hyperband's)
    num_initial_points: int | None
    max_epochs: int
    factor: int
    hyperband_iterations: int

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "_oracle_class" in cls.__dict__:
            Tuner._algorithms.setdefault(cls._oracle_class, cls)

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
        self.mirrored_gpus = mirrored_gpus(distribution_strategy)
        if self.mirrored_gpus and "gpu" not in (resources_per_trial or {}):
            resources_per_trial = {**(resources_per_trial or {}), "gpu": self.mirrored_gpus}
        self.workers = multiworker(distribution_strategy, resources_per_trial or {})
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
        if self._own_run_trial and self._algo._brackets:
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
        elif (made_with_kt := from_keras_tuner(hypermodel)) is not None:  # kt.applications...
            self.hypermodel = made_with_kt
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
            check_multiworker(self.executions_per_trial, self._custom_fit())
        self._discover()
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
                  sample: np.ndarray | None = None) -> None:
        """The search space, from the hypermodel's builds (:func:`._kt_space.discover_space`)."""
        found: Discovered = discover_space(self.hypermodel, self._declared, self.allow_new_entries,
                                           extra, sample)
        self._defs: dict[str, HyperParameter] = found.defs
        self._not_a_model, self._lazy_models = found.not_a_model, found.lazy_models
        self._initial = found.initial

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
        every = None
        # not for a searcher the user chose (BayesianOptimization's "tpe" without PyTorch is its own)
        if tuner.searcher == tuner._algo._searcher or (tuner.searcher, tuner._algo._searcher) == ("tpe", "gp"):
            every = exhaustive(space, tuner.max_trials, tuner.seed)
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

    def _reload(self) -> None:
        where = self._where()
        if not where.exists():
            return
        if self.overwrite:
            project.delete(where)
            return
        planned = self._searcher_spec(self._space())["name"]  # "manual" for an exhausted space
        self._results = project.open_existing(where, type(self).__name__, self.searcher, planned,
                                              self.scheduler)

    def reload(self) -> None:
        """KerasTuner's ``reload()``: read the project's stored trials (``directory/project_name``)
        again, e.g. after another tuner searched it."""
        where = self._where()
        if where.exists() and project.is_ours(where):
            self._results = Results(where)

    def _finished(self) -> bool:
        return project.finished(self._results)

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
        warn_lost_changes(self, Tuner, callbacks, stacklevel=2)
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

            self._discover(extra=dry_run_trial(self, self._trial_kwargs(
                head(data, 2), args, callbacks, epochs, dataset_batch, no_data, given, dry=True)))
        elif self._custom_fit() and (x is not None or no_data):
            self._discover(extra=dry_fit(self.hypermodel, data, args, dataset_batch, no_data),
                                        sample=None if no_data else data.x_train[:2])
        elif self._lazy_models and not no_data:
            self._discover(sample=data.x_train[:2])
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
            pass_epochs=epochs is not None or self._algo._brackets,
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
        return has_custom_fit(self.hypermodel)

    def _shipped_hypermodel(self) -> dict[str, Any]:
        """The hypermodel as the user knows it, for errors naming what cannot travel to Ray."""
        if self.hypermodel is None:
            return {}
        if isinstance(self.hypermodel, DefaultHyperModel):
            fn = self.hypermodel.build_fn
            return {f"build function {getattr(fn, '__name__', fn)!s}": fn}
        return {"hypermodel": self.hypermodel}

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
