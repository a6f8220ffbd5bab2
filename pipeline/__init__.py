"""Hyperparameter tuning of Keras models on Ray Tune.

spec -> search space -> searcher + scheduler -> trainable -> results.

Example::

    import pipeline
    spec = pipeline.load_spec("examples/digits.yaml")
    results = pipeline.run(spec)
    print(results.best_config, results.best_value)
    model = results.best_model()
"""

import os as _os

# Quiet TensorFlow's C++ start-up chatter in the driver and the Ray workers it starts.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__all__ = ["Spec", "SpecError", "load_spec", "parse_spec", "run", "Results"]

# Imported on first use: the front doors (pipeline.compat) import this package, and a
# script using one need not pay for the spec's validation stack (pydantic, YAML).
_LAZY = {"Spec": "pipeline.spec", "SpecError": "pipeline.spec", "load_spec": "pipeline.spec",
         "parse_spec": "pipeline.spec", "Results": "pipeline.results"}


def run(spec, **kwargs):
    """Run a :class:`Spec` (or a dict / YAML path) and return :class:`Results`."""
    from pipeline.runner import run as _run
    from pipeline.spec import Spec, load_spec, parse_spec

    if isinstance(spec, dict):
        spec = parse_spec(spec)
    elif not isinstance(spec, Spec):
        spec = load_spec(spec)
    return _run(spec, **kwargs)


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(name)
