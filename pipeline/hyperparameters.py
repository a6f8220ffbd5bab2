"""The built-in hyperparameters' rules, without Keras: their types and enumerated values.

One place for what spec validation checks (:func:`check_hyperparameters`, before
anything starts) and what the layers implement (:mod:`pipeline.models`,
:mod:`pipeline.preprocessing`, :mod:`pipeline.optimizers`).

Example:
    >>> check_hyperparameters({"scaling": ["zscore"], "units": [8]}, ["mlp"])
    ["scaling: unknown value 'zscore' (known: none, standard, minmax)"]
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from pipeline.optimizers import SCHEDULES

# Enumerated feature-engineering values (pipeline.preprocessing implements them).
SCALINGS = ("none", "standard", "minmax")
FLIP_MODES = {True: "horizontal", "true": "horizontal", "horizontal": "horizontal",
              "vertical": "vertical", "horizontal_and_vertical": "horizontal_and_vertical"}
NO_FLIP = (None, False, "none", "false", 0)


# Types of the built-in hyperparameters, checked at validation (a wrong one would only
# fail inside a trial). The trainer's (optimizer, schedule, batch) apply to every builder.
_TRAINER_TYPES = {"learning_rate": float, "momentum": float, "weight_decay": float,
                  "lr_decay_rate": float, "lr_min_ratio": float, "nesterov": bool,
                  "batch_size": int, "lr_decay_steps": int, "lr_step_epochs": int}
_BUILDER_TYPES = {"layers": int, "units": int, "conv_layers": int, "filters": int,
                  "kernel_size": int, "dense_units": int, "select_k": int, "dropout": float,
                  "l2": float, "noise_std": float, "shift": float, "batchnorm": bool}
_NULLABLE = {"dropout", "l2", "select_k", "noise_std", "shift", "weight_decay", "lr_decay_steps",
             "lr_step_epochs"}


def _type_of(name: str, builtin: bool) -> type | None:
    if name in _TRAINER_TYPES:
        return _TRAINER_TYPES[name]
    if not builtin:
        return None
    if name.startswith(("units_", "filters_")) and name.split("_", 1)[1].isdigit():
        return int
    return _BUILDER_TYPES.get(name)


def _type_error(name: str, value: Any, builtin: bool) -> str | None:
    """Why ``value`` cannot be the built-in hyperparameter ``name`` (None if it can)."""
    kind = _type_of(name, builtin)
    if kind is None or (value is None and name in _NULLABLE):
        return None
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is bool and not isinstance(value, bool):
        return f"{name}: {value!r} is not a boolean (true or false)"
    if kind is int and not (number and float(value).is_integer()):
        return f"{name}: {value!r} is not an integer"
    if kind is float and not number:
        return f"{name}: {value!r} is not a number"
    return None


def check_hyperparameters(values: Mapping[str, Iterable[Any]], builders: Iterable[str] = (),
                          builtin: bool = True) -> list[str]:
    """``name: message`` lines for built-in hyperparameters with unknown values or wrong types.

    ``values`` maps a hyperparameter to the values it may take (a fixed option:
    one value; a searched choice: its values); ``builders`` are the builders in
    play; ``builtin`` says they are all built-in (a user builder's own names,
    ``units`` say, may mean anything, so only the trainer's are type-checked).
    Needs no Keras: a spec validator may call it before anything starts.
    """
    allowed = {"lr_schedule": SCHEDULES, "scaling": SCALINGS}
    builders = set(builders)
    errors: list[str] = []
    for name, options in values.items():
        for value in options:
            wrong_type = _type_error(name, value, builtin)
            if wrong_type:
                errors.append(wrong_type)
            elif name in allowed and str(value).lower() not in allowed[name]:
                errors.append(f"{name}: unknown value '{value}' (known: {', '.join(allowed[name])})")
            elif name == "flip" and value not in NO_FLIP and (
                    str(value).lower() if isinstance(value, str) else value) not in FLIP_MODES:
                errors.append(f"flip: unknown value '{value}' (known: false, true, horizontal, "
                              "vertical, horizontal_and_vertical)")
            elif name == "select_k" and value and "cnn" in builders:
                errors.append("select_k: feature selection applies to the mlp builder only")
    return errors
