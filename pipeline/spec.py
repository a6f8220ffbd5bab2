"""The experiment spec: validated once, at the edge, into typed objects.

A spec comes from YAML (``load_spec``) or from Python (``Spec.model_validate``
on a dict, or the models below). Every later stage works on a :class:`Spec`.
Errors are collected into a :class:`SpecError` whose lines name the field path,
for example ``search.trials: must be > 0``.

Checks come in three layers, so that each command asks only what it needs:

1. **Schema** (``Spec.model_validate``, ``parse_spec(raw, environment=False)``):
   pure pydantic over the spec text and the project's own catalogs (searchers,
   schedulers, data sources, built-in builders). It imports no user code, reads
   no files and needs no optional package. Stored results are read with it alone,
   so ``results`` and ``report`` work on any machine.
2. **Environment** (:func:`check_environment`; ``load_spec`` and ``parse_spec``
   run it by default, and so does ``run``): what running the spec here needs --
   user modules (``model.builder``, callbacks) import, data files and searcher
   state exist, optional packages (mlflow, PyTorch for ``gp``) are installed,
   searcher and scheduler options are ones they take. It builds and writes nothing:
   ``validate`` stops here.
3. **Start** (``searchers.check_build``, called by ``run`` before anything is
   written): builds the searcher and scheduler, which may touch the outside world
   (an Optuna ``storage`` database is created).

Example:
    >>> from pipeline.spec import Spec
    >>> spec = Spec.model_validate({
    ...     "name": "demo",
    ...     "data": {"source": "digits"},
    ...     "space": {"units": {"type": "int", "low": 32, "high": 128, "step": 32}},
    ...     "objective": {"metric": "val_accuracy", "mode": "max"},
    ... })
    >>> spec.searcher.name, spec.search.trials
    ('tpe', 10)
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from pipeline.space import SearchSpace

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


class SpecError(Exception):
    """A spec is invalid; ``lines`` are ``field.path: message`` strings."""

    def __init__(self, lines: list[str]):
        self.lines = lines
        super().__init__("\n".join(lines))


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataSpec(_Section):
    source: str = Field(default="digits", description="digits | mnist1d | npz | csv | parquet | tfrecord")
    path: str | None = Field(default=None, description=(
        "file path or URI for npz/csv/parquet/tfrecord; parquet and tfrecord also take a folder "
        "or glob of shards, which are streamed (pipeline.streaming)"))
    features: list[str] | None = Field(default=None, description=(
        "feature columns (csv/parquet); tfrecord: required, the features of its tf.train.Example records"))
    dtypes: dict[str, str] = Field(default_factory=dict, description=(
        "tfrecord: a feature's or the label's type, float | int | bytes (the label only), "
        "with [n] for n values per record (float[64]); default float features and an int label"))
    compression: Literal["auto", "gzip", "none"] = Field(
        default="auto", description="tfrecord: auto = GZIP when the file name ends in .gz")
    label: str = Field(default="label", description="label column or npz array name")
    features_key: str = Field(default="x", description="npz array holding the features")
    validation_fraction: float = Field(default=0.2, gt=0, lt=1)
    test_fraction: float = Field(default=0.2, ge=0, lt=1)
    limit: int | None = Field(default=None, gt=0, description="use at most this many samples")
    num_samples: int = Field(default=5000, gt=0, description="mnist1d: samples to generate")
    endpoint_override: str | None = None
    shuffle_buffer: int = Field(default=10_000, gt=0,
                                description="sharded parquet/tfrecord: rows a trial shuffles together")

    @model_validator(mode="after")
    def _check(self) -> "DataSpec":
        from pipeline.data import SOURCES
        from pipeline.streaming import FORMATS, is_pattern

        if self.source not in SOURCES:
            raise ValueError(f"source: unknown source '{self.source}' (known: {', '.join(SOURCES)})")
        if SOURCES.needs_path(self.source) and not self.path:
            raise ValueError(f"path: required for source '{self.source}'")
        if self.path and is_pattern(self.path):
            if self.source not in FORMATS:
                raise ValueError(f"path: a glob of shards is read by sources "
                                 f"{' and '.join(repr(f) for f in FORMATS)} only, not '{self.source}'")
            if self.limit:
                raise ValueError(f"limit: not supported for sharded {self.source}; "
                                 "choose fewer shards with the path's glob instead")
        self._check_records()
        if self.validation_fraction + self.test_fraction >= 0.9:
            raise ValueError(
                "validation_fraction: validation + test fractions must leave >= 10% for training"
            )
        return self

    def _check_records(self) -> None:
        """TFRecord holds no schema: the features are named, their types valid (or defaults)."""
        from pipeline.streaming import parse_dtype

        if self.source != "tfrecord":
            for name, given in (("dtypes", bool(self.dtypes)), ("compression", self.compression != "auto")):
                if given:
                    raise ValueError(f"{name}: for source 'tfrecord' only, not '{self.source}'")
            return
        if not self.features:
            raise ValueError("features: required for source 'tfrecord' (its records hold no schema): "
                             "list the features to read")
        if self.label in self.features:
            raise ValueError(f"features: '{self.label}' is the label (data.label), not a feature")
        for name, text in self.dtypes.items():
            parsed = parse_dtype(text)
            if name != self.label and name not in self.features:
                raise ValueError(f"dtypes: '{name}' is not declared: neither in data.features "
                                 f"nor the label '{self.label}'")
            if parsed is None:
                raise ValueError(f"dtypes: '{name}': '{text}' is not a type "
                                 "(float, int or bytes, with [n] for n values: float[64])")
            if name == self.label and parsed[1] != 1:
                raise ValueError(f"dtypes: the label '{name}' has one value per record, not {text}")
            if name != self.label and parsed[0] == "bytes":
                raise ValueError(f"dtypes: feature '{name}' must be float or int (bytes: the label only)")


def _check_reference(ref: str) -> str:
    """Schema: ``ref`` has the form ``package.module:function`` (nothing is imported)."""
    module, sep, attr = ref.partition(":")
    if not (sep and module and attr):
        raise ValueError(f"'{ref}' is not of the form 'package.module:function'")
    return ref


def _import_problem(ref: str) -> str | None:
    """Environment: why ``package.module:function`` does not import as a callable (None: it does)."""
    module, _, attr = ref.partition(":")
    try:
        mod = importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001 - the user's module may raise anything
        return f"cannot import module '{module}': {type(exc).__name__}: {exc}"
    if not callable(getattr(mod, attr, None)):
        return f"module '{module}' has no callable '{attr}'"
    return None


class ModelSpec(_Section):
    builder: str = Field(default="mlp", description="mlp | cnn | package.module:function")
    options: dict[str, Any] = Field(default_factory=dict, description="fixed builder hyperparameters")

    @field_validator("builder")
    @classmethod
    def _builder(cls, v: str) -> str:
        from pipeline.models import BUILDERS

        if v in BUILDERS:
            return v
        if ":" not in v:
            raise ValueError(
                f"unknown builder '{v}' (built-ins: {', '.join(BUILDERS)}; "
                "or 'package.module:function')"
            )
        return _check_reference(v)


class CallbackSpec(_Section):
    factory: str = Field(description="package.module:callable returning a keras Callback")
    kwargs: dict[str, Any] = Field(default_factory=dict)

    @field_validator("factory")
    @classmethod
    def _reference(cls, v: str) -> str:
        return _check_reference(v)


class TrainingSpec(_Section):
    epochs: int = Field(default=10, gt=0)
    batch_size: int = Field(default=32, gt=0)
    optimizer: str = Field(default="adam")
    learning_rate: float = Field(default=1e-3, gt=0)
    loss: str | None = Field(default=None, description="default: sparse categorical cross-entropy")
    metrics: list[str] = Field(default_factory=lambda: ["accuracy"])
    checkpoint_every: int = Field(default=0, ge=0, description="epochs between checkpoints; 0 = at the end only")
    steps_per_execution: int = Field(default=1, gt=0)
    verbose: int = Field(default=0, ge=0, le=2)
    callbacks: list[CallbackSpec] = Field(default_factory=list, description="extra Keras callbacks")

    @field_validator("callbacks", mode="before")
    @classmethod
    def _callback_strings(cls, v: Any) -> Any:
        return [{"factory": c} if isinstance(c, str) else c for c in v] if isinstance(v, list) else v


class ObjectiveSpec(_Section):
    metric: str | list[str] = "val_accuracy"
    mode: Literal["min", "max"] | list[Literal["min", "max"]] = "max"

    @model_validator(mode="after")
    def _check(self) -> "ObjectiveSpec":
        if isinstance(self.metric, list) != isinstance(self.mode, list):
            raise ValueError("mode: give one mode per metric (both lists or both strings)")
        if isinstance(self.metric, list):
            if len(self.metric) != len(self.mode) or len(self.metric) < 2:
                raise ValueError("mode: a multi-objective needs >= 2 metrics and one mode each")
        return self

    @property
    def metrics(self) -> list[str]:
        return list(self.metric) if isinstance(self.metric, list) else [self.metric]

    @property
    def modes(self) -> list[str]:
        return list(self.mode) if isinstance(self.mode, list) else [self.mode]

    @property
    def multi(self) -> bool:
        return isinstance(self.metric, list)

    @property
    def primary(self) -> tuple[str, str]:
        return self.metrics[0], self.modes[0]


class WarmStartSpec(_Section):
    path: str = Field(description="an earlier experiment (folder or URI)")
    top: int = Field(default=5, gt=0, description="its best N configs are evaluated first")
    endpoint_override: str | None = None


class SearcherSpec(_Section):
    name: str = "tpe"
    options: dict[str, Any] = Field(default_factory=dict)
    points_to_evaluate: list[dict[str, Any]] = Field(
        default_factory=list, description="configs evaluated first (manual search)"
    )
    warm_start: WarmStartSpec | None = Field(default=None, description="seed with an earlier experiment's best")
    restore_from: str | None = Field(default=None, description="an earlier experiment whose searcher state to load")

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        from searchers import SEARCHERS

        SEARCHERS.check(v)
        return v


class SchedulerSpec(_Section):
    name: str = "fifo"
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        from searchers import SCHEDULERS

        SCHEDULERS.check(v)
        return v


class ResourcesSpec(_Section):
    cpu: float = Field(default=1, gt=0)
    gpu: float = Field(default=0, ge=0, description="fractions (0.25) are fenced to that share of memory")
    gpu_memory_growth: bool = Field(default=False, description="grow GPU memory instead of a fixed cap")
    workers: int = Field(
        default=1, ge=1,
        description="data-parallel workers per trial (Ray Train, MultiWorkerMirroredStrategy), "
                    "each with cpu/gpu above; training.batch_size is per worker "
                    "(global batch = batch_size x workers)")

    @field_validator("gpu")
    @classmethod
    def _fraction(cls, v: float) -> float:
        if v > 1 and v != int(v):
            raise ValueError("more than one GPU must be a whole number")
        return v


class SearchSpec(_Section):
    trials: int | None = Field(default=None, gt=0, description="default 10; grid: the whole grid")
    max_concurrent: int | None = Field(
        default=None, gt=0,
        description="trials at a time; default: as many as the cluster's CPUs/GPUs hold, at most trials")
    time_budget_s: float | None = Field(
        default=None, gt=0,
        description="hard limit: trials still running after this many seconds are stopped")
    start_trials_for_s: float | None = Field(
        default=None, gt=0,
        description="soft limit: no trial starts after this many seconds; running ones finish "
                    "(Optuna's timeout)")
    reuse_actors: bool = True


class StorageSpec(_Section):
    path: str = "results"
    endpoint_override: str | None = Field(default=None, description="S3-compatible endpoint, e.g. http://127.0.0.1:9000")
    shared: bool = Field(default=False, description="a local path that every node mounts (NFS...)")
    outage_tolerance_s: float = Field(
        default=300, ge=0,
        description="how long a trial waits for unreachable storage to come back before it fails")

    @field_validator("path", "endpoint_override")
    @classmethod
    def _no_credentials(cls, v: str | None) -> str | None:
        from pipeline.redact import uri_credentials

        if v is not None and uri_credentials(v):  # they would be echoed and stored with the spec
            raise ValueError("put credentials in the environment or a Secret, not in the URI")
        return v

    @field_validator("path")
    @classmethod
    def _scheme(cls, v: str) -> str:
        if "://" in v:
            scheme = v.split("://", 1)[0]
            if scheme not in {"file", "s3", "gs", "gcs", "hdfs", "abfs", "az"}:
                raise ValueError(f"unsupported URI scheme '{scheme}://' (use a folder, file://, s3:// or gs://)")
        return v


class TrackingSpec(_Section):
    mlflow_uri: str | None = Field(default=None, description="MLflow tracking URI, e.g. file:///abs/mlruns")
    tensorboard: bool = Field(default=False, description=(
        "also write TensorBoard event files per trial (tensorboard --logdir on the experiment); "
        "off by default: its tensorboardX import (with PyTorch, ~2.5 s) delays the first trial"))


class FailureSpec(_Section):
    max_failures: int = Field(default=0, ge=-1, description="retries per trial from its last checkpoint; -1 = forever")


class Spec(_Section):
    name: str
    data: DataSpec = Field(default_factory=DataSpec)
    model: ModelSpec = Field(default_factory=ModelSpec)
    space: dict[str, dict[str, Any]] = Field(min_length=1)
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    objective: ObjectiveSpec = Field(default_factory=ObjectiveSpec)
    searcher: SearcherSpec = Field(default_factory=SearcherSpec)
    scheduler: SchedulerSpec = Field(default_factory=SchedulerSpec)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    search: SearchSpec = Field(default_factory=SearchSpec)
    storage: StorageSpec = Field(default_factory=StorageSpec)
    failure: FailureSpec = Field(default_factory=FailureSpec)
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)
    seed: int = 0

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError("must be 1-63 letters, digits, '_', '-' or '.', starting with a letter or digit")
        return v

    @field_validator("storage", mode="before")
    @classmethod
    def _storage_str(cls, v: Any) -> Any:
        return {"path": v} if isinstance(v, str) else v

    @model_validator(mode="after")
    def _cross(self) -> "Spec":
        import searchers

        space = self.search_space()  # raises ValueError with param path
        errors = self._check_points(space)
        for value in self._user_builders(space):
            try:
                _check_reference(value)
            except ValueError as exc:
                errors.append(f"space.builder: {exc}")
        errors.extend(self._check_builder_values(space))
        errors = errors or searchers.check(self, space)
        if errors:
            raise _CrossErrors(errors)
        return self

    def _user_builders(self, space: SearchSpace | None = None) -> list[str]:
        """The ``package.module:function`` builders a searched ``builder`` may pick."""
        from pipeline.models import BUILDERS

        space = self.search_space() if space is None else space
        if "builder" not in space.params:
            return []
        return [str(v) for v in space.params["builder"].grid_values() if v not in BUILDERS]

    def _check_builder_values(self, space: SearchSpace) -> list[str]:
        """Enumerated built-in hyperparameters (lr_schedule, scaling, flip...) take known values."""
        from pipeline.hyperparameters import check_hyperparameters
        from pipeline.models import BUILDERS
        from pipeline.space import ChoiceParam, FixedParam

        # A searched builder is combined per trial (points or conditions may pair select_k
        # with mlp only); a fixed one is checked here.
        builders = [] if "builder" in space.params else [self.model.builder]
        in_play = space.params["builder"].grid_values() if "builder" in space.params else builders
        builtin = all(isinstance(b, str) and b in BUILDERS for b in in_play)
        values: dict[str, list[Any]] = {k: [v] for k, v in self.model.options.items()}
        for name, p in space:
            if isinstance(p, (ChoiceParam, FixedParam)):
                values[name] = p.grid_values()
        where = {name: "space" if name in space.params else "model.options" for name in values}
        return [f"{where[line.split(':')[0]]}.{line}"
                for line in check_hyperparameters(values, builders, builtin)]

    def _check_points(self, space: SearchSpace) -> list[str]:
        """Every point to evaluate names known parameters, with values the space allows."""
        errors = []
        # searchers that run the points exactly as given (Ray's variant generator)
        exact = self.searcher.name in ("grid", "manual")
        for i, point in enumerate(self.searcher.points_to_evaluate):
            for name, value in point.items():
                where = f"searcher.points_to_evaluate[{i}].{name}"
                if name not in space.params:
                    errors.append(f"searcher.points_to_evaluate: unknown parameter '{name}'")
                    continue
                param = space.params[name]
                problem = param.rejects(value)
                declared = getattr(param, "values_for_grid", None) or ()
                if problem and exact and value in declared and param.low <= value <= param.high:
                    problem = None  # a declared grid value, run as given (KerasTuner's grid adds a default)
                if problem:
                    errors.append(f"{where}: {problem}")
        return errors

    def search_space(self) -> SearchSpace:
        try:
            return SearchSpace.from_dict(self.space)
        except ValidationError as exc:
            raise _CrossErrors(_format(exc, prefix=("space",))) from None
        except ValueError as exc:
            raise _CrossErrors([f"space.{exc}"]) from None

    @property
    def num_trials(self) -> int:
        if self.searcher.name == "grid":
            return self.search_space().grid_size()
        if self.searcher.name == "manual":
            return len(self.searcher.points_to_evaluate)
        return self.search.trials or 10

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


class _CrossErrors(ValueError):
    """Errors with their own full field paths (raised from model validators)."""

    def __init__(self, lines: list[str]):
        self.lines = lines
        super().__init__("; ".join(lines))


_MESSAGES = {
    "greater_than": "must be > {gt}",
    "greater_than_equal": "must be >= {ge}",
    "less_than": "must be < {lt}",
    "less_than_equal": "must be <= {le}",
    "extra_forbidden": "unknown field",
    "missing": "required field missing",
    "too_short": "must not be empty",
}


_PARAM_TAGS = {"int", "float", "choice", "bool", "fixed"}


def _format(exc: ValidationError, prefix: tuple[str, ...] = ()) -> list[str]:
    lines: list[str] = []
    seen: set[str] = set()
    for err in exc.errors():
        ctx_err = (err.get("ctx") or {}).get("error")
        if isinstance(ctx_err, _CrossErrors):
            lines.extend(ctx_err.lines)
            continue
        loc = [str(p) for p in (*prefix, *err["loc"])]
        # Drop pydantic's union segments ("space.units.int.low" -> "space.units.low",
        # "objective.mode.literal['min','max']" -> "objective.mode").
        loc = [p for i, p in enumerate(loc)
               if "[" not in p and not (i == 2 and loc[0] == "space" and p in _PARAM_TAGS)]
        template = _MESSAGES.get(err["type"])
        if template:
            msg = template.format(**(err.get("ctx") or {}))
        else:
            msg = err["msg"].removeprefix("Value error, ")
        # Validators may name a sub-field themselves ("path: file not found").
        head, sep, rest = msg.partition(": ")
        if sep and re.fullmatch(r"[a-z_][a-z_.]*", head) and not head.startswith(("unknown", "cannot")):
            loc.append(head)
            msg = rest
        path = ".".join(loc) or "(top level)"
        if path not in seen:  # one message per field (unions report each member)
            seen.add(path)
            lines.append(f"{path}: {msg}")
    return lines


def check_environment(spec: Spec) -> None:
    """Raise :class:`SpecError` unless this machine can run ``spec`` (layer 2, see above).

    Imports the user's modules and looks at files and installed packages; builds,
    starts and writes nothing.
    """
    import importlib.util

    import searchers
    from pipeline.data import SOURCES
    from pipeline.models import BUILDERS
    from pipeline.streaming import FORMATS, is_pattern, list_shards

    errors: list[str] = []
    refs = [("model.builder", spec.model.builder)] if spec.model.builder not in BUILDERS else []
    refs += [(f"training.callbacks.{i}.factory", c.factory)
             for i, c in enumerate(spec.training.callbacks)]
    refs += [("space.builder", ref) for ref in spec._user_builders()]
    for field, ref in refs:
        problem = _import_problem(ref)
        if problem:
            errors.append(f"{field}: {problem}")
    path = spec.data.path
    if path and SOURCES.needs_path(spec.data.source) and ("://" not in path or path.startswith("file://")):
        local = path.removeprefix("file://")
        if is_pattern(local) or (spec.data.source in FORMATS and Path(local).is_dir()):
            try:
                list_shards(local, source=spec.data.source)
            except ValueError as exc:
                errors.append(str(exc))
        elif not Path(local).exists():
            errors.append(f"data.path: file not found: {path}")
    restore = spec.searcher.restore_from
    if restore and "://" not in restore and not list(Path(restore).glob("searcher-state-*.pkl")):
        errors.append(f"searcher.restore_from: no searcher state (searcher-state-*.pkl) in {restore}")
    if spec.tracking.mlflow_uri is not None and importlib.util.find_spec("mlflow") is None:
        errors.append("tracking.mlflow_uri: MLflow tracking needs the mlflow package: "
                      "pip install -e '.[mlflow]'")
    if spec.resources.workers > 1:
        import keras

        if keras.backend.backend() != "tensorflow":
            errors.append(f"resources.workers: {spec.resources.workers} workers per trial run "
                          "TensorFlow's MultiWorkerMirroredStrategy; the Keras backend is "
                          f"{keras.backend.backend()}, set KERAS_BACKEND=tensorflow or workers: 1")
    errors.extend(searchers.check_environment(spec))
    if errors:
        raise SpecError(errors)


def parse_spec(raw: Any, source: str = "spec", *, environment: bool = True) -> Spec:
    """Validate a mapping into a :class:`Spec`, raising :class:`SpecError`.

    ``environment=False`` checks the schema only (layer 1): what reading stored
    results needs, on a machine that may lack the user's code and data.
    """
    if not isinstance(raw, dict):
        kind = "empty" if raw is None else type(raw).__name__
        raise SpecError([f"(top level): {source} must be a mapping of sections, got {kind}"])
    try:
        spec = Spec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(_format(exc)) from None
    if environment:
        check_environment(spec)
    return spec


def load_spec(path: str | Path, *, environment: bool = True) -> Spec:
    """Read a YAML spec (``yaml.safe_load`` only) and validate it (see :func:`parse_spec`)."""
    p = Path(path)
    if not p.is_file():
        raise SpecError([f"(file): spec file not found: {p}"])
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError([f"(yaml): {p}{where}: {problem}"]) from None
    except UnicodeDecodeError:
        raise SpecError([f"(file): {p} is not UTF-8 text"]) from None
    return parse_spec(raw, source=str(p), environment=environment)
