"""Optuna's API on this pipeline: ``from pipeline.compat import optuna``.

``create_study(...)`` and ``study.optimize(objective, n_trials=..., timeout=...)``
run each trial of a define-by-run objective as a Ray Tune trial. The objective
itself is the Tune trainable (it may train Keras models or be any Python
function); its ``trial`` is a proxy whose calls go to one driver-side Ray actor
holding a real ``optuna.Study`` with the user's sampler:

* ``trial.suggest_*`` (also the deprecated ``suggest_uniform``,
  ``suggest_loguniform``, ``suggest_discrete_uniform``) are answered by that
  study's ``Trial`` (``study.ask()``), so distributions, log scales, steps,
  conditional (define-by-run) parameters and the sampler's behaviour are
  Optuna's own, and trials run in parallel (``n_jobs``);
* ``trial.report(value, step)`` records the intermediate value in the study and
  reports ``{"value": value, "step": step}`` to Tune, whose scheduler stops
  trials: ``SuccessiveHalvingPruner``/``HyperbandPruner`` -> ``asha``,
  ``MedianPruner`` -> ``median``, ``NopPruner`` -> ``fifo``. With these,
  ``trial.should_prune()`` is False (Tune stops the trial itself; the study
  records it as PRUNED). With no pruner or another one (Percentile, Threshold,
  Patient, Wilcoxon) the scheduler is ``fifo`` and ``should_prune()`` asks the
  study's real pruner, exactly as in Optuna;
* the value returned by the objective is told to the study and reported to Tune.

After ``optimize`` the study is an ordinary Optuna study on the driver:
``best_params``, ``best_value``, ``best_trial``, ``trials``,
``trials_dataframe()``... are Optuna's. Tune's results are stored under
``results_path/<study_name>`` (``study.results`` opens them). ``storage`` is
Optuna's (e.g. ``sqlite:///study.db``); with it ``load_if_exists`` works as in
Optuna.

Differences from Optuna: ``n_jobs`` runs Tune trials in parallel, and when it is
not given as many at a time as the cluster's CPUs hold (said on stderr when
``optimize`` starts; ``n_jobs=1`` runs them one after another, in Optuna's
order); Tune's schedulers count reports, not ``step`` values; an objective
failing with an exception not in ``catch`` stops the study as Optuna does with
``n_jobs > 1``: no trial starts after it, the running ones finish, then ``optimize``
raises it; ``study.stop()`` is not supported inside objectives (it raises
there; call it from a callback). ``callbacks`` run as in Optuna: on the driver, in the
process calling ``optimize``, as ``callback(study, frozen_trial)`` once after each trial
finishes (COMPLETE, PRUNED or FAIL), in finishing order, with ``study`` (this object)
up to date (:mod:`pipeline.compat._optuna_driver`); they need not be picklable. A
callback calling ``study.stop()`` (e.g. ``optuna.study.MaxTrialsCallback``) ends
``optimize`` as in Optuna: no new trial starts, and trials still running finish
(:mod:`pipeline.soft_stop`); ``timeout`` does the same at its deadline, counted from the
call to ``optimize``. A callback that raises stops the run the same way, and
``optimize`` raises its exception once the running trials ended, with the finished
trials in the study. An objective that changes state
outside itself (a global list of scores, a dict of models, ``self.`` attributes of a
callable object) changes it in another process: ``optimize`` warns, naming it
(:mod:`pipeline.compat._driver_state`). Each worker unpickles the objective once per
``optimize`` and runs all its trials on that copy: state the objective keeps carries
over between one worker's trials, not between workers.

``create_study(..., in_process=True)`` gives up Ray for Optuna's exact semantics: its
``optimize`` is Optuna's own, run in the calling process (see :func:`create_study`).
"""

from __future__ import annotations

import os
import re
import sys
import time
import uuid
import warnings
from typing import Any, Callable, Iterable, Sequence

import optuna as _optuna
from optuna import (  # noqa: F401  (re-exported: code uses optuna.samplers.TPESampler etc.)
    distributions,
    exceptions,
    logging,
    pruners,
    samplers,
    storages,
    trial,
)
from optuna.exceptions import TrialPruned

from cluster.connect import EarlyStart
from pipeline.compat._optuna_actor import _quietly, _StudyHolder
from pipeline.compat._optuna_trial import Trial, _objective_trainable

__all__ = ["create_study", "load_study", "Study", "Trial", "TrialPruned", "samplers", "pruners",
           "SAMPLER_SEARCHERS"]

SAMPLER_SEARCHERS = {
    "TPESampler": "tpe",
    "RandomSampler": "optuna-random",
    "GPSampler": "gp",
    "CmaEsSampler": "cmaes",
    "NSGAIISampler": "nsga2",
}


def __getattr__(name: str) -> Any:  # anything else of Optuna's top level
    return getattr(_optuna, name)


# -- pruners and samplers -> schedulers and searchers ------------------------------------------


def searcher_for(sampler: Any, multi: bool) -> str:
    """The pipeline searcher name matching an Optuna sampler (what the spec records)."""
    name = SAMPLER_SEARCHERS.get(type(sampler).__name__, "optuna-random")
    if multi and name in ("cmaes",):
        return "tpe"
    return name


def scheduler_for(pruner: Any) -> tuple[str, dict[str, Any], int | None, bool]:
    """(scheduler name, options, max_t or None, should_prune asks the study's pruner)."""
    P = _optuna.pruners
    if pruner is None:
        return "fifo", {}, None, True  # Optuna's default MedianPruner, consulted by should_prune()
    if isinstance(pruner, P.NopPruner):
        return "fifo", {}, None, False
    if isinstance(pruner, P.HyperbandPruner):
        rf = int(pruner._reduction_factor)
        max_r = pruner._max_resource
        opts = {"grace_period": int(pruner._min_resource), "reduction_factor": rf}
        return "asha", opts, (int(max_r) + 1 if isinstance(max_r, int) else None), False
    if isinstance(pruner, P.SuccessiveHalvingPruner):
        rf = int(pruner._reduction_factor)
        grace = int(pruner._min_resource or 1) * rf ** int(pruner._min_early_stopping_rate)
        return "asha", {"grace_period": grace, "reduction_factor": rf}, None, False
    if type(pruner) is P.MedianPruner:
        opts = {"grace_period": int(pruner._n_warmup_steps),
                "min_samples_required": max(1, int(pruner._n_startup_trials), int(pruner._n_min_trials))}
        return "median", opts, None, False
    return "fifo", {}, None, True


def _warn_outer_changes(func: Callable) -> None:
    """Say where ``optimize`` is called that changes the objective makes outside itself are lost.

    Callbacks run on the driver (:mod:`pipeline.compat._optuna_driver`): what they change is
    the script's own state, so they are not checked.
    """
    from pipeline.compat._driver_state import changes_message, outer_changes

    changed = outer_changes(func)
    if changed:
        warnings.warn(changes_message("the objective", changed), UserWarning, stacklevel=3)


# The objective each worker process runs, by ``optimize`` call: the copy its first trial got.


# -- the study ---------------------------------------------------------------------------------


def _direction_name(d: Any) -> str:
    return d.name.lower() if hasattr(d, "name") else str(d).lower()


def _optuna_storage(storage: Any) -> Any:
    """Relative sqlite paths made absolute (the actor may not share the driver's directory)."""
    import os

    if (isinstance(storage, str) and storage.startswith("sqlite:///")
            and not storage.startswith("sqlite:////")):
        return "sqlite:///" + os.path.abspath(storage.removeprefix("sqlite:///"))
    return storage


def _experiment_name(study_name: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", study_name).lstrip("_.-") or "study"
    return name[:63]


class Study(_optuna.Study):
    """An Optuna study whose ``optimize`` runs on Ray Tune; everything else is Optuna's.

    It is an ``optuna.Study`` (so ``optuna.visualization`` and any code that checks
    ``isinstance(study, optuna.Study)`` take it), built around the real study it wraps:
    Optuna's own methods and properties run on it and read that study's state (its
    storage, id, sampler, pruner), which the wrapper never copies.
    """

    _optimize_pid: int | None = None  # the driver's process while optimize runs
    _stop_requested = False  # study.stop() was called in this optimize

    def __init__(self, study: "_optuna.Study", *, storage: Any, pruner: Any, results_path: str,
                 address: str | None, resources_per_trial: dict[str, float] | None,
                 in_process: bool = False):
        # no super().__init__: the attributes Optuna's methods read come from ``study``
        self._study = study
        self._storage_arg = storage
        self._pruner_arg = pruner
        self.results_path = os.fspath(results_path)  # a str or a pathlib.Path
        self.address = address
        self.resources_per_trial = dict(resources_per_trial or {})
        self.results_list: list = []
        self.in_process = bool(in_process)
        if self.in_process:  # Optuna's own optimize, here: no Ray (:meth:`optimize`)
            EarlyStart.forgo()
            self._early: EarlyStart | None = None
            return
        # Ray starts while the script goes on, and the first trials' workers with it; with
        # Keras imported, the objective is taken to train Keras models: they import
        # TensorFlow meanwhile
        keras = "keras" in sys.modules or "tensorflow" in sys.modules
        warm = (10**6, float(self.resources_per_trial.get("cpu", 1)))
        self._early = EarlyStart.claim(address, warm, warm_env=keras, helpers=_HELPERS)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "_study":
            raise AttributeError(name)
        return getattr(self._study, name)

    def __getstate__(self) -> dict[str, Any]:  # Optuna's drops an attribute only it has
        return self.__dict__.copy()

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def __repr__(self) -> str:
        n = len(self._study.trials)
        return f"<pipeline.compat.optuna.Study {self._study.study_name!r} ({n} trials)>"

    def stop(self) -> None:
        """Optuna's ``Study.stop``, from a callback: ``optimize`` starts no new trial and returns.

        Callbacks run on the driver after each trial (as in Optuna). Trials still running
        when a callback calls it finish (as in Optuna, and as with ``timeout``).
        Outside ``optimize`` it raises Optuna's ``RuntimeError``; inside an objective, which
        runs in a Ray worker, it is not supported and raises a ``RuntimeError`` saying so.
        """
        import os

        if self.in_process:
            _optuna.Study.stop(self)
            return
        if self._optimize_pid is None:
            raise RuntimeError("`Study.stop` is supposed to be invoked inside an objective "
                               "function or a callback.")
        if os.getpid() != self._optimize_pid:
            raise RuntimeError(
                "study.stop() inside an objective is not supported here: the objective runs "
                "in a Ray worker. Call it from a callback (study.optimize(..., callbacks=[...]) "
                "runs them on the driver after each trial, e.g. optuna.study.MaxTrialsCallback), "
                "or create the study with in_process=True to run Optuna's own optimize here.")
        self._stop_requested = True

    @property
    def results(self):
        """The pipeline :class:`~pipeline.results.Results` of the last ``optimize``."""
        if not self.results_list and self.in_process:
            raise RuntimeError("no results: a study created with in_process=True runs Optuna's "
                               "own optimize in this process, which keeps no Ray Tune results; "
                               "its trials are in study.trials")
        if not self.results_list:
            raise RuntimeError("no results yet: call optimize() first")
        return self.results_list[-1]

    def _spec(self, n_trials: int | None, timeout: float | None, concurrency: int, name: str):
        from pipeline.spec import parse_spec

        directions = [_direction_name(d) for d in self._study.directions]
        multi = len(directions) > 1
        metrics = ["value"] if not multi else [f"values_{i}" for i in range(len(directions))]
        modes = ["min" if d == "minimize" else "max" for d in directions]
        scheduler, options, max_t, ask_pruner = scheduler_for(self._pruner_arg)
        if multi:
            scheduler, options, max_t = "fifo", {}, None
        raw = {
            "name": name,
            "data": {"source": "external"},  # arrays passed from Python
            # The objective asks the study actor for its parameters; Tune only counts trials.
            "space": {"optuna_trial": {"type": "fixed", "value": "study"}},
            "training": {"epochs": max_t or 1000},
            "objective": {"metric": metrics if multi else metrics[0],
                          "mode": modes if multi else modes[0]},
            "searcher": {"name": searcher_for(self._study.sampler, multi)},
            "scheduler": {"name": scheduler, "options": options},
            "resources": {"cpu": 1, "gpu": 0, **self.resources_per_trial},
            "search": {"trials": int(n_trials) if n_trials else 10 ** 9, "max_concurrent": concurrency,
                       **({"start_trials_for_s": float(timeout)} if timeout else {})},
            "storage": {"path": self.results_path},
        }
        return parse_spec(raw, source="optuna study"), metrics, ask_pruner

    def _concurrency(self, n_jobs: int | None) -> tuple[int, str]:
        """Trials at a time, and why: ``n_jobs`` as given (-1: what the cluster holds);
        not given: what the cluster holds (Optuna itself would run one at a time)."""
        import ray

        if n_jobs is not None and n_jobs > 0:
            return int(n_jobs), f"n_jobs={n_jobs}"
        if n_jobs == 0:
            raise ValueError("n_jobs must be a positive number, -1 or None, not 0")
        cpus = ray.cluster_resources().get("CPU", 1)
        per = float(self.resources_per_trial.get("cpu", 1)) or 1
        n = max(1, int(cpus // per))
        why = ("n_jobs=-1: as many as the cluster's CPUs hold" if n_jobs == -1 else
               "n_jobs not given: as many as the cluster's CPUs hold; n_jobs=1 runs them one "
               "after another as Optuna does")
        return n, why

    def _free_name(self) -> str:
        from pipeline.storage import locate

        base = _experiment_name(self._study.study_name)
        name, k = base, 1
        while locate(self.results_path, name).exists():
            k += 1
            name = f"{base[:58]}-{k}"
        return name

    def optimize(self, func: Callable, n_trials: int | None = None, timeout: float | None = None,
                 n_jobs: int | None = None, catch: Iterable[type[Exception]] | type[Exception] = (),
                 callbacks: Iterable[Callable] | None = None, gc_after_trial: bool = False,
                 show_progress_bar: bool = False) -> None:
        """Run ``n_trials`` trials of ``func`` (or until ``timeout`` seconds) as Ray Tune trials.

        As in Optuna, ``timeout`` counts from this call; no trial starts after it, and
        trials running then finish.

        ``callbacks`` are called on the driver as Optuna calls them: ``callback(study,
        frozen_trial)`` once after each trial finishes (COMPLETE, PRUNED or FAIL), in
        finishing order, with this study brought up to date. A callback may call
        :meth:`stop`; one that raises stops the run, and its exception is raised here once
        the running trials ended (the finished trials are in the study).

        A study created with ``in_process=True`` runs Optuna's own ``optimize`` instead, in
        this process, with every argument meaning exactly what it means in Optuna.
        """
        import os

        if self.in_process:
            _optuna.Study.optimize(self, func, n_trials=n_trials, timeout=timeout, n_jobs=n_jobs or 1,
                                   catch=catch, callbacks=callbacks, gc_after_trial=gc_after_trial,
                                   show_progress_bar=show_progress_bar)
            return
        since = time.monotonic()  # timeout counts from here, as in Optuna
        if n_trials is None and timeout is None:
            raise ValueError("give n_trials or timeout (a Tune search needs an end)")
        catch = tuple(catch) if isinstance(catch, Iterable) else (catch,)
        callbacks = list(callbacks or [])
        _warn_outer_changes(func)
        self._check_shippable(func)
        self._optimize_pid, self._stop_requested = os.getpid(), False
        try:
            self._optimize(func, n_trials, timeout, n_jobs, catch, callbacks, show_progress_bar,
                           since)
        finally:
            self._optimize_pid, self._stop_requested = None, False

    def _optimize(self, func: Callable, n_trials: int | None, timeout: float | None,
                  n_jobs: int | None, catch: tuple[type[Exception], ...], callbacks: list[Callable],
                  show_progress_bar: bool, since: float) -> None:
        import ray
        from ray import tune

        from cluster.connect import ray_session
        from pipeline.compat._optuna_driver import StudyCallbacks
        from pipeline.runner import run

        verbosity = _optuna.logging.get_verbosity()
        in_memory = self._storage_arg is None or isinstance(self._storage_arg, _optuna.storages.InMemoryStorage)
        early, self._early = self._early, None
        with ray_session(self.address, early=early):
            concurrency, why = self._concurrency(n_jobs)
            if n_trials:
                concurrency = min(concurrency, int(n_trials))
            print(f"optimize: {concurrency} trial(s) at a time ({why})", file=sys.stderr, flush=True)
            name = self._free_name()
            spec, metrics, ask_pruner = self._spec(n_trials, timeout, concurrency, name)
            create = {"directions": list(self._study.directions), "sampler": self._study.sampler,
                      "pruner": self._study.pruner, "study_name": self._study.study_name}
            if not in_memory:
                create.update(storage=self._storage_arg, load_if_exists=True)
            attrs = {"user": dict(self._study.user_attrs), "metric_names": self._study.metric_names}
            prior = [t for t in self._study.get_trials(deepcopy=True)] if in_memory else []
            options: dict[str, Any] = {"num_cpus": 0}
            try:
                from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

                options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(
                    ray.get_runtime_context().get_node_id(), soft=True)
            except Exception:  # noqa: BLE001 - placement is only a preference
                pass
            deadline = time.time() + timeout - (time.monotonic() - since) if timeout else None
            actor: Any = ray.remote(_StudyHolder).options(**options).remote(
                create, prior, attrs, bool(callbacks), verbosity, deadline)
            driver = StudyCallbacks(self, actor, callbacks, in_memory, verbosity)
            try:
                trainable = tune.with_parameters(
                    _objective_trainable, objective=func, actor=actor,
                    setup={"run_id": uuid.uuid4().hex, "metrics": metrics, "ask_pruner": ask_pruner,
                           "cwd": os.getcwd(), "catch": catch,
                           "cpu": spec.resources.cpu, "gpu": spec.resources.gpu})
                try:
                    results = run(spec, address=self.address, progress=show_progress_bar,
                                  trainable=trainable, callbacks=[driver],
                                  stop_starting=lambda: driver.stopping, since=since)
                finally:
                    _optuna.logging.set_verbosity(verbosity)  # the searcher quietens Optuna
                from pipeline.results import Results

                results = Results(results.where)
                self.results_list.append(results)
                status = {row.trial_id: row.status for row in results.dataframe().itertuples()}
                ray.get(actor.reconcile.remote(status))
                driver.drain()  # the callbacks of the trials only the end settled
                trials, sampler, errors = ray.get(actor.export.remote())
            finally:
                ray.kill(actor)
        self._absorb(trials, sampler, in_memory)
        if driver.error is not None:
            raise driver.error
        for _, error in errors:  # the first an objective raised that is not in ``catch``
            raise error

    def _check_shippable(self, func: Callable) -> None:
        """Fail before Ray starts, naming the object, if what the trials need cannot travel.

        The sampler, pruner and storage go to the study actor, the objective to every
        trial, all pickled by Ray (callbacks stay on the driver). Locks the sampler keeps (Optuna 5.1's NSGA-II) are
        made portable first; anything else that cannot be pickled is a ``TypeError``.
        """
        from pipeline.portable import check_portable, portable_locks

        portable_locks(self._study.sampler)
        portable_locks(self._study.pruner)
        shipped = {"sampler": self._study.sampler, "pruner": self._study.pruner,
                   "objective": func}
        if self._storage_arg is not None:
            shipped["storage"] = self._storage_arg
        check_portable(shipped)

    def _sync(self, trials: list) -> None:
        """During ``optimize``, with in-memory storage: the actor's trials, for callbacks."""
        self._absorb(trials, self._study.sampler, True)

    def _absorb(self, trials: list, sampler: Any, in_memory: bool) -> None:
        """Make the driver's study what the actor's became (same trials, sampler state)."""
        old = self._study
        if in_memory:
            with _quietly():  # the user saw the study created once
                new = _optuna.create_study(directions=list(old.directions), sampler=sampler,
                                           pruner=old.pruner, study_name=old.study_name)
            new.add_trials(trials)
            for key, value in old.user_attrs.items():
                new.set_user_attr(key, value)
            if old.metric_names:
                new.set_metric_names(old.metric_names)
        else:
            new = _optuna.load_study(study_name=old.study_name, storage=self._storage_arg,
                                     sampler=sampler, pruner=old.pruner)
        self._study = new


def create_study(*, storage: Any = None, sampler: Any = None, pruner: Any = None,
                 study_name: str | None = None, direction: Any = None, load_if_exists: bool = False,
                 directions: Sequence[Any] | None = None, results_path: str = "results",
                 address: str | None = None,
                 resources_per_trial: dict[str, float] | None = None,
                 in_process: bool = False) -> Study:
    """Optuna's ``create_study`` (same arguments) whose ``optimize`` runs on Ray Tune.

    Extra arguments: ``results_path`` (where Tune stores the trials, a folder or
    URI), ``address`` (a Ray cluster to join), ``resources_per_trial``
    (``{"cpu": 1, "gpu": 0.5}``), ``in_process``: ``optimize`` is Optuna's own, run in this
    process (no Ray; exact Optuna semantics, e.g. for an objective that changes the
    script's state or uses ``trial.study``):

        >>> from pipeline.compat import optuna
        >>> optuna.logging.set_verbosity(optuna.logging.WARNING)
        >>> seen = []
        >>> def objective(trial):
        ...     seen.append(trial.number)
        ...     return trial.suggest_float("x", -1, 1) ** 2
        >>> study = optuna.create_study(in_process=True)
        >>> study.optimize(objective, n_trials=3)
        >>> seen, len(study.trials)
        ([0, 1, 2], 3)
    """
    storage = _optuna_storage(storage)
    if study_name is None and storage is None:
        study_name = f"no-name-{uuid.uuid4()}"
    study = _optuna.create_study(storage=storage, sampler=sampler, pruner=pruner,
                                 study_name=study_name, direction=direction,
                                 load_if_exists=load_if_exists, directions=directions)
    return Study(study, storage=storage, pruner=pruner, results_path=results_path,
                 address=address, resources_per_trial=resources_per_trial, in_process=in_process)


def load_study(*, study_name: str | None, storage: Any, sampler: Any = None, pruner: Any = None,
               results_path: str = "results", address: str | None = None,
               resources_per_trial: dict[str, float] | None = None,
               in_process: bool = False) -> Study:
    """Optuna's ``load_study`` returning a study whose ``optimize`` runs on Ray Tune
    (``in_process=True``: Optuna's own, as in :func:`create_study`)."""
    storage = _optuna_storage(storage)
    study = _optuna.load_study(study_name=study_name, storage=storage, sampler=sampler, pruner=pruner)
    return Study(study, storage=storage, pruner=pruner, results_path=results_path,
                 address=address, resources_per_trial=resources_per_trial, in_process=in_process)


# A script importing this door starts Ray now, while it goes on (cluster.connect.EarlyStart),
# unless its studies are in-process ones; whether its objective trains Keras models is known
# only when the study is made.
_IN_PROCESS = re.compile(r"\bin_process\s*=\s*True\b")
# Workers started ahead besides the trials': one for each optimize's study actor (_StudyHolder),
# which every trial's first call waits for (a new worker for it: ~0.9 s after the call, 2 CPUs).
_HELPERS = 1
# TensorFlow in workers if the script imports Keras; a worker for the study actor
EarlyStart.at_import(warm_env=None, unless=_IN_PROCESS, helpers=_HELPERS)
