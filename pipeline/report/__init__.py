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

from pipeline.report._data import (
    COMPLETED,
    FAILED,
    MIN_TRIALS_FOR_IMPORTANCE,
    STOPPED,
    UNFINISHED,
    Importances,
    importances,
    optuna_distributions,
    outcome,
)
from pipeline.report._html import INDEX, TOP_N, write_report
from pipeline.results import pareto_mask

__all__ = [
    "COMPLETED",
    "FAILED",
    "INDEX",
    "MIN_TRIALS_FOR_IMPORTANCE",
    "STOPPED",
    "TOP_N",
    "UNFINISHED",
    "Importances",
    "importances",
    "optuna_distributions",
    "outcome",
    "pareto_mask",
    "write_report",
]
