"""The report's figures, drawn with matplotlib (no pyplot global state) into PNG bytes."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.report._data import COMPLETED, FAILED, STOPPED, UNFINISHED, Importances, _Trial
from pipeline.space import BoolParam, ChoiceParam, FixedParam, IntParam, SearchSpace

_OUTCOME_STYLE = {  # colour, line style, end marker
    COMPLETED: ("#1f77b4", "-", "o"),
    STOPPED: ("#ff7f0e", "--", "x"),
    FAILED: ("#d62728", ":", "X"),
    UNFINISHED: ("#7f7f7f", "-.", "s"),
}


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
    columns: list[Any] = []
    ticks: list[tuple[Any, Any]] = []
    for name in names:
        vals = [t.config.get(name, _MISSING) for t in trials]
        observed = [v for v in vals if v is not _MISSING]
        pos, tpos, tlab = _axis_position(space.params[name], vals, observed)
        columns.append(pos)
        ticks.append((tpos, tlab))
    for metric in metrics:
        scores = np.array([t.values[metric] for t in trials], dtype=float)
        finite = scores[np.isfinite(scores)]
        lo, hi = (finite.min(), finite.max()) if len(finite) else (0.0, 1.0)
        span = hi - lo
        columns.append(list((scores - lo) / span) if span else [0.5 if math.isfinite(v) else math.nan
                                                                for v in scores])
        ticks.append(([0.0, 0.5, 1.0], [f"{lo:.4g}", f"{(lo + hi) / 2:.4g}", f"{hi:.4g}"])
                     if span else ([0.5], [f"{lo:.4g}"]))
    labels = names + [f"{m} ({mode})" for m, mode in zip(metrics, modes)]
    data = np.array(columns, dtype=float).T  # trials x axes
    primary = np.array([t.values[metrics[0]] for t in trials], dtype=float)
    finite = primary[np.isfinite(primary)]
    vmin, vmax = (float(finite.min()), float(finite.max())) if len(finite) else (0.0, 1.0)
    norm = Normalize(vmin - 0.5, vmax + 0.5) if vmin == vmax else Normalize(vmin, vmax)
    cmap = matplotlib.colormaps["viridis" if modes[0] == "max" else "viridis_r"]
    fig = _figure(max(8.0, 1.9 * len(labels) + 2), 4.6)
    ax = fig.subplots()
    x = np.arange(len(labels))
    # worst first, so the best trials are drawn on top
    order = np.argsort(np.where(np.isfinite(primary), primary, -np.inf if modes[0] == "max" else np.inf))
    if modes[0] == "min":
        order = order[::-1]
    for i in order:
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
