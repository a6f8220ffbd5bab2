"""KerasTuner's hyperparameter classes: ``Int``, ``Float``, ``Choice``, ``Boolean``, ``Fixed``.

Each class takes KerasTuner's arguments, refuses what KerasTuner refuses (with the
argument named in the message), and answers KerasTuner's public questions the same
way: ``default``, ``values``, ``random_sample(seed)``, ``prob_to_value(p)`` /
``value_to_prob(v)`` (the cumulative-probability view the tuners sample through),
``repr`` and ``get_config()`` / ``from_config()``.

Inside the pipeline a definition also has its ``kind`` (``int``, ``float``,
``choice``, ``bool``, ``fixed``), its arguments as one dict (``args``) and its
``conditions`` as ``(parent_name, allowed_values)`` tuples; ``get_config()``
writes them as KerasTuner's serialized ``Parent`` conditions, and the constructors
take either form (or KerasTuner's own ``Parent`` objects).
"""

from __future__ import annotations

import math
import random
from typing import Any, Sequence

_SAMPLINGS = ("linear", "log", "reverse_log")


def _conditions(conditions: Any) -> list[tuple[str, tuple]]:
    """``conditions`` as ``(parent, values)`` tuples, from any form KerasTuner or we write."""
    if not conditions:
        return []
    if not isinstance(conditions, (list, tuple)) or (
            len(conditions) == 2 and isinstance(conditions[0], str)):
        conditions = [conditions]  # a single condition
    out = []
    for c in conditions:
        if isinstance(c, dict):  # serialized: {"class_name": "Parent", "config": {...}}
            if c.get("class_name", "Parent") != "Parent":
                raise ValueError(f"only `Parent` conditions are supported, got {c['class_name']!r}")
            c = c.get("config", c)
            name, values = c["name"], c["values"]
        elif isinstance(c, tuple) and len(c) == 2:
            name, values = c
        elif hasattr(c, "name") and hasattr(c, "values"):  # KerasTuner's Parent
            name, values = c.name, c.values
        else:
            raise TypeError(f"a condition must be a (parent_name, values) pair or a `Parent`, "
                            f"got {c!r}")
        out.append((name, tuple(values) if isinstance(values, (list, tuple)) else (values,)))
    return out


def _prob_to_index(prob: float, n: int) -> int:
    """The bucket of ``prob`` among ``n`` equal ones (``prob`` of 1 falls in the last).

    Computed as KerasTuner does (``prob / (1 / n)``, not ``prob * n``: they round apart).
    """
    return min(int(math.floor(prob / (1 / n))), n - 1)


def _index_to_prob(index: float, n: int) -> float:
    return (index + 0.5) * (1 / n)  # the middle of the bucket


def no_protos(call: str) -> NotImplementedError:
    """The error of KerasTuner's protocol-buffer calls, which this front door does not provide.

        >>> Int("units", 8, 64).to_proto()  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        NotImplementedError: Int.to_proto: protocol buffers are not provided by this front door ...
    """
    return NotImplementedError(
        f"{call}: protocol buffers are not provided by this front door (KerasTuner uses them for "
        "its gRPC distributed tuning, which Ray replaces here); use get_config()/from_config() "
        "or kt.serialize()/kt.deserialize()")


class HyperParameter:
    """A hyperparameter's definition: its name, default and conditions (KerasTuner's base class).

    Example:
        >>> hp = Int("units", 8, 64, step=8)
        >>> hp.name, hp.default, hp.kind, hp.random_sample(seed=1)
        ('units', 8, 'int', 16)
        >>> Int.from_config(hp.get_config()).values
        (8, 16, 24, 32, 40, 48, 56, 64)
    """

    kind: str | None = None

    def __init__(self, name: str, default: Any = None, conditions: Any = None):
        self.name = name
        self._default = default
        self.conditions = _conditions(conditions)

    @property
    def default(self) -> Any:
        return self._default

    @property
    def args(self) -> dict[str, Any]:
        """The arguments that define it (without ``name`` and ``conditions``; the default filled in)."""
        return {"default": self.default}

    @property
    def values(self) -> Sequence[Any]:
        raise NotImplementedError(f"{type(self).__name__} has no value set")

    def prob_to_value(self, prob: float) -> Any:
        raise NotImplementedError(f"{type(self).__name__} has no sampling")

    def value_to_prob(self, value: Any) -> float:
        raise NotImplementedError(f"{type(self).__name__} has no sampling")

    def random_sample(self, seed: Any = None) -> Any:
        """A value drawn as KerasTuner draws it (the same value for the same ``seed``)."""
        return self.prob_to_value(float(random.Random(seed).random()))

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "default": self.default,
                "conditions": [{"class_name": "Parent", "config": {"name": p, "values": list(v)}}
                               for p, v in self.conditions]}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "HyperParameter":
        return cls(**config)

    def to_proto(self) -> Any:
        raise no_protos(f"{type(self).__name__}.to_proto")

    @classmethod
    def from_proto(cls, proto: Any) -> "HyperParameter":
        raise no_protos(f"{cls.__name__}.from_proto")

    def with_conditions(self, conditions: list[tuple[str, tuple]]) -> "HyperParameter":
        """A copy under other conditions."""
        other = object.__new__(type(self))
        other.__dict__.update(self.__dict__, conditions=list(conditions))
        return other

    # -- the pipeline's view ----------------------------------------------------------------

    def kt_values(self) -> list[Any]:
        """The finite value set KerasTuner's GridSearch walks."""
        return list(self.values)

    def probe_values(self) -> list[Any]:
        """Values worth building with during discovery (other than the default)."""
        return []


class _Numerical(HyperParameter):
    """``Int`` and ``Float``: a range, an optional step and a sampling scale."""

    def __init__(self, name, min_value, max_value, step=None, sampling="linear", default=None,
                 conditions=None):
        super().__init__(name, default, conditions)
        self.min_value, self.max_value, self.step = min_value, max_value, step
        self.sampling = sampling
        where = f"For HyperParameters.{type(self).__name__}(name='{name}'),"
        if min_value > max_value:
            raise ValueError(f"{where} min_value {min_value} is greater than the max_value "
                             f"{max_value}.")
        if self.sampling not in _SAMPLINGS:
            raise ValueError(f"{where} sampling must be one of {list(_SAMPLINGS)}, "
                             f"got {sampling!r}.")
        if self.sampling != "linear" and min_value <= 0:
            raise ValueError(f"{where} sampling='{self.sampling}' does not support negative "
                             f"values, found min_value: {min_value}.")
        if self.sampling != "linear" and step is not None and step <= 1:
            raise ValueError(f"{where} expected step > 1 with sampling='{self.sampling}' "
                             f"(the step multiplies). Received: step={step}.")

    @staticmethod
    def _sampling(sampling) -> str:
        return "linear" if sampling is None else str(sampling).lower()  # None: KerasTuner's old default

    @property
    def default(self):
        return self.min_value if self._default is None else self._default

    @property
    def args(self):
        return {"min_value": self.min_value, "max_value": self.max_value, "step": self.step,
                "sampling": self.sampling, "default": self.default}

    def get_config(self):
        return {**super().get_config(), "min_value": self.min_value, "max_value": self.max_value,
                "step": self.step, "sampling": self.sampling}

    # continuous scale: prob in [0, 1] <-> value in [min_value, top]
    def _scale(self, prob: float, top: float) -> float:
        lo = self.min_value
        if self.sampling == "linear":
            return lo + prob * (top - lo)
        if self.sampling == "log":
            return lo * math.pow(top / lo, prob)
        return top + lo - lo * math.pow(top / lo, 1 - prob)  # reverse_log: dense near the top

    def _unscale(self, value: float, top: float) -> float:
        lo = self.min_value
        if top == lo:
            return 0.5
        if self.sampling == "linear":
            return (value - lo) / (top - lo)
        if self.sampling == "log":
            return math.log(value / lo) / math.log(top / lo)
        return 1.0 - math.log((top + lo - value) / lo) / math.log(top / lo)

    # with a step: a grid of values, each an equal bucket of probability
    def _grid_size(self) -> int:
        lo, hi, step = self.min_value, self.max_value, self.step
        if self.sampling == "linear":
            return int((hi - lo) // step + 1)
        return int(math.log(hi / lo, step) + 1e-8) + 1

    def _grid_value(self, i: int) -> float:
        lo, hi, step = self.min_value, self.max_value, self.step
        if self.sampling == "linear":
            return lo + i * step
        if self.sampling == "log":
            return lo * math.pow(step, i)
        return hi + lo - lo * math.pow(step, i)

    def _grid_index(self, value: float) -> float:
        lo, hi, step = self.min_value, self.max_value, self.step
        if self.sampling == "linear":
            return (value - lo) // step
        if self.sampling == "log":
            return math.log(value / lo, step)
        return math.log((hi + lo - value) / lo, step)

    def _cast(self, value):
        return value

    @property
    def values(self) -> tuple:
        """The step's grid, or without a step ten values spread over the range."""
        if self.step is None:
            return tuple(sorted({self.prob_to_value(i * 0.1 + 0.05) for i in range(10)}))
        return tuple(self._cast(self._grid_value(i)) for i in range(self._grid_size()))

    def kt_values(self):
        return list(self.values)


def _int_arg(value, arg: str) -> int:
    as_int = int(value)
    if as_int != value:
        raise ValueError(f"{arg} must be an int, Received: {value} of type {type(value)}.")
    return as_int


class Int(_Numerical):
    """An integer in ``[min_value, max_value]`` (both included), KerasTuner's ``Int``.

    ``step`` is the distance between values (``sampling="linear"``, the default, where it is
    1 if not given) or the factor between them (``"log"``, ``"reverse_log"``).

    Example:
        >>> Int("units", 32, 128, step=32).values
        (32, 64, 96, 128)
        >>> Int("batch", 2, 32, step=2, sampling="log").prob_to_value(0.3)
        4
        >>> Int("units", 0.5, 10)
        Traceback (most recent call last):
        ...
        ValueError: min_value must be an int, Received: 0.5 of type <class 'float'>.
    """

    kind = "int"

    def __init__(self, name, min_value, max_value, step=None, sampling="linear", default=None,
                 conditions=None):
        sampling = self._sampling(sampling)
        if step is not None:
            step = _int_arg(step, "step")
        elif sampling == "linear":
            step = 1
        super().__init__(name, _int_arg(min_value, "min_value"), _int_arg(max_value, "max_value"),
                         step, sampling, default, conditions)

    def __repr__(self):
        return (f"Int(name: '{self.name}', min_value: {self.min_value}, max_value: "
                f"{self.max_value}, step: {self.step}, sampling: {self.sampling}, "
                f"default: {self.default})")

    def _cast(self, value):
        return int(value)

    def prob_to_value(self, prob):
        if self.step is None:  # max_value + 1: the top value gets a full bucket
            return int(self._scale(prob, self.max_value + 1))
        return int(self._grid_value(_prob_to_index(prob, self._grid_size())))

    def value_to_prob(self, value):
        if self.step is None:
            return self._unscale(value + 0.5, self.max_value + 1)
        return _index_to_prob(self._grid_index(value), self._grid_size())

    def get_config(self):
        return {**super().get_config(), "default": self._default}

    def probe_values(self):
        """The largest value (a loop over ``range(hp.Int(...))`` declares the most names
        there); for a short range (a layer count) every value: a name can come only from a
        value in between (a ``Lambda`` in the loop reads the loop variable late)."""
        values = self.kt_values() if self.step else []
        if 0 < len(values) <= 6:
            return [v for v in reversed(values) if v != self.default]
        hi = values[-1] if values else self.max_value
        return [hi] if hi != self.default else []


class Float(_Numerical):
    """A float in ``[min_value, max_value]``, KerasTuner's ``Float``.

    Without a step any value of the range can come; with one, ``step`` is the distance
    between values (``sampling="linear"``) or the factor between them.

    Example:
        >>> Float("lr", 0.001, 10, step=10, sampling="log").values
        (0.001, 0.01, 0.1, 1.0, 10.0)
        >>> Float("dropout", 0.0, 0.5).value_to_prob(0.25)
        0.5
    """

    kind = "float"

    def __init__(self, name, min_value, max_value, step=None, sampling="linear", default=None,
                 conditions=None):
        super().__init__(name, float(min_value), float(max_value),
                         None if step is None else float(step), self._sampling(sampling),
                         default, conditions)

    def __repr__(self):
        return (f"Float(name: '{self.name}', min_value: '{self.min_value}', max_value: "
                f"'{self.max_value}', step: '{self.step}', sampling: '{self.sampling}', "
                f"default: '{self.default}')")

    def prob_to_value(self, prob):
        if self.step is None:
            return self._scale(prob, self.max_value)
        return self._grid_value(_prob_to_index(prob, self._grid_size()))

    def value_to_prob(self, value):
        if self.step is None:
            return self._unscale(value, self.max_value)
        return _index_to_prob(self._grid_index(value), self._grid_size())


class Choice(HyperParameter):
    """One of ``values`` (all ``int``, all ``float``, all ``str`` or all ``bool``), KerasTuner's
    ``Choice``; the default is the first value unless given.

    ``ordered`` is True by default for numbers and must be False for strings. As in
    KerasTuner, booleans are stored as the integers 0 and 1.

    Example:
        >>> c = Choice("optimizer", ["adam", "sgd"])
        >>> c.default, c.ordered, c.prob_to_value(0.9), c.value_to_prob("adam")
        ('adam', False, 'sgd', 0.25)
        >>> Choice("units", [8, "16"])
        Traceback (most recent call last):
        ...
        TypeError: A `Choice` can contain only one type of value, found values: [8, '16'] with types ['int', 'str'].
    """

    kind = "choice"

    def __init__(self, name, values, ordered=None, default=None, conditions=None):
        if not values:
            raise ValueError(f"`values` must be provided for `Choice` '{name}'.")
        values = list(values)
        types = sorted({type(v).__name__ for v in values})
        if len(types) > 1:
            raise TypeError(f"A `Choice` can contain only one type of value, found values: "
                            f"{values} with types {types}.")
        if isinstance(values[0], str):
            cast = str
        elif isinstance(values[0], int):  # bool too: KerasTuner keeps 0 and 1
            cast = int
        elif isinstance(values[0], float):
            cast = None
        else:
            raise TypeError(f"A `Choice` can contain only `int`, `float`, `str`, or `bool`, "
                            f"found values: {values} of type {types[0]}.")
        if cast is not None:
            values = [cast(v) for v in values]
            default = None if default is None else cast(default)
        if default is not None and default not in values:
            raise ValueError(f"The default value should be one of the choices. You passed: "
                             f"values={values}, default={default}")
        numeric = cast is not str
        if ordered and not numeric:
            raise ValueError(f"`ordered` must be `False` for non-numeric types (Choice '{name}').")
        super().__init__(name, default, conditions)
        self._values = values
        self.ordered = numeric if ordered is None else ordered

    def __repr__(self):
        return (f"Choice(name: '{self.name}', values: {self._values}, ordered: {self.ordered}, "
                f"default: {self.default})")

    @property
    def values(self) -> list:
        return self._values

    @property
    def default(self):
        return self._values[0] if self._default is None else self._default

    @property
    def args(self):
        return {"values": list(self._values), "ordered": self.ordered, "default": self.default}

    def prob_to_value(self, prob):
        return self._values[_prob_to_index(prob, len(self._values))]

    def value_to_prob(self, value):
        return _index_to_prob(self._values.index(value), len(self._values))

    def get_config(self):
        return {**super().get_config(), "values": list(self._values), "ordered": self.ordered}

    def probe_values(self):
        return [v for v in self._values if v != self.default]


class Boolean(HyperParameter):
    """True or False, KerasTuner's ``Boolean`` (default False).

    Example:
        >>> b = Boolean("shuffle", default=True)
        >>> b.default, b.values, b.prob_to_value(0.2), b.value_to_prob(True)
        (True, (True, False), False, 0.75)
    """

    kind = "bool"

    def __init__(self, name, default=False, conditions=None):
        if default not in (True, False):
            raise ValueError(f"`default` must be a Python boolean. You passed: default={default} "
                             f"(Boolean '{name}')")
        super().__init__(name, bool(default), conditions)

    def __repr__(self):
        return f'Boolean(name: "{self.name}", default: {self.default})'

    @property
    def values(self) -> tuple:
        return (True, False)

    def prob_to_value(self, prob):
        return prob >= 0.5

    def value_to_prob(self, value):
        return 0.75 if value else 0.25

    def kt_values(self):
        return [False, True]

    def probe_values(self):
        return [not self.default]


class Fixed(HyperParameter):
    """A value that is not tuned (``int``, ``float``, ``str`` or ``bool``), KerasTuner's ``Fixed``.

    Example:
        >>> f = Fixed("activation", "relu")
        >>> f.default, f.values, f.random_sample()
        ('relu', ('relu',), 'relu')
        >>> Fixed("units", None)
        Traceback (most recent call last):
        ...
        ValueError: `Fixed` value must be an `int`, `float`, `str`, or `bool`, found None (Fixed 'units').
    """

    kind = "fixed"

    def __init__(self, name, value, conditions=None):
        for kind in (bool, int, str, float):  # bool first: it is an int too
            if isinstance(value, kind):
                value = kind(value)
                break
        else:
            raise ValueError(f"`Fixed` value must be an `int`, `float`, `str`, or `bool`, found "
                             f"{value!r} (Fixed '{name}').")
        super().__init__(name, value, conditions)
        self.value = value

    def __repr__(self):
        return f"Fixed(name: {self.name}, value: {self.value})"

    @property
    def default(self):
        return self.value

    @property
    def args(self):
        return {"value": self.value}

    @property
    def values(self) -> tuple:
        return (self.value,)

    def prob_to_value(self, prob):
        return self.value

    def value_to_prob(self, value):
        return 0.5

    def get_config(self):
        config = super().get_config()
        del config["default"]
        return {**config, "value": self.value}
