"""The report's page: escaping, tables, the inline CSS and check script, and
``write_report``, which gathers the data and figures into sections and writes the files."""

from __future__ import annotations

import base64
import datetime as _dt
import html
import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from pipeline.report._data import (
    FAILED,
    OUTCOMES,
    STOPPED,
    Importances,
    _collect,
    _Trial,
    importances,
)
from pipeline.report._figures import (
    _fig_best_so_far,
    _fig_importances,
    _fig_learning_curves,
    _fig_parallel,
    _fig_pareto,
    _Image,
)
from pipeline.results import pareto_mask
from pipeline.safe_io import write_file
from pipeline.space import FixedParam, SearchSpace

if TYPE_CHECKING:
    from pipeline.results import Results
    from pipeline.spec import Spec

INDEX = "index.html"
TOP_N = 10

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
    run = _Run.of(results)
    sections = [
        _summary_section(run),
        _best_so_far_section(run),
        _learning_curves_section(run),
        _parallel_section(run),
        _importances_section(run),
        _top_trials_section(run),
    ]
    if run.spec.objective.multi:
        sections.append(_pareto_section(run))
    for image in run.images:
        write_file(out_dir / image.name, image.data, overwrite=True)
    index = out_dir / INDEX
    write_file(index, _page(run, sections), overwrite=True)
    return index


_Section = tuple[str, str, str]  # (id, title, body html)


@dataclass
class _Run:
    """What the sections share: the stored spec, its trials and leaderboard, the figures so far."""

    results: "Results"
    spec: "Spec"
    space: SearchSpace
    trials: list[_Trial]
    board: pd.DataFrame
    images: list[_Image] = field(default_factory=list)

    @classmethod
    def of(cls, results: "Results") -> "_Run":
        """Read the spec, the trials and the leaderboard of ``results``."""
        spec = results.spec
        space = spec.search_space()
        trials = _collect(results)
        return cls(results, spec, space, trials, results.leaderboard())

    @property
    def metrics(self) -> list[str]:
        """The objective's metrics, the primary first."""
        return self.spec.objective.metrics

    @property
    def modes(self) -> list[str]:
        """Each metric's mode (min or max)."""
        return self.spec.objective.modes

    @property
    def metric(self) -> str:
        """The primary metric: the one figures and rankings use."""
        return self.metrics[0]

    @property
    def mode(self) -> str:
        """The primary metric's mode."""
        return self.modes[0]

    @property
    def planned(self) -> int:
        """The epochs each trial was planned to train."""
        return self.spec.training.epochs

    @cached_property
    def searched(self) -> list[str]:
        """The searched (not fixed) parameters' names."""
        return [n for n, p in self.space if not isinstance(p, FixedParam)]

    @cached_property
    def counts(self) -> dict[str, int]:
        """How many trials ended in each outcome."""
        return {o: sum(t.outcome == o for t in self.trials) for o in OUTCOMES}

    @cached_property
    def finished(self) -> list[_Trial]:
        """The trials Tune ended (TERMINATED): completed or stopped early."""
        return [t for t in self.trials if t.status == "TERMINATED"]

    def keep(self, image: _Image | None) -> _Image | None:
        """Remember a figure to be written next to the page; pass it on."""
        if image is not None:
            self.images.append(image)
        return image


def _summary_section(run: _Run) -> _Section:
    """The experiment at a glance: where, how searched, trial outcomes, the best config."""
    spec, trials, board = run.spec, run.trials, run.board
    best = board.iloc[0] if not board.empty else None
    items = [
        ("experiment", spec.name), ("stored at", str(run.results.where.path)),
        ("searcher / scheduler", f"{spec.searcher.name} / {spec.scheduler.name}"),
        ("objective", ", ".join(f"{m} ({md})" for m, md in zip(run.metrics, run.modes))),
        ("planned epochs per trial", run.planned),
        ("trials", f"{len(trials)} of {spec.num_trials} planned: " + ", ".join(
            f"{n} {o}" for o, n in run.counts.items() if n) if trials else "none"),
        ("search space", "; ".join(run.space.describe())),
    ]
    if best is not None:
        items.append((f"best {run.metric}", f"{_fmt(float(best[run.metric]))} (trial {best['trial_id']})"))
        cfg = {c.removeprefix("config/"): best[c] for c in board.columns
               if c.startswith("config/") and pd.notna(best[c])}
        items.append(("best config", ", ".join(f"{k}={_fmt(v)}" for k, v in cfg.items())))
    body = "<dl>" + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in items) + "</dl>"
    if not trials:
        body += _notes(["the experiment has no trials yet"])
    return ("summary", "Summary", body)


def _best_so_far_section(run: _Run) -> _Section:
    """The best value over time: every epoch report, and each trial's best as trials finished."""
    metric = run.metric
    img = run.keep(_fig_best_so_far(run.trials, metric, run.mode))
    return ("best-so-far", "Best so far", _img(img, f"best {metric} so far") + (
        f'<p class="muted">Left: every epoch report of every trial in wall-clock order, and the '
        f'best {_e(metric)} seen up to then. Right: each trial\'s best {_e(metric)} in the order '
        f'trials finished.' + (" Multi-objective run: the first objective is shown."
                                if run.spec.objective.multi else "") + "</p>"))


def _learning_curves_section(run: _Run) -> _Section:
    """Every trial's learning curve, then a table of each trial's outcome and values."""
    metric, planned, trials = run.metric, run.planned, run.trials
    img = run.keep(_fig_learning_curves(trials, metric, planned))
    stopped = run.counts[STOPPED]
    silent = [t.trial_id for t in trials if t.outcome == FAILED and metric not in t.history]
    body = _img(img, "learning curves") + (
        f'<p class="muted">A trial is <b>stopped early</b> when the scheduler ended it '
        f'(TERMINATED) before the planned {planned} epochs: dashed line, × at its last epoch '
        f'({stopped} trial{"s" if stopped != 1 else ""}). <b>Failed</b> trials (ERROR) are red '
        f'and dotted.' + (f' Failed before reporting an epoch (no curve): {_e(", ".join(silent))}.'
                        if silent else "") + "</p>")
    body += _outcome_table(run)
    return ("learning-curves", "Learning curves", body)


def _outcome_table(run: _Run) -> str:
    """One row per trial: its outcome, status, epochs, objective values and error."""
    metrics = run.metrics
    rows, classes = [], []
    for t in run.trials:
        rows.append([t.trial_id, _badge(t.outcome), t.status, t.epochs,
                     *[t.values[m] for m in metrics], t.error or ""])
        classes.append("")
    return _table(["trial", "outcome", "status", "epochs", *metrics, "error"], rows, classes,
                  text_cols=(0, 1, 2, 4 + len(metrics)))


def _parallel_section(run: _Run) -> _Section:
    """The parallel-coordinates figure: one line per trial across the searched parameters."""
    img = run.keep(_fig_parallel(run.trials, run.space, run.metrics, run.modes))
    return ("parallel-coordinates", "Parallel coordinates", _img(
        img, "parallel coordinates") + '<p class="muted">One line per trial, coloured by '
        f'{_e(run.metric)}. Numeric axes span the searched range (log-scaled where the space is); '
        'categorical values sit at evenly spaced positions; a thin dashed line bridges a '
        'conditional parameter that was inactive in the trial.</p>')


def _importances_section(run: _Run) -> _Section:
    """Hyperparameter importances of the finished trials: figure, table and notes."""
    imp = _importances_of(run)
    img = run.keep(_fig_importances(imp))
    body = _img(img, "hyperparameter importances") if img else ""
    if imp.table is not None:
        body += _table(["parameter", *imp.table.columns],
                       [[name, *row] for name, row in zip(imp.table.index, imp.table.values.tolist())])
    body += _notes(imp.notes)
    body += (f'<p class="muted">Optuna\'s PED-ANOVA and fANOVA evaluators on an in-memory study '
             f'of the {imp.trials_used} finished trials (those stopped early count with their '
             f'best value). Searched parameters: {_e(", ".join(run.searched) or "none")}.</p>')
    return ("importances", "Hyperparameter importances", body)


def _importances_of(run: _Run) -> Importances:
    """Importances of the finished trials; a failure becomes a note, never an error."""
    metrics, finished = run.metrics, run.finished
    try:
        return importances(run.space, [t.config for t in finished],
                           [[t.values[m] for m in metrics] for t in finished], metrics, run.modes)
    except Exception as exc:  # noqa: BLE001 - a report never fails on one section
        return Importances(None, [f"importances not computed: {type(exc).__name__}: {exc}"], 0)


def _top_trials_section(run: _Run) -> _Section:
    """The leaderboard's best ``TOP_N`` trials with their values and configs."""
    board, metrics = run.board, run.metrics
    top = board.head(TOP_N)
    cfg_cols = [c for c in top.columns if c.startswith("config/")]
    header = ["#", "trial", "outcome", "epochs", *metrics,
              *[c.removeprefix("config/") for c in cfg_cols]]
    by_id = {t.trial_id: t for t in run.trials}
    rows = [[i + 1, r["trial_id"], _badge(by_id[r["trial_id"]].outcome), int(r["epochs"]),
             *[float(r[m]) for m in metrics],
             *[None if pd.isna(r[c]) else r[c] for c in cfg_cols]]
            for i, (_, r) in enumerate(top.iterrows())]
    body = (_table(header, rows, text_cols=(1, 2)) if rows
            else _notes(["no trial reported the objective metric"]))
    body += (f'<p class="muted">Best {min(TOP_N, len(board))} of {len(board)} trials by '
             f'{_e(run.metric)} ({run.mode}).</p>')
    return ("top-trials", "Top trials", body)


def _pareto_section(run: _Run) -> _Section:
    """Multi-objective runs: the Pareto front of the finished trials, figure and table."""
    metrics, modes, searched = run.metrics, run.modes, run.searched
    points = [t for t in run.finished if all(math.isfinite(t.values[m]) for m in metrics)]
    mask = pareto_mask(np.array([[t.values[m] for m in metrics] for t in points]), modes)
    img = run.keep(_fig_pareto(metrics, modes, mask, points))
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
    return ("pareto", "Pareto front", body)


def _page(run: _Run, sections: list[_Section]) -> str:
    """The whole page: head (policy, script, style), header, navigation and the sections."""
    when = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    name = run.spec.name
    nav = "".join(f'<a href="#{sid}">{_e(title)}</a>' for sid, title, _ in sections)
    content = "".join(f'<section id="{sid}"><h2>{_e(title)}</h2>{body}</section>'
                      for sid, title, body in sections)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{_CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(name)}: tuning report</title>
<link rel="icon" href="data:,">
<script>{_CHECK_SCRIPT}</script>
<style>{_CSS}</style></head>
<body><header><h1>{_e(name)}: tuning report</h1>
<p>{_e(run.results.summary())} · generated {_e(when)}</p></header>
<nav>{nav}</nav>
<main>{content}</main>
<div id="check" data-images-ok="pending" data-errors="0" data-loaded="0"></div>
</body></html>
"""
