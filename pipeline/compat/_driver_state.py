"""Which state outside the user's trial code that code changes (and so loses, on Ray).

Optuna's examples often keep a list of scores, a dict of models or a counter next to
the objective and change it from inside; KerasTuner code does the same from a build
function, a ``HyperModel``, a ``run_trial`` override or a Keras callback. With the front
doors each trial runs in another process, so such a change stays in that process and the
script's copy never sees it. :func:`outer_changes` reads the function's bytecode (the
common forms only: an assignment to a ``global`` or ``nonlocal`` name, an item or
attribute set on an outer object, a call of a mutating method such as ``append`` or
``update``, the same on ``self`` in a callable object's ``__call__``) so that the front
door can say so once, where ``optimize`` or ``search`` is called; :func:`method_changes`
does it for the methods a class overrides. ``optimize``'s callbacks are not checked: they
run on the driver (:mod:`pipeline.compat._optuna_driver`), so what they change is the script's.

>>> scores = []
>>> def objective(trial):
...     value = 1.0
...     scores.append(value)
...     return value
>>> outer_changes(objective)
['scores']
>>> outer_changes(lambda trial: sum(scores))
[]
>>> def builds(hp):  # its own names, even those a nested function or class uses, are its own
...     import keras
...     seen = []
...     class Net(keras.Model):
...         built_after = len(seen)
...     seen.append(1)
...     return Net
>>> outer_changes(builds)
[]
"""

from __future__ import annotations

import dis
import inspect
from typing import Any, Callable

# methods that change a container or object in place
MUTATING = frozenset({
    "append", "extend", "insert", "remove", "pop", "popitem", "clear", "sort", "reverse",
    "update", "setdefault", "add", "discard", "difference_update", "intersection_update",
    "symmetric_difference_update", "appendleft", "extendleft", "__setitem__", "__delitem__",
    "write", "put",
})
_LOADS = {"LOAD_GLOBAL", "LOAD_DEREF", "LOAD_NAME", "LOAD_CLASSDEREF"}
_KEY_OPS = {"LOAD_FAST", "LOAD_CONST", "LOAD_ATTR", "LOAD_GLOBAL", "LOAD_DEREF", "BINARY_SUBSCR",
            "LOAD_METHOD", "PRECALL", "CALL", "PUSH_NULL", "CACHE", "EXTENDED_ARG",
            "LOAD_FAST_LOAD_FAST", "LOAD_FAST_CHECK", "LOAD_FAST_BORROW"}


def _target(func: Callable) -> tuple[Any, str | None]:
    """(function whose code to read, name of its ``self`` argument if a method)."""
    if inspect.isfunction(func):
        return func, None
    if inspect.ismethod(func):
        return func.__func__, func.__func__.__code__.co_varnames[0]
    call = getattr(type(func), "__call__", None)
    if inspect.isfunction(call):  # a callable object: its __call__, with self
        return call, call.__code__.co_varnames[0]
    return None, None


def _name(ins: dis.Instruction) -> str:
    return str(ins.argval).removesuffix(" + NULL").removeprefix("NULL + ")


def outer_changes(func: Callable) -> list[str]:
    """Names outside ``func`` (globals, closure cells, ``self.`` attributes) it changes."""
    code_owner, self_name = _target(func)
    if code_owner is None:
        return []
    try:
        ins = [i for i in dis.get_instructions(code_owner) if i.opname != "CACHE"]
    except TypeError:
        return []

    # a cell of the function's own (a local that a nested function or class uses) is not outer
    own_cells = set(code_owner.__code__.co_cellvars) - set(code_owner.__code__.co_freevars)

    def outer(i: int) -> str | None:
        """The outer name instruction ``i`` loads, if it loads one."""
        op = ins[i]
        if op.opname in _LOADS:
            return None if _name(op) in own_cells else _name(op)
        if self_name and op.opname.startswith("LOAD_FAST") and op.argval == self_name:
            nxt = ins[i + 1] if i + 1 < len(ins) else None
            if nxt is not None and nxt.opname in ("LOAD_ATTR", "LOAD_METHOD") \
                    and _name(nxt) not in MUTATING:
                return f"{self_name}.{_name(nxt)}"
            return self_name
        return None

    found: list[str] = []

    def note(name: str | None) -> None:
        if name and name not in found:
            found.append(name)

    for i, op in enumerate(ins):
        if op.opname in ("STORE_GLOBAL", "STORE_DEREF", "DELETE_GLOBAL", "DELETE_DEREF"):
            note(None if _name(op) in own_cells else _name(op))
        elif op.opname in ("LOAD_METHOD", "LOAD_ATTR") and _name(op) in MUTATING and i:
            note(outer(i - 1) if ins[i - 1].opname != "LOAD_ATTR" else outer(i - 2))
        elif op.opname in ("STORE_SUBSCR", "DELETE_SUBSCR", "STORE_ATTR", "DELETE_ATTR"):
            # the object is loaded just before the key (or, for attributes, last)
            for back in range(1, 5):
                j = i - back
                if j < 0:
                    break
                name = outer(j)
                if name:
                    if op.opname.endswith("ATTR") and name == self_name:
                        name = f"{self_name}.{_name(op)}"
                    note(name)
                    break
                if ins[j].opname not in _KEY_OPS:
                    break
    return found


def method_changes(obj: Any, base: type, wanted: Callable[[str], bool], *,
                   own_state: bool) -> dict[str, list[str]]:
    """What the methods ``obj``'s class defines over ``base`` change outside themselves.

    Only methods whose name ``wanted`` accepts and that the class overrides are read.
    ``own_state``: whether changes to the object itself (``self.x = ...``) count too: they
    are lost when the trials run a copy of an object the script keeps using, and not when
    the peer copies it as well (KerasTuner copies each callback for each execution).

    >>> seen = set()
    >>> class Counting:
    ...     def on_epoch_end(self, epoch, logs=None):
    ...         self.last = epoch
    ...         seen.add(epoch)
    >>> method_changes(Counting(), object, lambda n: n.startswith("on_"), own_state=False)
    {'on_epoch_end': ['seen']}
    """
    found: dict[str, list[str]] = {}
    for name in sorted(dir(type(obj))):
        attr = getattr(type(obj), name, None)
        if not wanted(name) or not inspect.isfunction(attr) or attr is getattr(base, name, None):
            continue
        this = attr.__code__.co_varnames[0] if attr.__code__.co_argcount else ""
        names = [n for n in outer_changes(getattr(obj, name))
                 if own_state or not (n == this or n.startswith(this + "."))]
        if names:
            found[name] = names
    return found


LOST = ("each trial runs in another process (a Ray worker), so those changes stay there and "
        "this script never sees them.")


def listed(names: list[str]) -> str:
    """``a``, ``b`` as a warning names them.

    >>> listed(["scores", "self.best"])
    '`scores`, `self.best`'
    """
    return ", ".join(f"`{n}`" for n in names)


def changes_message(what: str, names: list[str]) -> str:
    """One warning line for the user, naming what their function changes outside itself."""
    return (f"{what} changes {listed(names)} outside itself; {LOST} Return the value, keep per-trial "
            "data with trial.set_user_attr(...) (read back from study.trials), or save "
            "files/checkpoints to shared storage; or create the study with in_process=True "
            "to run its trials in this process, as Optuna does.")
