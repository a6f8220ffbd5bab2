"""Front doors for code written against other tuning libraries.

Change one import line and the same code runs on this pipeline (Ray Tune
trials in parallel, ASHA/HyperBand/median early stopping, durable results):

* ``from pipeline.compat import keras_tuner as kt`` -- KerasTuner's
  ``RandomSearch``, ``GridSearch``, ``BayesianOptimization``, ``Hyperband``,
  ``HyperParameters``, ``HyperModel`` and ``Objective``
  (:mod:`pipeline.compat.keras_tuner`);
* ``from pipeline.compat import optuna`` -- Optuna's ``create_study`` /
  ``study.optimize`` with define-by-run objectives, the user's own samplers,
  and pruners mapped onto Tune schedulers (:mod:`pipeline.compat.optuna`).

The submodules are imported on first use; importing this package is cheap.
"""

__all__ = ["keras_tuner", "optuna"]
