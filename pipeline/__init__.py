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

from pipeline.spec import Spec, SpecError, load_spec, parse_spec

__all__ = ["Spec", "SpecError", "load_spec", "parse_spec", "run", "Results"]


def run(spec, **kwargs):
    """Run a :class:`Spec` (or a dict / YAML path) and return :class:`Results`."""
    from pipeline.runner import run as _run

    if isinstance(spec, dict):
        spec = parse_spec(spec)
    elif not isinstance(spec, Spec):
        spec = load_spec(spec)
    return _run(spec, **kwargs)


def __getattr__(name):
    if name == "Results":
        from pipeline.results import Results

        return Results
    raise AttributeError(name)
