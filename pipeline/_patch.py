"""Install-once wrappers of a library's function or method (Ray Tune's, Keras').

Each correction the project makes to a library is a function that takes the original and
returns its replacement. :func:`wrap_once` installs it once per process, however often it is
called, and stacks with other corrections of the same attribute:

    >>> class Greeter:
    ...     def hello(self):
    ...         return "hello"
    >>> def shout(original):
    ...     def hello(self):
    ...         return original(self).upper()
    ...     return hello
    >>> wrap_once(Greeter, "hello", shout)
    True
    >>> wrap_once(Greeter, "hello", shout)  # already there: nothing changes
    False
    >>> Greeter().hello(), is_wrapped(Greeter, "hello", shout)
    ('HELLO', True)
"""

from __future__ import annotations

from typing import Any, Callable

_MARKS = "__pipeline_wraps__"


def _mark(wrap: Callable[..., Any]) -> str:
    return f"{wrap.__module__}.{wrap.__qualname__}"


def is_wrapped(owner: Any, name: str, wrap: Callable[..., Any]) -> bool:
    """Whether ``owner.<name>`` already carries ``wrap``'s replacement."""
    return _mark(wrap) in getattr(getattr(owner, name, None), _MARKS, ())


def wrap_once(owner: Any, name: str, wrap: Callable[[Any], Any]) -> bool:
    """Set ``owner.<name>`` to ``wrap(original)`` unless it is already there; True if set.

    The replacement's ``__wrapped__`` is the original."""
    original = getattr(owner, name)
    if is_wrapped(owner, name, wrap):
        return False
    replacement = wrap(original)
    setattr(replacement, _MARKS, frozenset(getattr(original, _MARKS, ())) | {_mark(wrap)})
    replacement.__wrapped__ = original  # as functools.wraps does: the way back, for tests
    setattr(owner, name, replacement)
    return True
