"""Import shim used by ``yardsticks.py`` when KerasTuner's own tests run on our front door.

Copied next to the rewritten test files (never imported by the pipeline). An import of
``keras_tuner`` (or ``from keras_tuner.x import y``) in a test becomes a call here, which
maps KerasTuner's objects onto ``pipeline.compat.keras_tuner``:

* an object that the installed keras-tuner exports publicly (``keras_tuner.RandomSearch``,
  ``keras_tuner.engine.hyperparameters.Int``, ...), however the test reached it, becomes
  our front door's object at the same public path (``kt.errors.FatalValueError``), else
  its attribute of the same leaf name (``kt.RandomSearch``, ``kt.Int``); when
  the front door lacks it, a placeholder that raises ``AttributeError`` when used (so a
  missing name fails the tests that use it, not the whole file);
* a KerasTuner module becomes a proxy resolving its attributes the same way;
* anything else of KerasTuner's (private helpers, internal modules' functions) becomes a
  placeholder raising :class:`YardInternal` (the report labels such failures "internal");
* test infrastructure (``keras_tuner.backend`` -- ``keras``, ``config`` -- and objects
  that are not KerasTuner's, e.g. ``keras`` itself) is passed through unchanged.
"""

from __future__ import annotations

import importlib
import pkgutil
import types

import keras_tuner as _real_public

OURS = importlib.import_module("pipeline.compat.keras_tuner")
FRONT = "pipeline.compat.keras_tuner"


class YardInternal(AttributeError):
    """A test reached KerasTuner internals that no front door offers."""


def _public_map() -> dict[int, str]:
    found: dict[int, str] = {}
    names = ["keras_tuner"] + [m.name for m in pkgutil.walk_packages(
        _real_public.__path__, "keras_tuner.") if not m.name.startswith("keras_tuner.src")]
    for modname in names:
        try:
            mod = importlib.import_module(modname)
        except Exception:  # noqa: BLE001 - an optional public module that does not import
            continue
        for key, value in vars(mod).items():
            if key.startswith("_") or not callable(value) or isinstance(value, types.ModuleType):
                continue
            path = f"{modname}.{key}"
            if id(value) not in found or len(path) < len(found[id(value)]):
                found[id(value)] = path
    return found


PUBLIC = _public_map()


class _MissingMeta(type):
    def __call__(cls, *args, **kwargs):
        raise cls._yard_error()

    def __getattr__(cls, name):
        if name.startswith("__") or name.startswith("_yard"):
            raise AttributeError(name)
        raise cls._yard_error()


def _missing(path: str, internal: bool) -> type:
    if internal:
        msg = f"yardstick-internal: {path} is KerasTuner-internal (no front-door equivalent)"
        exc = YardInternal
    else:
        leaf = path.rsplit(".", 1)[-1]
        msg = f"module '{FRONT}' has no attribute '{leaf}' (KerasTuner public: {path})"
        exc = AttributeError

    def error(msg=msg, exc=exc):
        return exc(msg)

    return _MissingMeta(path.rsplit(".", 1)[-1], (), {"_yard_error": staticmethod(error),
                                                      "_yard_path": path})


def _is_infra(modname: str) -> bool:
    return modname.startswith(("keras_tuner.src.backend", "keras_tuner.backend"))


class _ModuleProxy(types.ModuleType):
    def __init__(self, real: types.ModuleType, path: str):
        super().__init__(path)
        self._yard_real, self._yard_path = real, path

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        real = self._yard_real
        try:
            obj = getattr(real, name)
        except AttributeError:
            try:
                obj = importlib.import_module(f"{real.__name__}.{name}")
            except ImportError:
                raise AttributeError(
                    f"module '{self._yard_path}' has no attribute '{name}'") from None
        return resolve(obj, f"{self._yard_path}.{name}")


def _walk(obj, names: list[str]):
    for attr in names:
        obj = getattr(obj, attr)
    return obj


def resolve(obj, path: str):
    if isinstance(obj, types.ModuleType):
        if not obj.__name__.startswith("keras_tuner") or _is_infra(obj.__name__):
            return obj
        return _ModuleProxy(obj, path)
    public = PUBLIC.get(id(obj))
    if public is not None:
        try:  # the same public path on ours (kt.errors.FatalValueError), else the leaf name
            return _walk(OURS, public.split(".")[1:])
        except AttributeError:
            pass
        try:
            return getattr(OURS, public.rsplit(".", 1)[-1])
        except AttributeError:
            return _missing(public, internal=False)
    owner = getattr(obj, "__module__", None) or ""
    if not owner.startswith("keras_tuner") or _is_infra(owner):
        return obj  # not KerasTuner's (keras, numpy, ...) or test infrastructure
    return _missing(path, internal=True)


def module(path: str):
    """``import keras_tuner[.a.b]``: a proxy over KerasTuner's full namespace."""
    rest = path.removeprefix("keras_tuner").lstrip(".")
    real = importlib.import_module("keras_tuner.src" + (f".{rest}" if rest else ""))
    return resolve(real, path)


def name(modpath: str, attr: str):
    """``from <modpath> import <attr>``."""
    return getattr(module(modpath), attr)
