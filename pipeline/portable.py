"""Objects that travel to Ray: pickled as Ray and Tune pickle them, or a clear error.

Ray pickles (with ``ray.cloudpickle``) everything that crosses a process: an
actor's arguments, ``tune.with_parameters`` objects, and the search algorithm and
scheduler, which Tune also stores in the experiment state that ``--resume``
unpickles. Two helpers:

* :func:`portable_locks` swaps the ``threading`` locks an object keeps in its
  attributes (Optuna 5.1's ``NSGAIISampler`` holds one) for locks that pickle as
  a fresh, unlocked lock, so the object itself can travel;
* :func:`check_portable` pickles objects the user handed over and, if one
  cannot travel, raises ``TypeError`` naming it and the attribute that cannot,
  instead of a bare pickling traceback from deep inside Ray.

Example:
    >>> import threading
    >>> class Sampler:
    ...     def __init__(self):
    ...         self._lock = threading.Lock()
    >>> from ray import cloudpickle
    >>> sampler = portable_locks(Sampler())
    >>> with cloudpickle.loads(cloudpickle.dumps(sampler))._lock:
    ...     pass
    >>> class Holder:
    ...     def __init__(self):
    ...         self.conn = threading.Lock()
    >>> check_portable({"sampler": Holder()})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    TypeError: sampler (Holder) cannot be sent to Ray workers: ...at sampler.conn...
"""

from __future__ import annotations

import threading
from typing import Any

__all__ = ["PortableLock", "portable_locks", "check_portable"]

_LOCK_TYPES = (type(threading.Lock()), type(threading.RLock()))


class PortableLock:
    """A ``threading.Lock`` (or ``RLock``) that pickles as a new, unlocked one.

    A lock guards one process's threads; the copy in another process needs its own.
    """

    def __init__(self, reentrant: bool = False):
        self._reentrant = reentrant
        self._lock = threading.RLock() if reentrant else threading.Lock()

    def __reduce__(self):
        return PortableLock, (self._reentrant,)

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        return self._lock.acquire(blocking, timeout)

    def release(self) -> None:
        self._lock.release()

    def locked(self) -> bool:
        """Whether a thread holds it (for a reentrant lock: a thread other than this one)."""
        if self._reentrant:  # RLock has no locked() before Python 3.14
            if self._lock.acquire(blocking=False):
                self._lock.release()
                return False
            return True
        return self._lock.locked()  # type: ignore[union-attr]  # a Lock here

    def __enter__(self) -> bool:
        return self._lock.__enter__()

    def __exit__(self, *exc: Any) -> None:
        self._lock.__exit__(*exc)


def _package(obj: Any) -> str:
    return type(obj).__module__.split(".")[0]


def portable_locks(obj: Any, _depth: int = 3) -> Any:
    """``obj`` with each lock in its attributes replaced by a :class:`PortableLock`.

    Looks into attributes that are objects of the same package as ``obj`` (an
    Optuna sampler's strategies, say), ``_depth`` levels deep; changes ``obj`` in
    place and returns it. Objects without ``__dict__`` are returned unchanged.
    """
    attrs = getattr(obj, "__dict__", None)
    if not isinstance(attrs, dict):
        return obj
    package = _package(obj)
    for name, value in list(attrs.items()):
        if isinstance(value, _LOCK_TYPES):
            attrs[name] = PortableLock(reentrant=not isinstance(value, _LOCK_TYPES[0]))
        elif _depth > 1 and _package(value) == package and hasattr(value, "__dict__"):
            portable_locks(value, _depth - 1)
    return obj


def _dumps(obj: Any) -> None:
    from ray import cloudpickle

    cloudpickle.dumps(obj)


def _children(obj: Any) -> list[tuple[str, Any]]:
    """(path suffix, value) of what pickling ``obj`` pickles in turn, as far as it can be seen."""
    if isinstance(obj, dict):
        return [(f"[{k!r}]", v) for k, v in obj.items()]
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [(f"[{i}]", v) for i, v in enumerate(obj)]
    closure = getattr(obj, "__closure__", None)
    code = getattr(obj, "__code__", None)
    if closure and code is not None:  # a function: the variables it closes over
        return [(f".<closure {name}>", cell.cell_contents)
                for name, cell in zip(code.co_freevars, closure) if _has_contents(cell)]
    if code is not None:  # a plain function: the module globals it uses
        module = getattr(obj, "__globals__", {})
        return [(f".<global {name}>", module[name]) for name in code.co_names if name in module
                and not isinstance(module[name], type(threading))]
    attrs = getattr(obj, "__dict__", None)
    return [(f".{k}", v) for k, v in attrs.items()] if isinstance(attrs, dict) else []


def _has_contents(cell: Any) -> bool:
    try:
        cell.cell_contents
        return True
    except ValueError:  # an empty cell
        return False


def _culprit(path: str, obj: Any, depth: int = 6) -> str:
    """The path of the innermost part of ``obj`` that does not pickle (``obj``'s if none)."""
    if depth == 0:
        return path
    for suffix, child in _children(obj):
        try:
            _dumps(child)
        except Exception:  # noqa: BLE001 - any pickling failure: look inside
            return _culprit(path + suffix, child, depth - 1)
    return path


def check_portable(objects: dict[str, Any]) -> None:
    """Raise ``TypeError`` naming the first of ``objects`` that Ray cannot ship.

    ``objects`` maps what the user calls the object (``"sampler"``,
    ``"objective"``) to the object itself.
    """
    for name, obj in objects.items():
        try:
            _dumps(obj)
        except Exception as exc:  # noqa: BLE001 - pickling raises many types
            where = _culprit(name, obj)
            culprit = f" (at {where})" if where != name else ""
            raise TypeError(
                f"{name} ({type(obj).__name__}) cannot be sent to Ray workers: "
                f"{type(exc).__name__}: {exc}{culprit}. Objects the trials use are pickled "
                "with ray.cloudpickle; create such state inside the function (or build a "
                "fresh one from plain settings) instead of passing it in."
            ) from None
