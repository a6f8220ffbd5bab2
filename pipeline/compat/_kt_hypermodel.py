"""KerasTuner's ``HyperModel``: what a tuner builds (and perhaps fits) in each trial."""

from __future__ import annotations

from typing import Any, Callable

from pipeline.compat._hyperparameters import HyperParameters


class HyperModel:
    """Subclass and define ``build(hp)``; optionally ``fit(hp, model, *args, **kwargs)``."""

    def __init__(self, name: str | None = None, tunable: bool = True):
        self.name, self.tunable = name, tunable

    def build(self, hp: HyperParameters):
        raise NotImplementedError

    def declare_hyperparameters(self, hp: HyperParameters) -> None:
        self.build(hp)

    def fit(self, hp: HyperParameters, model, *args, **kwargs):
        return model.fit(*args, **kwargs)


class DefaultHyperModel(HyperModel):
    """A build function as a HyperModel (KerasTuner's name for it: ``tuner.hypermodel``)."""

    def __init__(self, build_fn: Callable[[HyperParameters], Any]):
        super().__init__(getattr(build_fn, "__name__", None))
        self.build_fn = build_fn

    def build(self, hp: HyperParameters):
        return self.build_fn(hp)


class KerasTunersHyperModel(HyperModel):
    """A hypermodel made with KerasTuner itself (``keras_tuner.HyperModel`` subclasses such as
    ``kt.applications.HyperResNet``) on this door: its ``build`` (and ``fit``, where its class
    has one of its own) called with this door's ``hp``."""

    def __init__(self, inner: Any):
        super().__init__(getattr(inner, "name", None), getattr(inner, "tunable", True))
        self.inner = inner

    def build(self, hp: HyperParameters):
        return self.inner.build(hp)


class _KerasTunersHyperModelWithFit(KerasTunersHyperModel):
    def fit(self, hp: HyperParameters, model, *args, **kwargs):
        return self.inner.fit(hp, model, *args, **kwargs)


def from_keras_tuner(hypermodel: Any) -> KerasTunersHyperModel | None:
    """``hypermodel`` wrapped for this door if it is a ``keras_tuner.HyperModel``, else None.

    KerasTuner is looked for only where the script imported it already."""
    import sys

    kt = sys.modules.get("keras_tuner")
    base = getattr(kt, "HyperModel", None)
    if base is None or not isinstance(hypermodel, base):
        return None
    own_fit = type(hypermodel).fit is not base.fit
    return (_KerasTunersHyperModelWithFit if own_fit else KerasTunersHyperModel)(hypermodel)


def has_custom_fit(hypermodel: HyperModel | None) -> bool:
    """Whether the hypermodel trains its models itself (a ``fit`` of its own)."""
    return hypermodel is not None and type(hypermodel).fit is not HyperModel.fit
