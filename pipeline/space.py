"""The search-space language: typed hyperparameters and conditions.

A space is an ordered collection of parameters. Each parameter has a kind
(``int``, ``float``, ``choice``, ``bool``, ``fixed``) and may be *conditional*:
it is active only when a parent parameter takes one of the given values. The
searcher adapters in :mod:`searchers` translate a :class:`SearchSpace` into
what each Ray Tune search algorithm understands; the trainable only ever sees
the active parameters.

Example:
    >>> from pipeline.space import SearchSpace
    >>> space = SearchSpace.from_dict({
    ...     "layers": {"type": "int", "low": 1, "high": 3},
    ...     "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
    ...     "units_2": {"type": "int", "low": 16, "high": 64, "step": 16,
    ...                 "when": {"layers": [2, 3]}},
    ... })
    >>> space.active({"layers": 1, "lr": 0.01, "units_2": 32})
    {'layers': 1, 'lr': 0.01}
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Annotated, Any, Iterator, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

Scalar = Union[bool, int, float, str, None]


class _Param(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    when: dict[str, list[Scalar]] | None = Field(
        default=None,
        description="Active only when each named parent takes one of the listed values.",
    )

    def grid_values(self) -> list[Any]:  # pragma: no cover - overridden
        raise NotImplementedError

    def rejects(self, value: Any) -> str | None:
        """Why ``value`` is not one this parameter can take (None if it is)."""
        allowed = self.grid_values()
        same = any(v == value and isinstance(v, bool) == isinstance(value, bool) for v in allowed)
        return None if same else f"{value!r} is not one of {allowed}"


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _outside(value: Any, low: float, high: float, integer: bool) -> str | None:
    kind = "an integer" if integer else "a number"
    if not _number(value) or (integer and not float(value).is_integer()):
        return f"{value!r} is not {kind} in [{low}, {high}]"
    if not low <= value <= high:
        return f"{value!r} is outside [{low}, {high}]"
    return None


def _off_grid(p: "IntParam | FloatParam", value: float) -> str | None:
    n = p.n_steps()
    if n is None or abs(p.clipped(value) - value) <= 1e-6 * float(p.step or 1):
        return None
    shown = ", ".join(str(p.step_value(k)) for k in range(min(n, 6))) + (", ..." if n > 6 else "")
    return f"{value!r} is not on the step grid ({shown}: low + k * step)"


class _Number(_Param):
    """What int and float parameters share: a range, on a log scale or in steps."""

    if TYPE_CHECKING:  # the subclasses' fields (declared here, pydantic would order them first)
        low: Any
        high: Any
        step: Any
        log: bool

    def n_steps(self) -> int | None:
        """How many values a stepped parameter takes (``low``, ``low + step``, ... up to
        ``high``); None for one that is continuous (or a plain integer range)."""
        if self.step is None or self.log or (isinstance(self, IntParam) and self.step == 1):
            return None
        return int(math.floor((self.high - self.low) / self.step + 1e-9)) + 1

    def step_value(self, k: int) -> Any:
        """``low + k * step``, inside ``[low, high]`` (a float rounded to 12 digits)."""
        value = self.low + k * (self.step or 1)
        value = value if isinstance(self, IntParam) else round(value, 12)
        return min(max(value, self.low), self.high)

    def steps(self) -> list[Any] | None:
        """Every value of a stepped parameter, in order; None for a continuous one."""
        n = self.n_steps()
        return None if n is None else [self.step_value(k) for k in range(n)]

    def clipped(self, value: float) -> Any:
        """``value`` made one this parameter takes: into ``[low, high]``, onto the step grid
        (ties go up), an ``int`` for an int.

            >>> IntParam(type="int", low=12, high=36, step=8).clipped(40.2)
            36
            >>> IntParam(type="int", low=12, high=40, step=8).clipped(40), IntParam(
            ...     type="int", low=12, high=36, step=8).clipped(16)
            (36, 20)
            >>> FloatParam(type="float", low=0.05, high=0.5, step=0.1).clipped(0.6)
            0.45
            >>> FloatParam(type="float", low=1e-3, high=3e-2, log=True).clipped(9.2e-4)
            0.001
        """
        value = min(max(value, self.low), self.high)
        n = self.n_steps()
        if n is not None:
            return self.step_value(min(math.floor((value - self.low) / self.step + 0.5), n - 1))
        if isinstance(self, IntParam):
            return int(min(max(math.floor(value + 0.5), self.low), self.high))
        return float(value)


class IntParam(_Number):
    type: Literal["int"]
    low: int
    high: int
    step: int = Field(default=1, gt=0)
    log: bool = False
    values_for_grid: list[int] | None = Field(default=None, alias="grid")

    @model_validator(mode="after")
    def _check(self) -> "IntParam":
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must be <= high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError("log scale needs low > 0")
        if self.log and self.step != 1:
            raise ValueError("log scale and step cannot be combined")
        return self

    def grid_values(self) -> list[int]:
        if self.values_for_grid is not None:
            return list(self.values_for_grid)
        return list(range(self.low, self.high + 1, self.step))

    def rejects(self, value: Any) -> str | None:
        return _outside(value, self.low, self.high, integer=True) or _off_grid(self, value)


class FloatParam(_Number):
    type: Literal["float"]
    low: float
    high: float
    log: bool = False
    step: float | None = Field(default=None, gt=0)
    values_for_grid: list[float] | None = Field(default=None, alias="grid")

    @model_validator(mode="after")
    def _check(self) -> "FloatParam":
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must be <= high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError("log scale needs low > 0")
        if self.log and self.step is not None:
            raise ValueError("log scale and step cannot be combined")
        return self

    def grid_values(self) -> list[float]:
        if self.values_for_grid is not None:
            return list(self.values_for_grid)
        steps = self.steps()
        if steps is not None:
            return steps
        raise ValueError(
            "a float needs `step` or `grid` values for grid search"
        )

    def rejects(self, value: Any) -> str | None:
        return _outside(value, self.low, self.high, integer=False) or _off_grid(self, value)


class ChoiceParam(_Param):
    type: Literal["choice"]
    values: list[Scalar] = Field(min_length=1)

    def grid_values(self) -> list[Any]:
        return list(self.values)


class BoolParam(_Param):
    type: Literal["bool"]

    def grid_values(self) -> list[bool]:
        return [False, True]


class FixedParam(_Param):
    type: Literal["fixed"]
    value: Scalar

    def grid_values(self) -> list[Any]:
        return [self.value]


Param = Annotated[
    Union[IntParam, FloatParam, ChoiceParam, BoolParam, FixedParam],
    Field(discriminator="type"),
]
_SPACE_ADAPTER = TypeAdapter(dict[str, Param])


class SearchSpace:
    """An ordered, validated set of named parameters (parents before children)."""

    def __init__(self, params: dict[str, Any]):
        self.params: dict[str, Any] = dict(params)
        self._check_conditions()

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "SearchSpace":
        return cls(_SPACE_ADAPTER.validate_python(raw))

    def _check_conditions(self) -> None:
        seen: list[str] = []
        for name, p in self.params.items():
            for parent, values in (p.when or {}).items():
                if parent not in self.params:
                    raise ValueError(f"{name}.when: unknown parent parameter '{parent}'")
                if parent not in seen:
                    raise ValueError(
                        f"{name}.when: parent '{parent}' must be declared before '{name}'"
                    )
                possible = self.params[parent].grid_values() if not isinstance(
                    self.params[parent], FloatParam) else None
                if possible is not None:
                    bad = [v for v in values if v not in possible]
                    if bad:
                        raise ValueError(
                            f"{name}.when.{parent}: {bad} can never be taken by '{parent}'"
                        )
            seen.append(name)

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        return iter(self.params.items())

    def __len__(self) -> int:
        return len(self.params)

    @property
    def names(self) -> list[str]:
        return list(self.params)

    def is_active(self, name: str, config: dict[str, Any]) -> bool:
        """True when every condition of ``name`` holds (recursively) in ``config``."""
        p = self.params[name]
        for parent, values in (p.when or {}).items():
            if parent not in config or not self.is_active(parent, config):
                return False
            if config[parent] not in values:
                return False
        return True

    def active(self, config: dict[str, Any]) -> dict[str, Any]:
        """The sub-config of active parameters (inactive values are ignored)."""
        return {
            k: v
            for k, v in config.items()
            if k not in self.params or self.is_active(k, config)
        }

    def grid(self) -> list[dict[str, Any]]:
        """Every distinct active configuration of the grid (conditions respected)."""
        configs: list[dict[str, Any]] = [{}]
        for name, p in self.params.items():
            values = p.grid_values()
            expanded: list[dict[str, Any]] = []
            for cfg in configs:
                probe = {**cfg, name: values[0]}
                if self.is_active(name, probe):
                    expanded.extend({**cfg, name: v} for v in values)
                else:
                    expanded.append(cfg)
            configs = expanded
        return configs

    def grid_size(self) -> int:
        return len(self.grid())

    def describe(self) -> list[str]:
        lines = []
        for name, p in self.params.items():
            d = p.model_dump(exclude_none=True, by_alias=True, exclude={"when"})
            kind = d.pop("type")
            extra = ", ".join(f"{k}={v}" for k, v in d.items())
            cond = ""
            if p.when:
                cond = " if " + " and ".join(f"{k} in {v}" for k, v in p.when.items())
            lines.append(f"{name}: {kind}({extra}){cond}")
        return lines
