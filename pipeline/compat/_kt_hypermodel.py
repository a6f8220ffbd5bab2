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


def has_custom_fit(hypermodel: HyperModel | None) -> bool:
    """Whether the hypermodel trains its models itself (a ``fit`` of its own)."""
    return hypermodel is not None and type(hypermodel).fit is not HyperModel.fit
