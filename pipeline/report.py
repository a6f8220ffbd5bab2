"""A self-contained HTML report of a finished (or interrupted) experiment.

``write_report(results, out_dir)`` reads stored results only (no cluster) and
writes ``out_dir/index.html`` plus one PNG per figure. The HTML embeds every
figure as a base64 ``data:`` URI, carries its CSS inline, fetches nothing
(a Content-Security-Policy forbids it) and holds one tiny inline script that,
once the page has loaded, records into ``<div id="check">`` how many images
decoded (``data-images-ok="N/M"``) and any script error, so a headless browser's
``--dump-dom`` can tell whether the page rendered cleanly.

Sections: summary, best-so-far (against wall time and trial count), learning
curves (trials the scheduler stopped early and failed trials marked), parallel
coordinates, hyperparameter importances (Optuna's PED-ANOVA and fANOVA on an
in-memory study), top trials, and the Pareto front for multi-objective runs.

Example::

    from pipeline.results import Results
    from pipeline.report import write_report
    index = write_report(Results.open("results/digits-tpe-asha"), Path("report"))
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from pipeline.results import pareto_mask
from pipeline.safe_io import write_file
from pipeline.space import BoolParam, ChoiceParam, FixedParam, IntParam, SearchSpace

if TYPE_CHECKING:
    from pipeline.results import Results

INDEX = "index.html"
TOP_N = 10
#: Fewer finished trials than this and importances are not computed (reported instead).
MIN_TRIALS_FOR_IMPORTANCE = 3

COMPLETED, STOPPED, FAILED, UNFINISHED = "completed", "stopped early", "failed", "unfinished"
_OUTCOME_STYLE = {  # colour, line style, end marker
    COMPLETED: ("#1f77b4", "-", "o"),
    STOPPED: ("#ff7f0e", "--", "x"),
    FAILED: ("#d62728", ":", "X"),
    UNFINISHED: ("#7f7f7f", "-.", "s"),
}


# --------------------------------------------------------------------------- data


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
    out = {}
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
            dist = kind(p.low, p.high, log=p.log, step=p.step if (is_int or p.step) else None)
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
        evaluators = [("PED-ANOVA", PedAnovaImportanceEvaluator(), None),
                      ("fANOVA", FanovaImportanceEvaluator(seed=0), always)]
        for label, evaluator, params in evaluators:
            if params is not None and skipped:
                notes.append(f"{metric}, {label}: conditional parameters left out "
                             f"(not active in every trial): {', '.join(skipped)}")
            if params == []:
                notes.append(f"{metric}, {label}: no parameter is active in every trial")
                continue
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    got = get_param_importances(study, evaluator=evaluator, params=params,
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


# ----------------------------------------------------------------------- figures


def _figure(width: float, height: float):
    from matplotlib.figure import Figure  # Agg through savefig; pyplot's global state untouched

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


@dataclass
class _Image:
    name: str
    data: bytes


def _save(fig, name: str) -> _Image:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", facecolor="white")
    return _Image(name, buf.getvalue())


def _better(mode: str):
    return np.fmax if mode == "max" else np.fmin


def _fig_best_so_far(trials: list[_Trial], metric: str, mode: str) -> _Image | None:
    events = []  # (time, value)
    finishes = []  # (finish time, trial's best value)
    for t in trials:
        if metric not in t.history or not len(t.history):
            continue
        vals = t.history[metric].to_numpy(dtype=float)
        events += [(tm, v) for tm, v in zip(t.times, vals) if math.isfinite(v) and math.isfinite(tm)]
        if t.outcome != UNFINISHED and math.isfinite(t.values[metric]):
            finishes.append((np.nanmax(t.times) if len(t.times) else math.inf, t.values[metric]))
    if not events:
        return None
    events.sort()
    starts = [t.times[0] - float(t.history["time_this_iter_s"].iloc[0]) for t in trials
              if "time_this_iter_s" in t.history and len(t.history) and math.isfinite(t.times[0])]
    start = min([*starts, events[0][0]])
    times = np.array([tm - start for tm, _ in events])
    vals = np.array([v for _, v in events])
    best = _better(mode).accumulate(vals)
    fig = _figure(11, 3.8)
    ax1, ax2 = fig.subplots(1, 2)
    ax1.scatter(times, vals, s=12, color="#9ecae1", label="a report (one epoch)")
    ax1.step(times, best, where="post", color="#08519c", lw=2, label="best so far")
    ax1.set(xlabel="wall time since the first trial started (s)", ylabel=metric,
            title=f"best {metric} so far against wall time")
    ax1.legend(loc="lower right" if mode == "max" else "upper right", fontsize=8)
    finishes.sort()
    if finishes:
        fv = np.array([v for _, v in finishes])
        n = np.arange(1, len(fv) + 1)
        ax2.scatter(n, fv, s=18, color="#fdae6b", label="the trial's best", zorder=3)
        ax2.step(n, _better(mode).accumulate(fv), where="post", color="#a63603", lw=2,
                 label="best so far")
        ax2.legend(loc="lower right" if mode == "max" else "upper right", fontsize=8)
        ax2.xaxis.get_major_locator().set_params(integer=True)
    ax2.set(xlabel="finished trials (in order of finishing)", ylabel=metric,
            title=f"best {metric} so far against trial count")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    return _save(fig, "best_so_far.png")


def _fig_learning_curves(trials: list[_Trial], metric: str, planned: int) -> _Image | None:
    from matplotlib.lines import Line2D

    shown = [t for t in trials if metric in t.history and len(t.history)]
    if not shown:
        return None
    second = next((k for k in ("val_loss", "loss") if k != metric
                   and any(k in t.history for t in shown)), None)
    fig = _figure(11, 4.2)
    axes = fig.subplots(1, 2 if second else 1, squeeze=False)[0]
    for ax, key in zip(axes, [metric, second]):
        for t in shown:
            if key not in t.history:
                continue
            color, style, marker = _OUTCOME_STYLE[t.outcome]
            h = t.history[["epoch", key]].dropna()
            ax.plot(h["epoch"], h[key], style, color=color, lw=1.4, alpha=0.8)
            if len(h):
                ax.plot(h["epoch"].iloc[-1], h[key].iloc[-1], marker, color=color, ms=7,
                        mew=2, fillstyle="none" if t.outcome == COMPLETED else "full")
        ax.axvline(planned, color="#bbbbbb", lw=1)
        ax.set(xlabel="epoch", ylabel=key, title=f"{key} per epoch, every trial",
               xlim=(0.8, planned + 0.2))
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
    counts = {o: sum(t.outcome == o for t in shown) for o in _OUTCOME_STYLE}
    handles = [Line2D([], [], color=c, ls=s, marker=mk, label=f"{o} ({counts[o]})")
               for o, (c, s, mk) in _OUTCOME_STYLE.items() if counts[o]]
    axes[0].legend(handles=handles, fontsize=8, loc="best")
    return _save(fig, "learning_curves.png")


def _axis_position(p, values: list[Any], observed: list[Any]):
    """(normalised positions in [0, 1], tick positions, tick labels) of one parameter."""
    if isinstance(p, (ChoiceParam, BoolParam)):
        choices = list(p.values) if isinstance(p, ChoiceParam) else [False, True]
        choices += [v for v in dict.fromkeys(observed) if v not in choices]
        n = len(choices)
        pos = {i: (i / (n - 1) if n > 1 else 0.5) for i in range(n)}
        index = {repr(c): i for i, c in enumerate(choices)}
        out = [pos[index[repr(v)]] if v is not _MISSING else math.nan for v in values]
        return out, list(pos.values()), [str(c) for c in choices]
    nums = [float(v) for v in observed]
    low, high = min([float(p.low), *nums]), max([float(p.high), *nums])
    log = p.log and low > 0
    f = (lambda x: math.log(x)) if log else (lambda x: x)
    span = f(high) - f(low)
    out = [((f(float(v)) - f(low)) / span if span else 0.5) if v is not _MISSING else math.nan
           for v in values]
    if not span:
        return out, [0.5], [f"{low:.3g}"]
    mid = math.exp((f(low) + f(high)) / 2) if log else (low + high) / 2
    if isinstance(p, IntParam) and mid != int(mid):
        return out, [0.0, 1.0], [f"{low:.3g}", f"{high:.3g}"]
    return out, [0.0, 0.5, 1.0], [f"{low:.3g}", f"{mid:.3g}", f"{high:.3g}"]


_MISSING = object()


def _fig_parallel(trials: list[_Trial], space: SearchSpace, metrics: list[str],
                  modes: list[str]) -> _Image | None:
    import matplotlib
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    names = [n for n, p in space if not isinstance(p, FixedParam)]
    if not trials or not names:
        return None
    columns, ticks = [], []
    for name in names:
        vals = [t.config.get(name, _MISSING) for t in trials]
        observed = [v for v in vals if v is not _MISSING]
        pos, tpos, tlab = _axis_position(space.params[name], vals, observed)
        columns.append(pos)
        ticks.append((tpos, tlab))
    for metric in metrics:
        vals = np.array([t.values[metric] for t in trials], dtype=float)
        finite = vals[np.isfinite(vals)]
        lo, hi = (finite.min(), finite.max()) if len(finite) else (0.0, 1.0)
        span = hi - lo
        columns.append(list((vals - lo) / span) if span else [0.5 if math.isfinite(v) else math.nan
                                                              for v in vals])
        ticks.append(([0.0, 0.5, 1.0], [f"{lo:.4g}", f"{(lo + hi) / 2:.4g}", f"{hi:.4g}"])
                     if span else ([0.5], [f"{lo:.4g}"]))
    labels = names + [f"{m} ({mode})" for m, mode in zip(metrics, modes)]
    data = np.array(columns, dtype=float).T  # trials x axes
    primary = np.array([t.values[metrics[0]] for t in trials], dtype=float)
    finite = primary[np.isfinite(primary)]
    norm = Normalize(*(finite.min(), finite.max()) if len(finite) else (0, 1))
    if norm.vmin == norm.vmax:
        norm = Normalize(norm.vmin - 0.5, norm.vmax + 0.5)
    cmap = matplotlib.colormaps["viridis" if modes[0] == "max" else "viridis_r"]
    fig = _figure(max(8.0, 1.9 * len(labels) + 2), 4.6)
    ax = fig.subplots()
    x = np.arange(len(labels))
    # worst first, so the best trials are drawn on top
    order = np.argsort(np.where(np.isfinite(primary), primary, -np.inf if modes[0] == "max" else np.inf))
    if modes[0] == "min":
        order = order[::-1]
    for i in order:
        t = trials[i]
        ok = math.isfinite(primary[i])
        color = cmap(norm(primary[i])) if ok else "#bbbbbb"
        ax.plot(x, data[i], color=color, lw=2.0 if ok else 1.2, ls="-" if ok else ":",
                alpha=0.85, marker="o", ms=3, zorder=3 if ok else 2)
        present = np.flatnonzero(np.isfinite(data[i]))
        for a, b in zip(present[:-1], present[1:]):
            if b - a > 1:  # bridge inactive (conditional) parameters
                ax.plot([a, b], data[i][[a, b]], color=color, lw=1.0, ls="--", alpha=0.6, zorder=2)
    for xi, (tpos, tlab) in zip(x, ticks):
        ax.axvline(xi, color="#444444", lw=1, zorder=1)
        for tp, tl in zip(tpos, tlab):
            ax.annotate(tl, (xi, tp), xytext=(4, 0), textcoords="offset points", fontsize=7.5,
                        va="center", ha="left", color="#333333", zorder=4,
                        bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none",
                              "alpha": 0.7})
    ax.set_xticks(x, labels, fontsize=9)
    ax.set_yticks([])
    ax.set_ylim(-0.06, 1.06)
    ax.set_xlim(-0.2, len(labels) - 0.5)
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    ax.set_title("hyperparameters against the objective (each axis normalised; "
                 "grey dotted: no objective value)", fontsize=10)
    fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, label=metrics[0], pad=0.01)
    return _save(fig, "parallel_coordinates.png")


def _fig_importances(imp: Importances) -> _Image | None:
    if imp.table is None or imp.table.empty:
        return None
    table = imp.table.iloc[::-1]  # most important at the top of a barh
    fig = _figure(11, 1.2 + 0.45 * len(table) * max(1, len(table.columns) / 2))
    ax = fig.subplots()
    k = len(table.columns)
    height = 0.8 / k
    y = np.arange(len(table))
    for j, col in enumerate(table.columns):
        ax.barh(y + (j - (k - 1) / 2) * height, table[col], height=height, label=col)
    ax.set_yticks(y, table.index)
    ax.set(xlabel="importance (normalised to sum 1 per evaluator)", xlim=(0, 1.05),
           title="hyperparameter importances")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, "importances.png")


def _fig_pareto(metrics: list[str], modes: list[str], mask: np.ndarray,
                points: list[_Trial]) -> _Image | None:
    if not points:
        return None
    xs = np.array([t.values[metrics[0]] for t in points])
    ys = np.array([t.values[metrics[1]] for t in points])
    fig = _figure(8, 5)
    ax = fig.subplots()
    ax.scatter(xs[~mask], ys[~mask], s=40, color="#9e9e9e", label="dominated", zorder=2)
    ax.scatter(xs[mask], ys[mask], s=90, color="#d62728", edgecolor="black", marker="*",
               label="Pareto-optimal", zorder=3)
    if len(metrics) == 2 and mask.sum() > 1:
        idx = np.argsort(xs[mask])
        ax.plot(xs[mask][idx], ys[mask][idx], color="#d62728", lw=1, alpha=0.6,
                drawstyle="steps-pre" if modes[0] == "max" else "steps-post", zorder=1)
    for t, x, y, on in zip(points, xs, ys, mask):
        if on:
            ax.annotate(t.trial_id, (x, y), xytext=(5, 5), textcoords="offset points", fontsize=8)
    ax.set(xlabel=f"{metrics[0]} ({modes[0]})", ylabel=f"{metrics[1]} ({modes[1]})",
           title="Pareto front" + ("" if len(metrics) == 2 else
                                   f" over all {len(metrics)} objectives, first two shown"))
    ax.margins(0.1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, "pareto.png")


# -------------------------------------------------------------------------- HTML

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:0;
 background:#f5f6f8;color:#1d2330;line-height:1.45}
header{background:#1d2330;color:#fff;padding:18px 32px}
header h1{margin:0;font-size:1.5em} header p{margin:4px 0 0;color:#c9ced8;font-size:.9em}
nav{padding:8px 32px;background:#e8ebf0;font-size:.9em} nav a{margin-right:14px;color:#2451a6}
main{max-width:1180px;margin:0 auto;padding:8px 24px 40px}
section{background:#fff;border-radius:8px;box-shadow:0 1px 3px rgba(0,0,0,.08);margin:18px 0;
 padding:6px 22px 18px}
h2{font-size:1.2em;border-bottom:1px solid #e3e6eb;padding-bottom:6px}
img{max-width:100%;height:auto;display:block;margin:8px auto}
table{border-collapse:collapse;font-size:.85em;margin:8px 0;width:auto}
th,td{padding:4px 10px;border-bottom:1px solid #e3e6eb;text-align:right;white-space:nowrap}
th{background:#f0f2f5;text-align:center} td.text,th.text{text-align:left}
tr.pareto td{background:#fff1f0} .muted{color:#6b7280;font-size:.88em}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:.8em;color:#fff}
.completed{background:#1f77b4}.stopped-early{background:#ff7f0e}.failed{background:#d62728}
.unfinished{background:#7f7f7f}
.note{background:#fff8e1;border-left:4px solid #f0b429;padding:6px 10px;margin:6px 0;font-size:.9em}
dl{display:grid;grid-template-columns:max-content auto;gap:2px 16px;font-size:.92em}
dt{font-weight:600} dd{margin:0}
#check{display:none}
"""

# Records, once the page has loaded, how many images decoded and any script, resource or
# policy error, into <div id="check"> (read back by a headless browser's --dump-dom).
_CHECK_SCRIPT = """
(function () {
  var errors = [];
  function mark(loaded) {
    var el = document.getElementById('check');
    if (!el) return;
    var imgs = document.images, ok = 0;
    for (var i = 0; i < imgs.length; i++) {
      if (imgs[i].complete && imgs[i].naturalWidth > 0) ok++;
    }
    el.setAttribute('data-images-ok', ok + '/' + imgs.length);
    el.setAttribute('data-errors', String(errors.length));
    if (loaded) el.setAttribute('data-loaded', '1');
    el.textContent = errors.join('\\n');
  }
  window.onerror = function (msg, src, line) {
    errors.push('error: ' + msg + ' (' + src + ':' + line + ')'); mark(false);
  };
  window.addEventListener('error', function (e) {
    var t = e.target;
    if (t && t !== window) { errors.push('failed to load: ' + (t.src || t.href || t.tagName)); mark(false); }
  }, true);
  document.addEventListener('securitypolicyviolation', function (e) {
    errors.push('blocked by the content security policy: ' + e.blockedURI); mark(false);
  });
  var consoleError = console.error;
  console.error = function () {
    errors.push('console.error: ' + Array.prototype.join.call(arguments, ' ')); mark(false);
    return consoleError.apply(console, arguments);
  };
  window.addEventListener('load', function () { mark(true); });
})();
"""

_CSP = ("default-src 'none'; img-src data: 'self'; style-src 'unsafe-inline'; "
        "script-src 'unsafe-inline'; base-uri 'none'; form-action 'none'")


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (float, np.floating)):
        return "—" if not math.isfinite(value) else f"{value:.4g}"
    return str(value)


def _table(header: list[str], rows: list[list[Any]], classes: list[str] | None = None,
           text_cols: tuple[int, ...] = (0,)) -> str:
    def cell(tag, i, v, raw=False):
        cls = ' class="text"' if i in text_cols or not isinstance(v, (int, float, np.number)) else ""
        return f"<{tag}{cls}>{v if raw else _e(_fmt(v))}</{tag}>"

    head = "".join(f'<th class="text">{_e(h)}</th>' if i in text_cols else f"<th>{_e(h)}</th>"
                   for i, h in enumerate(header))
    body = []
    for r, row in enumerate(rows):
        cls = f' class="{classes[r]}"' if classes and classes[r] else ""
        cells = "".join(cell("td", i, v, raw=isinstance(v, _Raw)) for i, v in enumerate(row))
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


class _Raw(str):
    """Trusted HTML (already escaped) for a table cell."""


def _badge(outcome_: str) -> _Raw:
    return _Raw(f'<span class="badge {outcome_.replace(" ", "-")}">{_e(outcome_)}</span>')


def _img(image: _Image | None, alt: str) -> str:
    if image is None:
        return f'<p class="muted">(no data to plot: {_e(alt)})</p>'
    data = base64.b64encode(image.data).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{_e(alt)}" title="{_e(image.name)}">'


def _notes(notes: list[str]) -> str:
    return "".join(f'<div class="note">{_e(n)}</div>' for n in notes)


def write_report(results: "Results", out_dir: Path | str) -> Path:
    """Write ``out_dir/index.html`` (self-contained) and the figures as PNGs; return the HTML path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    spec = results.spec
    space = spec.search_space()
    metrics, modes = spec.objective.metrics, spec.objective.modes
    metric, mode = metrics[0], modes[0]
    planned = spec.training.epochs
    trials = _collect(results)
    searched = [n for n, p in space if not isinstance(p, FixedParam)]

    images: list[_Image] = []

    def keep(image: _Image | None) -> _Image | None:
        if image is not None:
            images.append(image)
        return image

    sections: list[tuple[str, str, str]] = []  # (id, title, body html)

    # summary
    counts = {o: sum(t.outcome == o for t in trials) for o in _OUTCOME_STYLE}
    board = results.leaderboard()
    best = board.iloc[0] if not board.empty else None
    items = [
        ("experiment", spec.name), ("stored at", str(results.where.path)),
        ("searcher / scheduler", f"{spec.searcher.name} / {spec.scheduler.name}"),
        ("objective", ", ".join(f"{m} ({md})" for m, md in zip(metrics, modes))),
        ("planned epochs per trial", planned),
        ("trials", f"{len(trials)} of {spec.num_trials} planned: " + ", ".join(
            f"{n} {o}" for o, n in counts.items() if n) if trials else "none"),
        ("search space", "; ".join(space.describe())),
    ]
    if best is not None:
        items.append((f"best {metric}", f"{_fmt(float(best[metric]))} (trial {best['trial_id']})"))
        cfg = {c.removeprefix("config/"): best[c] for c in board.columns
               if c.startswith("config/") and pd.notna(best[c])}
        items.append(("best config", ", ".join(f"{k}={_fmt(v)}" for k, v in cfg.items())))
    body = "<dl>" + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in items) + "</dl>"
    if not trials:
        body += _notes(["the experiment has no trials yet"])
    sections.append(("summary", "Summary", body))

    # best so far
    img = keep(_fig_best_so_far(trials, metric, mode))
    sections.append(("best-so-far", "Best so far", _img(img, f"best {metric} so far") + (
        f'<p class="muted">Left: every epoch report of every trial in wall-clock order, and the '
        f'best {_e(metric)} seen up to then. Right: each trial\'s best {_e(metric)} in the order '
        f'trials finished.' + (" Multi-objective run: the first objective is shown."
                                if spec.objective.multi else "") + "</p>")))

    # learning curves + per-trial outcome table
    img = keep(_fig_learning_curves(trials, metric, planned))
    rows, classes = [], []
    for t in trials:
        rows.append([t.trial_id, _badge(t.outcome), t.status, t.epochs,
                     *[t.values[m] for m in metrics], t.error or ""])
        classes.append("")
    stopped = counts[STOPPED]
    silent = [t.trial_id for t in trials if t.outcome == FAILED and metric not in t.history]
    body = _img(img, "learning curves") + (
        f'<p class="muted">A trial is <b>stopped early</b> when the scheduler ended it '
        f'(TERMINATED) before the planned {planned} epochs: dashed line, × at its last epoch '
        f'({stopped} trial{"s" if stopped != 1 else ""}). <b>Failed</b> trials (ERROR) are red '
        f'and dotted.' + (f' Failed before reporting an epoch (no curve): {_e(", ".join(silent))}.'
                        if silent else "") + "</p>")
    body += _table(["trial", "outcome", "status", "epochs", *metrics, "error"], rows, classes,
                   text_cols=(0, 1, 2, 4 + len(metrics)))
    sections.append(("learning-curves", "Learning curves", body))

    # parallel coordinates
    img = keep(_fig_parallel(trials, space, metrics, modes))
    sections.append(("parallel-coordinates", "Parallel coordinates", _img(
        img, "parallel coordinates") + '<p class="muted">One line per trial, coloured by '
        f'{_e(metric)}. Numeric axes span the searched range (log-scaled where the space is); '
        'categorical values sit at evenly spaced positions; a thin dashed line bridges a '
        'conditional parameter that was inactive in the trial.</p>'))

    # importances
    finished = [t for t in trials if t.status == "TERMINATED"]
    try:
        imp = importances(space, [t.config for t in finished],
                          [[t.values[m] for m in metrics] for t in finished], metrics, modes)
    except Exception as exc:  # noqa: BLE001 - a report never fails on one section
        imp = Importances(None, [f"importances not computed: {type(exc).__name__}: {exc}"], 0)
    img = keep(_fig_importances(imp))
    body = _img(img, "hyperparameter importances") if img else ""
    if imp.table is not None:
        body += _table(["parameter", *imp.table.columns],
                       [[name, *row] for name, row in zip(imp.table.index, imp.table.values.tolist())])
    body += _notes(imp.notes)
    body += (f'<p class="muted">Optuna\'s PED-ANOVA and fANOVA evaluators on an in-memory study '
             f'of the {imp.trials_used} finished trials (those stopped early count with their '
             f'best value). Searched parameters: {_e(", ".join(searched) or "none")}.</p>')
    sections.append(("importances", "Hyperparameter importances", body))

    # top trials
    top = board.head(TOP_N)
    cfg_cols = [c for c in top.columns if c.startswith("config/")]
    header = ["#", "trial", "outcome", "epochs", *metrics,
              *[c.removeprefix("config/") for c in cfg_cols]]
    by_id = {t.trial_id: t for t in trials}
    rows = [[i + 1, r["trial_id"], _badge(by_id[r["trial_id"]].outcome), int(r["epochs"]),
             *[float(r[m]) for m in metrics],
             *[None if pd.isna(r[c]) else r[c] for c in cfg_cols]]
            for i, (_, r) in enumerate(top.iterrows())]
    body = (_table(header, rows, text_cols=(1, 2)) if rows
            else _notes(["no trial reported the objective metric"]))
    body += (f'<p class="muted">Best {min(TOP_N, len(board))} of {len(board)} trials by '
             f'{_e(metric)} ({mode}).</p>')
    sections.append(("top-trials", "Top trials", body))

    # Pareto front
    if spec.objective.multi:
        points = [t for t in finished if all(math.isfinite(t.values[m]) for m in metrics)]
        mask = pareto_mask(np.array([[t.values[m] for m in metrics] for t in points]), modes)
        img = keep(_fig_pareto(metrics, modes, mask, points))
        front = sorted((t for t, on in zip(points, mask) if on), key=lambda t: t.values[metrics[0]],
                       reverse=modes[0] == "max")
        rows = [[t.trial_id, _badge(t.outcome), *[t.values[m] for m in metrics],
                 *[t.config.get(n) for n in searched]] for t in front]
        body = _img(img, "Pareto front")
        body += _table(["trial", "outcome", *metrics, *searched], rows, text_cols=(0, 1)) if rows \
            else _notes(["no finished trial reported every objective"])
        goals = ", ".join(f"{m} {md}" for m, md in zip(metrics, modes))
        body += (f'<p class="muted">{len(front)} Pareto-optimal of {len(points)} finished trials '
                 f'that reported every objective ({_e(goals)}).</p>')
        sections.append(("pareto", "Pareto front", body))

    for image in images:
        write_file(out_dir / image.name, image.data, overwrite=True)
    when = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    nav = "".join(f'<a href="#{sid}">{_e(title)}</a>' for sid, title, _ in sections)
    content = "".join(f'<section id="{sid}"><h2>{_e(title)}</h2>{body}</section>'
                      for sid, title, body in sections)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{_CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(spec.name)}: tuning report</title>
<link rel="icon" href="data:,">
<script>{_CHECK_SCRIPT}</script>
<style>{_CSS}</style></head>
<body><header><h1>{_e(spec.name)}: tuning report</h1>
<p>{_e(results.summary())} · generated {_e(when)}</p></header>
<nav>{nav}</nav>
<main>{content}</main>
<div id="check" data-images-ok="pending" data-errors="0" data-loaded="0"></div>
</body></html>
"""
    index = out_dir / INDEX
    write_file(index, page, overwrite=True)
    return index
