"""Translate a :class:`pipeline.space.SearchSpace` for each Ray Tune searcher."""

from __future__ import annotations

import math
from typing import Any

from pipeline.space import (
    BoolParam,
    ChoiceParam,
    FixedParam,
    FloatParam,
    IntParam,
    SearchSpace,
)


class OptunaDefineByRun:
    """Optuna define-by-run function: only active parameters are suggested.

    Conditions are evaluated on the values already suggested, so an inactive
    child is never sampled; log scales and steps go to Optuna unchanged.
    Picklable (Tune checkpoints the searcher).
    """

    def __init__(self, space: SearchSpace):
        self.space = space

    def __call__(self, trial) -> dict[str, Any]:
        config: dict[str, Any] = {}
        fixed: dict[str, Any] = {}
        for name, p in self.space:
            if not self.space.is_active(name, {**config, **fixed}):
                continue
            if isinstance(p, FixedParam):
                fixed[name] = p.value
            elif isinstance(p, IntParam):
                config[name] = trial.suggest_int(name, p.low, p.high, step=p.step, log=p.log)
            elif isinstance(p, FloatParam):
                config[name] = trial.suggest_float(name, p.low, p.high, step=p.step, log=p.log)
            elif isinstance(p, ChoiceParam):
                config[name] = trial.suggest_categorical(name, p.values)
            elif isinstance(p, BoolParam):
                config[name] = trial.suggest_categorical(name, [False, True])
        return fixed


def _steps_domain(p: IntParam | FloatParam) -> Any:
    """A Tune domain drawing ``low + k * step`` for a uniform ``k`` (no list of the values:
    a step of 1e-6 over 0..1 would be a million of them)."""
    from ray.tune.search.sample import Integer

    class Steps(Integer):
        def __init__(self, param: IntParam | FloatParam):
            super().__init__(0, param.n_steps())
            self.param = param

        def sample(self, config=None, size=1, random_state=None):
            ks = super().sample(config, size=size, random_state=random_state)
            if size > 1:
                return [self.param.step_value(int(k)) for k in ks]
            return self.param.step_value(int(ks))

        def __reduce__(self):  # the class is local: rebuilt from the parameter
            return _steps_domain, (self.param,)

    return Steps(p)


def tune_domains(space: SearchSpace) -> dict[str, Any]:
    """Flat Ray Tune domains (every parameter sampled; the trainable ignores inactive ones)."""
    from ray import tune

    out: dict[str, Any] = {}
    for name, p in space:
        if isinstance(p, FixedParam):
            out[name] = p.value
        elif isinstance(p, (IntParam, FloatParam)) and p.n_steps() is not None:
            # not Ray's qrandint/quniform: they round to multiples of the step, not to
            # low + k * step (12..36 step 8 gave 16, 24, 32), and refuse a low that is
            # not a multiple (0.05..0.45 step 0.1)
            out[name] = _steps_domain(p)
        elif isinstance(p, IntParam):
            out[name] = tune.lograndint(p.low, p.high + 1) if p.log else tune.randint(p.low, p.high + 1)
        elif isinstance(p, FloatParam):
            out[name] = tune.loguniform(p.low, p.high) if p.log else tune.uniform(p.low, p.high)
        elif isinstance(p, ChoiceParam):
            out[name] = tune.choice(p.values)
        elif isinstance(p, BoolParam):
            out[name] = tune.choice([False, True])
    return out


_VALUE = "__value__"


def _hyperopt_steps(p: IntParam | FloatParam) -> int:
    """How many values a parameter :func:`_counts_steps` takes."""
    return p.n_steps() or int(p.high - p.low) + 1


def _counts_steps(p: Any) -> bool:
    """Sampled by HyperOpt as ``low + k * step`` (HyperoptSpace): a linear int (``step`` 1
    too) or a stepped float."""
    return (isinstance(p, IntParam) and not p.log) or (isinstance(p, FloatParam) and p.step is not None)


class HyperoptSpace:
    """Nested ``hp.choice`` space for HyperOpt, and the flattening of its samples.

    A parameter with conditional children becomes an ``hp.choice`` over its
    values, each branch holding the children active for that value; children
    conditioned on more than one parent are sampled at the top level and
    ignored by the trainable when inactive.
    """

    def __init__(self, space: SearchSpace):
        self.space = space

    def _children(self, parent: str) -> list[str]:
        return [n for n, p in self.space if p.when and list(p.when) == [parent]]

    def _expr(self, name: str, label: str):
        from hyperopt import hp
        from hyperopt.pyll import scope

        p = self.space.params[name]
        kids = self._children(name)
        if kids:
            branches = []
            for v in p.grid_values():
                branch = {_VALUE: v}
                for kid in kids:
                    if v in self.space.params[kid].when[name]:
                        branch[kid] = self._expr(kid, f"{kid}|{label}={v}")
                branches.append(branch)
            return hp.choice(label, branches)
        if isinstance(p, FixedParam):
            return p.value
        if _counts_steps(p):  # low + k * step (hp.quniform would round to multiples of step)
            n = _hyperopt_steps(p)
            if n == 1:
                return p.low  # TPE fails on an empty range (prior_sigma > 0)
            # k in 0..n-1, each as likely (0..n-1 itself would give the ends half as often)
            k = hp.quniform(label, -0.5, n - 0.5, 1)
            return p.low + p.step * (scope.int(k) if isinstance(p, IntParam) else k)
        if isinstance(p, IntParam):
            return scope.int(hp.qloguniform(label, math.log(p.low), math.log(p.high), 1))
        if isinstance(p, FloatParam):
            if p.log:
                return hp.loguniform(label, math.log(p.low), math.log(p.high))
            return hp.uniform(label, p.low, p.high)
        if isinstance(p, ChoiceParam):
            return hp.choice(label, p.values)
        return hp.choice(label, [False, True])

    def labels(self, point: dict[str, Any]) -> dict[str, Any]:
        """A flat config as HyperOpt's labels hold it (for ``points_to_evaluate``): a number
        sampled as ``low + k * step`` is given as its ``k``; the rest as they are.

            >>> space = SearchSpace.from_dict({
            ...     "units": {"type": "int", "low": 12, "high": 36, "step": 8},
            ...     "layers": {"type": "int", "low": 1, "high": 3},
            ...     "lr": {"type": "float", "low": 1e-3, "high": 3e-2, "log": True}})
            >>> HyperoptSpace(space).labels({"units": 20, "layers": 3, "lr": 0.01})
            {'units': 1, 'layers': 2, 'lr': 0.01}
        """
        out = dict(point)
        for name, value in point.items():
            p = self.space.params.get(name)
            if p is not None and _counts_steps(p) and isinstance(value, (int, float)):
                if _hyperopt_steps(p) == 1:
                    del out[name]  # a constant in HyperOpt's space, no label
                else:
                    out[name] = round((p.clipped(value) - p.low) / p.step)
        return out

    @property
    def nested(self) -> bool:
        return any(self._children(name) for name in self.space.names)

    def build(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, p in self.space:
            nested_child = p.when and len(p.when) == 1 and name in self._children(next(iter(p.when)))
            if nested_child:
                continue
            out[name] = self._expr(name, name)
        return out

    def flatten(self, sample: dict[str, Any]) -> dict[str, Any]:
        flat: dict[str, Any] = {}

        def walk(name: str, value: Any) -> None:
            if isinstance(value, dict) and _VALUE in value:  # a parent's chosen branch
                flat[name] = self._coerce(name, value[_VALUE])
                for kid, kid_value in value.items():
                    if kid != _VALUE:
                        walk(kid, kid_value)
            else:
                flat[name] = self._coerce(name, value)

        for name, value in sample.items():
            walk(name, value)
        return flat

    def _coerce(self, name: str, value: Any) -> Any:
        p = self.space.params.get(name)
        return p.clipped(value) if isinstance(p, (IntParam, FloatParam)) else value
