"""What the report computes from stored results: one record per trial (its outcome,
active hyperparameters, best values and history) and the hyperparameter importances."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from pipeline.space import BoolParam, ChoiceParam, FixedParam, IntParam, SearchSpace

if TYPE_CHECKING:
    from pipeline.results import Results

#: Fewer finished trials than this and importances are not computed (reported instead).
MIN_TRIALS_FOR_IMPORTANCE = 3

COMPLETED, STOPPED, FAILED, UNFINISHED = "completed", "stopped early", "failed", "unfinished"
OUTCOMES = (COMPLETED, STOPPED, FAILED, UNFINISHED)  # the order of legends and counts


# ------------------------------------------------------------------------ trials


@dataclass
class _Trial:
    trial_id: str
    status: str
    outcome: str
    config: dict[str, Any]  # active hyperparameters only
    values: dict[str, float]  # best value of each objective metric (as in the leaderboard)
    epochs: int
    history: pd.DataFrame
    error: str | None = None
    times: np.ndarray = field(default_factory=lambda: np.zeros(0))  # wall clock of each report


def outcome(status: str, epochs: int, planned_epochs: int) -> str:
    """``completed``, ``stopped early`` (TERMINATED before the planned epochs), ``failed``."""
    if status == "ERROR":
        return FAILED
    if status == "TERMINATED":
        return STOPPED if epochs < planned_epochs else COMPLETED
    return UNFINISHED


def _report_times(hist: pd.DataFrame) -> np.ndarray:
    """Wall-clock time of each report: whole-second ``timestamp`` refined by ``time_total_s``."""
    if "timestamp" not in hist or not len(hist):
        return np.full(len(hist), np.nan)
    stamp = hist["timestamp"].to_numpy(dtype=float)
    if "time_total_s" not in hist:
        return stamp
    total = hist["time_total_s"].to_numpy(dtype=float)
    offset = np.nanmax(stamp - total)  # the tightest start estimate the rounding allows
    return np.clip(offset + total, stamp, stamp + 1.0)


def _collect(results: "Results") -> list[_Trial]:
    spec = results.spec
    space = spec.search_space()
    df = results.dataframe()
    frames = results.histories
    configs = results.configs
    trials = []
    for row in df.to_dict(orient="records"):
        tid = row["trial_id"]
        hist = frames.get(tid)
        hist = hist.reset_index(drop=True) if hist is not None else pd.DataFrame()
        if "epoch" not in hist and "training_iteration" in hist:
            hist = hist.assign(epoch=hist["training_iteration"])
        epochs = int(row.get("epochs") or 0)
        cfg = {k: v for k, v in space.active(configs.get(tid, {})).items()
               if k in space.params and not isinstance(space.params[k], FixedParam)}
        trials.append(_Trial(
            trial_id=tid,
            status=row["status"],
            outcome=outcome(row["status"], epochs, spec.training.epochs),
            config=cfg,
            values={m: float(row.get(m, math.nan)) for m in spec.objective.metrics},
            epochs=epochs,
            history=hist,
            error=row.get("error") or None,
            times=_report_times(hist),
        ))
    return trials


# ------------------------------------------------------------------- importances


def optuna_distributions(space: SearchSpace, observed: dict[str, list[Any]] | None = None) -> dict:
    """Optuna distributions of the searched (non-fixed) parameters of ``space``.

    Numeric ranges widen to cover ``observed`` values outside the declared range or
    step (PBT perturbs values beyond the bounds it started from).
    """
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    observed = observed or {}
    out: dict[str, Any] = {}
    for name, p in space:
        seen = [v for v in observed.get(name, []) if v is not None]
        if isinstance(p, FixedParam):
            continue
        if isinstance(p, (ChoiceParam, BoolParam)):
            choices = list(p.values) if isinstance(p, ChoiceParam) else [False, True]
            choices += [v for v in dict.fromkeys(seen) if v not in choices]
            out[name] = CategoricalDistribution(choices)
            continue
        is_int = isinstance(p, IntParam)
        kind = IntDistribution if is_int else FloatDistribution
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna adjusts `high` to the step, with a warning
            step: Any = p.step if (is_int or p.step) else None  # an int's step is an int
            dist = kind(p.low, p.high, log=p.log, step=step)
        if all(dist._contains(dist.to_internal_repr(v)) for v in seen):
            out[name] = dist
            continue
        low, high = min([p.low, *seen]), max([p.high, *seen])
        log = p.log and low > 0
        out[name] = (IntDistribution(int(low), int(high), log=log) if is_int
                     else FloatDistribution(float(low), float(high), log=log))
    return out


@dataclass
class Importances:
    table: pd.DataFrame | None  # index: parameter; columns: "<evaluator> (<metric>)"
    notes: list[str]
    trials_used: int


def importances(space: SearchSpace, configs: list[dict[str, Any]], values: list[list[float]],
                metrics: list[str], modes: list[str]) -> Importances:
    """Hyperparameter importances with Optuna's PED-ANOVA and fANOVA evaluators.

    ``configs[i]`` (active parameters) scored ``values[i]`` (one per metric). Each
    objective gets its own in-memory study of the trials that report it. PED-ANOVA
    assesses conditional parameters too; fANOVA only those active in every trial.
    """
    import optuna
    from optuna.importance import (
        FanovaImportanceEvaluator,
        PedAnovaImportanceEvaluator,
        get_param_importances,
    )
    from optuna.trial import TrialState, create_trial

    notes: list[str] = []
    observed: dict[str, list[Any]] = {}
    for cfg in configs:
        for k, v in cfg.items():
            observed.setdefault(k, []).append(v)
    dists = optuna_distributions(space, observed)
    if not dists:
        return Importances(None, ["the search space has no searched parameter"], 0)
    columns: dict[str, dict[str, float]] = {}
    used = 0
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for m, (metric, mode) in enumerate(zip(metrics, modes)):
        rows = [(cfg, vals[m]) for cfg, vals in zip(configs, values) if math.isfinite(vals[m])]
        used = max(used, len(rows))
        if len(rows) < MIN_TRIALS_FOR_IMPORTANCE:
            notes.append(f"{metric}: too few finished trials to estimate importances "
                         f"({len(rows)} < {MIN_TRIALS_FOR_IMPORTANCE})")
            continue
        study = optuna.create_study(direction="maximize" if mode == "max" else "minimize")
        for cfg, value in rows:
            params = {k: v for k, v in cfg.items() if k in dists}
            study.add_trial(create_trial(state=TrialState.COMPLETE, value=value, params=params,
                                         distributions={k: dists[k] for k in params}))
        always = [k for k in dists if all(k in cfg for cfg, _ in rows)]
        skipped = [k for k in dists if k not in always and any(k in cfg for cfg, _ in rows)]
        evaluators: list[tuple[str, Any, list[str] | None]] = [
            ("PED-ANOVA", PedAnovaImportanceEvaluator(), None),
            ("fANOVA", FanovaImportanceEvaluator(seed=0), always)]
        for label, evaluator, chosen in evaluators:
            if chosen is not None and skipped:
                notes.append(f"{metric}, {label}: conditional parameters left out "
                             f"(not active in every trial): {', '.join(skipped)}")
            if chosen == []:
                notes.append(f"{metric}, {label}: no parameter is active in every trial")
                continue
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    got = get_param_importances(study, evaluator=evaluator, params=chosen,
                                                normalize=True)
                except Exception as exc:  # noqa: BLE001 - report, never fail the report
                    notes.append(f"{metric}, {label}: not computed: {type(exc).__name__}: {exc}")
                    continue
            for w in caught:
                notes.append(f"{metric}, {label}: {w.message}")
            if got and not any(v > 0 for v in got.values()):
                notes.append(f"{metric}, {label}: every importance is 0 "
                             "(the trials do not separate the parameters)")
            columns[f"{label} ({metric})"] = got
    table = pd.DataFrame(columns) if columns else None
    if table is not None:
        table = table.reindex([k for k in dists if k in table.index]).fillna(0.0)
        table = table.sort_values(table.columns[0], ascending=False)
    return Importances(table, list(dict.fromkeys(notes)), used)
