"""Say where ``search()`` is called that state the trials' code changes outside itself is lost.

KerasTuner runs the build function, the ``HyperModel``, a ``run_trial`` override and (a
copy of) each callback in the script's process, so a list they append to or a counter they
bump is the script's. Here they run in Ray workers, and such changes stay there. The
front door reads their code once per search (:mod:`pipeline.compat._driver_state`) and
warns, naming what changes; nothing is refused.
"""

from __future__ import annotations

import warnings
from typing import Any

from pipeline.compat._driver_state import LOST, listed, method_changes, outer_changes
from pipeline.compat._kt_hypermodel import DefaultHyperModel, HyperModel

ADVICE = ("Report what a trial should keep as a metric (the fit's History, or run_trial's "
          "return value: tuner.oracle.trials holds them), or save files or checkpoints to "
          "shared storage.")
_LIBRARIES = ("keras", "tensorflow", "tf_keras")


def lost_changes(tuner: Any, tuner_base: type, callbacks: list[Any]) -> list[str]:
    """"<where> changes `<name>`, ..." for each piece of the trials' code that changes state
    outside itself (the build function, ``Class.method``)."""
    found: list[str] = []

    def note(where: str, names: list[str]) -> None:
        if names:
            found.append(f"{where} changes {listed(names)}")

    hypermodel = tuner.hypermodel
    if isinstance(hypermodel, DefaultHyperModel):
        note("the build function", outer_changes(hypermodel.build_fn))
    elif isinstance(hypermodel, HyperModel):  # KerasTuner keeps one HyperModel: its own state counts
        for method, names in method_changes(hypermodel, HyperModel, lambda n: n in ("build", "fit"),
                                            own_state=True).items():
            note(f"{type(hypermodel).__name__}.{method}", names)
    for method, names in method_changes(tuner, tuner_base, lambda n: n == "run_trial",
                                        own_state=True).items():
        note(f"{type(tuner).__name__}.{method}", names)
    for callback in callbacks:
        # only the user's own methods (Keras' callbacks keep their state on themselves), and
        # not the callback's own attributes: KerasTuner runs a copy of it too
        base = next((k for k in type(callback).__mro__
                     if k.__module__.split(".")[0] in _LIBRARIES), object)
        for method, names in method_changes(callback, base, lambda n: n.startswith("on_"),
                                            own_state=False).items():
            note(f"{type(callback).__name__}.{method}", names)
    return found


def warn_lost_changes(tuner: Any, tuner_base: type, callbacks: list[Any], stacklevel: int) -> None:
    """Warn once, at the user's ``search()`` call, if :func:`lost_changes` finds any."""
    found = lost_changes(tuner, tuner_base, callbacks)
    if found:
        warnings.warn("search(): " + "; ".join(found) + "; " + LOST + " " + ADVICE, UserWarning,
                      stacklevel=stacklevel + 1)
