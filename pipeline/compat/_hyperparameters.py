"""KerasTuner's ``HyperParameters`` API, recorded into a pipeline search space.

One class plays three parts:

* **recorder** (space discovery on the driver): every ``hp.Int``/``Float``/...
  call registers a definition with the conditions active at that point
  (``conditional_scope`` or ``parent_name``/``parent_values``) and returns the
  default, exactly as KerasTuner's first build does;
* **replayer** (inside a trial): values come from the trial's config; a name the
  discovery never saw returns its default (KerasTuner would register it lazily);
* **result** (``get_best_hyperparameters``): ``.values``/``.get`` of a finished
  trial, and ``hypermodel.build(best_hps)`` rebuilds its model.

The definitions are KerasTuner's hyperparameter classes (``Int``, ``Float``, ...,
in ``_hp_types``); :func:`serialize`/:func:`deserialize` write and read them and
this container as KerasTuner's functions do.

An inactive hyperparameter returns ``None`` and has no entry in ``values``, as
in KerasTuner. :func:`discover` builds the model repeatedly (activating never
active conditional scopes as KerasTuner does, then probing choices, booleans and
integers (every value of a short range, else the largest) for names that only
appear for other values, such
as ``units_2`` inside ``for i in range(hp.Int("layers", 1, 3))``);
:func:`to_space` converts the definitions into the pipeline's space dict.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
from typing import Any, Callable, Iterable

from pipeline.compat._hp_types import Boolean, Choice, Fixed, Float, HyperParameter, Int, no_protos

log = logging.getLogger(__name__)


def _as_list(values: Any) -> tuple:
    if isinstance(values, (list, tuple, set, frozenset)):
        return tuple(values)
    return (values,)


class HyperParameters:
    """KerasTuner-compatible hyperparameter container (see the module docstring).

    Example:
        >>> hp = HyperParameters()
        >>> hp.Int("layers", 1, 3)
        1
        >>> with hp.conditional_scope("layers", [2, 3]):
        ...     hp.Int("units_2", 8, 64, step=8) is None
        True
        >>> hp.values
        {'layers': 1}
    """

    def __init__(self, values: dict[str, Any] | None = None):
        self._defs: dict[str, HyperParameter] = {}
        self._conditions: list[tuple[str, tuple]] = []
        self._name_scopes: list[str] = []
        # Values of the trial being replayed (None: record defaults).
        self._assigned: dict[str, Any] = dict(values or {})
        self.values: dict[str, Any] = {}
        # Condition stacks seen active / inactive during this build (KerasTuner's discovery).
        self.active_scopes: list[list[tuple[str, tuple]]] = []
        self.inactive_scopes: list[list[tuple[str, tuple]]] = []
        self._unknown: list[str] = []  # names a replay did not have values for
        # names declared under active conditions: the same name declared again in another,
        # inactive branch (KerasTuner's alternative definitions) keeps the active one's value
        self._active_names: set[str] = set()

    # -- scopes ---------------------------------------------------------------------------

    def _get_name(self, name: str) -> str:
        return "/".join([*self._name_scopes, name]) if self._name_scopes else name

    @contextlib.contextmanager
    def name_scope(self, name: str):
        self._name_scopes.append(name)
        try:
            yield
        finally:
            self._name_scopes.pop()

    @contextlib.contextmanager
    def conditional_scope(self, parent_name: str, parent_values: Any):
        """Hyperparameters created inside are active only when ``parent_name`` takes one of
        ``parent_values``."""
        parent = self._get_name(parent_name)
        if parent not in self._defs:
            raise ValueError(f"`HyperParameter` named: {parent} not defined.")
        self._conditions.append((parent, _as_list(parent_values)))
        stack = list(self._conditions)
        (self.active_scopes if self._conditions_active(stack) else self.inactive_scopes).append(stack)
        try:
            yield
        finally:
            self._conditions.pop()

    @contextlib.contextmanager
    def _maybe_conditional_scope(self, parent_name, parent_values):
        if parent_name:
            with self.conditional_scope(parent_name, parent_values):
                yield
        else:
            yield

    def _conditions_active(self, conditions: Iterable[tuple[str, tuple]]) -> bool:
        return all(parent in self.values and self.values[parent] in values
                   for parent, values in conditions)

    def is_active(self, hyperparameter: str | HyperParameter) -> bool:
        if isinstance(hyperparameter, HyperParameter):
            return self._conditions_active(hyperparameter.conditions)
        d = self._defs.get(self._get_name(str(hyperparameter)))
        return d is not None and self._conditions_active(d.conditions)

    # -- registration ---------------------------------------------------------------------

    def _retrieve(self, d: HyperParameter) -> Any:
        """Register ``d`` (the first definition of a name is kept) and answer its value."""
        name, conditions = d.name, d.conditions
        if any(parent == name for parent, _ in conditions):
            raise ValueError(f"A conditional `HyperParameter` cannot have the same name as its "
                             f"parent. Found: {name} and parent_name: {name}")
        self._defs.setdefault(name, d)
        if not self._conditions_active(conditions):
            if name not in self._active_names:  # an active definition of the name keeps its value
                self.values.pop(name, None)
            return None
        self._active_names.add(name)
        if d.kind == "fixed":
            value = d.default
        elif name in self._assigned:
            value = self._assigned[name]
        elif name in self.values:  # set by hand (hp.values[name] = ...) or declared before
            value = self.values[name]
        else:
            value = d.default
            if self._assigned:
                self._unknown.append(name)
        self.values[name] = value
        return value

    def _declare(self, cls: type, name: str, parent_name, parent_values, **args: Any) -> Any:
        with self._maybe_conditional_scope(parent_name, parent_values):
            return self._retrieve(cls(self._get_name(name), conditions=list(self._conditions), **args))

    def Int(self, name, min_value, max_value, step=None, sampling="linear", default=None,
            parent_name=None, parent_values=None):
        return self._declare(Int, name, parent_name, parent_values, min_value=min_value,
                             max_value=max_value, step=step, sampling=sampling, default=default)

    def Float(self, name, min_value, max_value, step=None, sampling="linear", default=None,
              parent_name=None, parent_values=None):
        return self._declare(Float, name, parent_name, parent_values, min_value=min_value,
                             max_value=max_value, step=step, sampling=sampling, default=default)

    def Choice(self, name, values, ordered=None, default=None, parent_name=None, parent_values=None):
        return self._declare(Choice, name, parent_name, parent_values, values=values,
                             ordered=ordered, default=default)

    def Boolean(self, name, default=False, parent_name=None, parent_values=None):
        return self._declare(Boolean, name, parent_name, parent_values, default=default)

    def Fixed(self, name, value, parent_name=None, parent_values=None):
        return self._declare(Fixed, name, parent_name, parent_values, value=value)

    # -- access ---------------------------------------------------------------------------

    def get(self, name: str) -> Any:
        name = self._get_name(name)
        if name in self.values:
            return self.values[name]
        if name in self._defs:
            raise ValueError(f"{name} is currently inactive.")
        raise KeyError(f"{name} does not exist.")

    def __getitem__(self, name: str) -> Any:
        return self.get(name)

    def __contains__(self, name: str) -> bool:
        try:
            self.get(name)
            return True
        except (KeyError, ValueError):
            return False

    def merge(self, hps: "HyperParameters | Iterable[HyperParameter]", overwrite: bool = True) -> None:
        """Take the hyperparameters of ``hps`` (and their values) into this container, as
        KerasTuner's ``merge``; ``overwrite=False`` keeps the ones already here.

            >>> hp, other = HyperParameters(), HyperParameters()
            >>> _ = hp.Int("a", 0, 100), other.Fixed("a", 3), other.Choice("d", [1, 2])
            >>> hp.merge(other)
            >>> hp.values
            {'a': 3, 'd': 1}
        """
        if isinstance(hps, HyperParameters):
            defs, values = hps.space, hps.values
        else:
            defs = list(hps)
            values = {d.name: d.default for d in defs}
        for d in defs:
            if d.name in self._defs and not overwrite:
                continue
            self._defs[d.name] = d
            if d.name in values:
                self.values[d.name] = values[d.name]
            elif self._conditions_active(d.conditions):
                self.values[d.name] = d.default

    @property
    def space(self) -> list[HyperParameter]:
        return list(self._defs.values())

    def copy(self) -> "HyperParameters":
        return copy.deepcopy(self)

    def __repr__(self) -> str:
        return f"HyperParameters(values={self.values!r})"

    def get_config(self) -> dict[str, Any]:
        """KerasTuner's layout: the serialized definitions (``space``) and the ``values``."""
        return {"space": [serialize(d) for d in self.space], "values": dict(self.values)}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "HyperParameters":
        hp = cls()
        for d in map(deserialize, config["space"]):
            if not isinstance(d, HyperParameter):
                raise ValueError(f"a HyperParameters config holds hyperparameters, got {d!r}")
            hp._defs[d.name] = d
        hp.values = dict(config["values"])
        return hp

    def to_proto(self) -> Any:
        raise no_protos("HyperParameters.to_proto")

    @classmethod
    def from_proto(cls, proto: Any) -> "HyperParameters":
        raise no_protos("HyperParameters.from_proto")

    @classmethod
    def replay(cls, defs: Iterable[HyperParameter], values: dict[str, Any]) -> "HyperParameters":
        """A container answering with ``values`` (a trial's config) over known definitions."""
        hp = cls(values)
        for d in defs:
            hp._defs[d.name] = d
        hp.values = dict(values)
        return hp

    @classmethod
    def defaults(cls, defs: Iterable[HyperParameter]) -> "HyperParameters":
        """The definitions with the default of each one active under the defaults before it
        (KerasTuner's ``oracle.hyperparameters`` before any trial)."""
        hp = cls.replay(defs, {})
        for d in hp._defs.values():
            if hp._conditions_active(d.conditions):
                hp.values[d.name] = d.default
        return hp


_CLASSES = {c.__name__: c for c in (Int, Float, Choice, Boolean, Fixed, HyperParameter,
                                     HyperParameters)}


def serialize(obj: HyperParameter | HyperParameters) -> dict[str, Any]:
    """KerasTuner's ``serialize``: ``{"class_name": ..., "config": obj.get_config()}``.

        >>> config = serialize(Choice("optimizer", ["adam", "sgd"]))
        >>> config["class_name"], deserialize(config)
        ('Choice', Choice(name: 'optimizer', values: ['adam', 'sgd'], ordered: False, default: adam))
    """
    return {"class_name": type(obj).__name__, "config": obj.get_config()}


def deserialize(config: dict[str, Any]) -> HyperParameter | HyperParameters:
    """The hyperparameter (or ``HyperParameters``) that :func:`serialize` wrote."""
    cls = _CLASSES.get(str(config.get("class_name"))) if isinstance(config, dict) else None
    if cls is None:
        raise ValueError(f"cannot deserialize {config!r}: expected {{'class_name': one of "
                         f"{sorted(_CLASSES)}, 'config': {{...}}}}")
    return cls.from_config(config["config"])


# -- discovery ------------------------------------------------------------------------------


def _merge(registry: dict[str, HyperParameter], new: HyperParameters) -> bool:
    """Add ``new``'s definitions to ``registry``; True when any name was new."""
    grew = False
    for name, d in new._defs.items():
        old = registry.get(name)
        if old is None:
            registry[name] = d
            grew = True
        elif old.conditions != d.conditions:
            registry[name] = _merge_conditions(old, d)
    return grew


def _merge_conditions(old: HyperParameter, new: HyperParameter) -> HyperParameter:
    """One name under two different conditions: the union when it is one parent's values."""
    if (len(old.conditions) == 1 and len(new.conditions) == 1
            and old.conditions[0][0] == new.conditions[0][0]):
        parent = old.conditions[0][0]
        values = tuple(dict.fromkeys([*old.conditions[0][1], *new.conditions[0][1]]))
        return old.with_conditions([(parent, values)])
    if not old.conditions or not new.conditions:
        return old.with_conditions([])
    log.warning("hyperparameter '%s' is declared under different conditions; "
                "it is searched in every trial (inactive values are ignored by the model)", old.name)
    return old.with_conditions([])


def _satisfy(registry: dict[str, HyperParameter], conditions, values: dict[str, Any]) -> dict[str, Any]:
    """``values`` extended so that every condition (and its parents' conditions) holds."""
    out = dict(values)
    for parent, allowed in conditions:
        d = registry.get(parent)
        if d is not None and d.conditions:
            out = _satisfy(registry, d.conditions, out)
        if out.get(parent) not in allowed:
            out[parent] = allowed[0]
    return out


def discover(build: Callable[[HyperParameters], Any],
             declared: HyperParameters | None = None,
             max_builds: int = 48,
             initial: list[str] | None = None) -> dict[str, HyperParameter]:
    """Every hyperparameter ``build`` registers, with its conditions, in declaration order.

    Mirrors KerasTuner: build with defaults, then activate each conditional scope
    that was never active (the names found so far are appended to ``initial`` when it
    is given: KerasTuner's space before its first trial). Then (beyond KerasTuner, which
    discovers the rest lazily during trials) build once per other value of each
    choice/boolean and with the values of each integer that ``Int.probe_values`` names
    (every value of a short range, else the largest), until no new name appears.
    """
    registry: dict[str, HyperParameter] = dict(declared._defs) if declared else {}
    builds = 0
    tried: list[dict[str, Any]] = []

    def run(values: dict[str, Any]) -> HyperParameters:
        nonlocal builds
        builds += 1
        tried.append(values)
        hp = HyperParameters(values)
        for name, d in registry.items():  # declared up front (``hyperparameters=``)
            if declared and name in declared._defs:
                hp._defs[name] = d
                if hp._conditions_active(d.conditions):
                    hp.values[name] = values.get(name, d.default)
        try:
            build(hp)
        except Exception as exc:
            if builds == 1:  # the build with defaults must work, as in KerasTuner
                raise
            # A probe with other values may hit what the user's build refuses (e.g. a
            # kt.errors.FatalError for some sizes): keep what it declared before that; the
            # trial that draws such values fails there, as in KerasTuner.
            log.debug("search-space discovery: build with %s stopped: %r", values, exc)
        _merge(registry, hp)
        return hp

    once_active: list = []
    never_active: list = []
    values: dict[str, Any] = {}
    while builds < max_builds:
        hp = run(values)
        for stack in hp.active_scopes:
            if stack not in once_active:
                once_active.append(stack)
            if stack in never_active:
                never_active.remove(stack)
        for stack in hp.inactive_scopes:
            if stack not in once_active and stack not in never_active:
                never_active.append(stack)
        pending = [v for v in (_satisfy(registry, s, {}) for s in never_active) if v not in tried]
        if not pending:
            break
        values = pending[0]
    if initial is not None:
        initial.extend(registry)

    probed: set[tuple[str, Any]] = set()
    grew = True
    while grew and builds < max_builds:
        grew = False
        for name, d in list(registry.items()):
            for v in d.probe_values():
                if (name, repr(v)) in probed or builds >= max_builds:
                    continue
                probed.add((name, repr(v)))
                before = len(registry)
                run(_satisfy(registry, d.conditions, {name: v}))
                grew = grew or len(registry) > before
    if builds >= max_builds:
        log.warning("search-space discovery stopped after %d builds; names that only appear "
                    "for other values get their defaults", builds)
    return registry


# -- conversion to the pipeline's space language ----------------------------------------------


def _possible(d: HyperParameter) -> list[Any] | None:
    return None if d.kind == "float" and d.args.get("step") is None else d.kt_values()


def _kt_grid(d: HyperParameter, p: dict[str, Any]) -> None:
    """A numeric parameter's GridSearch values as KerasTuner walks them: its values (ten
    spread over the range without a finite step), and its default too where that is not
    one of them (``Float("x", 1, 2)``: 1.0 and the ten, 11 values)."""
    values = d.kt_values()
    if d.default is not None and d.default not in values:
        values = [d.default, *values]
    elif not (p.get("log") or (p["type"] == "float" and not p.get("step"))):
        return  # the parameter's own step grid is KerasTuner's
    if p["type"] == "choice":
        p["values"] = values
    else:
        p["grid"] = values


def to_space(defs: dict[str, HyperParameter], grid: bool = False,
             fixed: Iterable[str] = ()) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """(pipeline space dict, notes) for the definitions.

    ``reverse_log`` sampling has no pipeline equivalent: without a step it is
    searched on a log scale (noted); with a step its exact value set becomes a
    choice. ``grid=True`` gives numeric parameters KerasTuner's GridSearch values
    (:func:`_kt_grid`). Names in ``fixed`` keep their default.
    """
    space: dict[str, dict[str, Any]] = {}
    notes: list[str] = []
    fixed = set(fixed)
    for name, d in defs.items():
        a = d.args
        if name in fixed or d.kind == "fixed":
            p: dict[str, Any] = {"type": "fixed", "value": d.default}
        elif d.kind == "bool":
            p = {"type": "bool"}
        elif d.kind == "choice":
            p = {"type": "choice", "values": list(a["values"])}
        else:
            step, sampling = a.get("step"), a["sampling"]
            if sampling != "linear" and step is not None:
                p = {"type": "choice", "values": d.kt_values()}
            elif d.kind == "int":
                lo, hi = a["min_value"], a["max_value"]
                if sampling == "linear":
                    p = {"type": "int", "low": lo, "high": lo + (hi - lo) // step * step, "step": step}
                else:
                    p = {"type": "int", "low": lo, "high": hi, "log": True}
            else:
                lo, hi = a["min_value"], a["max_value"]
                p = {"type": "float", "low": lo, "high": hi}
                if sampling != "linear":
                    p["log"] = True
                elif step is not None:
                    p["step"] = step
                    p["high"] = round(lo + math.floor((hi - lo) / step + 1e-9) * step, 12)
            if sampling == "reverse_log" and step is None:
                notes.append(f"{name}: sampling='reverse_log' is searched on a log scale")
            if grid:
                _kt_grid(d, p)
        when: dict[str, list[Any]] = {}
        for parent, allowed in d.conditions:
            prev = when.get(parent)
            when[parent] = [v for v in allowed if prev is None or v in prev]
        dropped = False
        for parent, values in list(when.items()):
            parent_def = defs.get(parent)
            if parent not in space or parent_def is None:
                dropped = True
                break
            possible: list[Any] | None
            if space[parent]["type"] == "fixed":
                possible = [space[parent]["value"]]
            else:
                possible = _possible(parent_def)
            if possible is not None:
                when[parent] = [v for v in values if v in possible]
            if not when[parent]:
                dropped = True
        if dropped:
            notes.append(f"{name}: its condition can never hold; left out of the search")
            continue
        if when:
            p["when"] = when
        space[name] = p
    return space, notes
