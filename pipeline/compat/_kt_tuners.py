"""KerasTuner's search algorithms as tuners: ``RandomSearch``, ``GridSearch``,
``BayesianOptimization`` and ``Hyperband`` (KerasTuner's ``tuners/``).

Each class says what its algorithm decides (searcher, scheduler, trials, epochs) for any
tuner whose oracle is of its oracle class, so ``kt.Tuner(oracle=kt.oracles.HyperbandOracle(...))``
searches as ``kt.Hyperband`` does.
"""

from __future__ import annotations

import importlib.util
import logging
import math
from typing import Any

from pipeline.compat._kt_oracle import (
    BayesianOptimizationOracle,
    GridSearchOracle,
    HyperbandOracle,
    RandomSearchOracle,
)
from pipeline.compat._kt_tuner import Tuner

log = logging.getLogger("pipeline.compat.keras_tuner")

_OWN_ORACLE = ("{} makes its own oracle (KerasTuner: multiple values for argument 'oracle'); "
               "pass an oracle to kt.Tuner(oracle=..., hypermodel=...) instead")


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
    _brackets = True

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
