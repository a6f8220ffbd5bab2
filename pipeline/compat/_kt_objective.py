"""KerasTuner's objectives for the KerasTuner front door: :class:`Objective`,
:class:`MultiObjective`, and the direction KerasTuner infers from a metric's name."""

from __future__ import annotations

from typing import Any

from pipeline.compat._kt_trial import MULTI_OBJECTIVE


class Objective:
    """The metric to optimize and its direction (``"min"`` or ``"max"``)."""

    def __init__(self, name: str, direction: str):
        if direction not in ("min", "max"):
            raise ValueError(f"Objective direction must be 'min' or 'max', got {direction!r}")
        self.name, self.direction = name, direction

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Objective)
                and (self.name, self.direction) == (other.name, other.direction))

    def __str__(self) -> str:
        return f'Objective(name="{self.name}", direction="{self.direction}")'

    __repr__ = __str__


class MultiObjective(Objective):
    """Several objectives as one (KerasTuner's ``oracle.objective`` for a list): named
    ``"multi_objective"``, minimized; ``objectives`` holds each one."""

    def __init__(self, objectives: list[Objective]):
        super().__init__(MULTI_OBJECTIVE, "min")
        self.objectives = list(objectives)

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, MultiObjective)
                and sorted(map(str, self.objectives)) == sorted(map(str, other.objectives)))

    def __str__(self) -> str:
        return "Multi" + super().__str__() + f": [{', '.join(map(str, self.objectives))}]"

    __repr__ = __str__


def _as_objective(objective: Any, has_validation: bool) -> Objective:
    """The one objective ``tuner.oracle.objective`` shows: an :class:`Objective`, or a
    :class:`MultiObjective` for several."""
    objectives = _objectives(objective, has_validation)
    return objectives[0] if len(objectives) == 1 else MultiObjective(objectives)


_MAX_METRICS = {
    "Accuracy", "BinaryAccuracy", "CategoricalAccuracy", "SparseCategoricalAccuracy",
    "TopKCategoricalAccuracy", "SparseTopKCategoricalAccuracy", "TruePositives",
    "TrueNegatives", "Precision", "Recall", "AUC", "SensitivityAtSpecificity",
    "SpecificityAtSensitivity",
    "accuracy", "categorical_accuracy", "binary_accuracy", "sparse_categorical_accuracy",
}


def infer_direction(metric: str) -> str | None:
    """KerasTuner's rule: losses are minimized, accuracy-like metrics maximized."""
    name = metric.removeprefix("val_").removeprefix("weighted_")
    if name in {"loss", "crossentropy", "ce"}:
        return "min"
    if name == "acc" or name in _MAX_METRICS:
        return "max"
    import keras

    for module in (keras.metrics, keras.losses):  # KerasTuner: metrics first, then losses
        try:
            obj = module.deserialize(name)
            break
        except Exception:  # noqa: BLE001 - unknown names raise various errors
            continue
    else:
        return None
    if isinstance(obj, (keras.metrics.Metric, keras.losses.Loss)):
        found = type(obj).__name__
        if found == "MeanMetricWrapper":
            found = getattr(getattr(obj, "_fn", None), "__name__", found)
    else:
        found = obj if isinstance(obj, str) else getattr(obj, "__name__", "")
    if found in _MAX_METRICS:
        return "max"
    if hasattr(keras.metrics, found) or hasattr(keras.losses, found):
        return "min"
    return None


def _objectives(objective: Any, has_validation: bool) -> list[Objective]:
    if objective is None:
        return [Objective("val_loss" if has_validation else "loss", "min")]
    if isinstance(objective, (list, tuple)):
        return [o for item in objective for o in _objectives(item, has_validation)]
    if isinstance(objective, Objective):
        return [objective]
    if not isinstance(objective, str):
        raise TypeError("`objective` not understood, expected str or `Objective` object, "
                        f"found: {objective}")
    direction = infer_direction(objective)
    if direction is None:
        raise ValueError(
            f'Could not infer optimization direction ("min" or "max") for unknown metric '
            f'"{objective}". Please specify the objective as a `keras_tuner.Objective`, for '
            f'example `keras_tuner.Objective("{objective}", direction="min")`.')
    return [Objective(objective, direction)]
