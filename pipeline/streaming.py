"""Sharded parquet data larger than memory: described on the driver, streamed in each trial.

A ``parquet`` source whose ``data.path`` is a folder (every ``*.parquet`` file under
it) or a glob (``s3://bucket/train/*.parquet``, ``data/part-*.parquet``) is never
loaded whole. :func:`load_shards` returns a :class:`StreamedDataset`: a small,
picklable description that goes to every trial through the object store -- the
shard list with each shard's row count (from the parquet footers), the split,
the label classes and the training split's feature statistics. Each trial then
reads its batches from the shards itself, one row group at a time.

**Split rule: by shard.** Shards are ranked by a hash of the spec's ``seed`` and
the shard's path relative to the folder (or to the glob's fixed prefix); the first
``round(n * test_fraction)`` shards are the test split, the next
``round(n * validation_fraction)`` the validation split (at least one each when
the fraction is not 0), the rest train. The fractions therefore count shards,
not rows. The split depends only on the seed and the shard names (not on the
order a listing returns them in): every trial, ``pipeline best`` and a rerun see
the same one.

**Statistics, once, from the training split only.** One pass on the driver
streams the training shards and keeps, per label class, the row count and each
feature's mean and sum of squared deviations (merged batch by batch), plus each
feature's min and max: enough for ``scaling`` (standard, minmax) and for
``select_k``'s ANOVA F-scores, which the trials then never recompute. The same
pass reads the label column of the validation and test shards, so the classes
are those of the whole data, as for in-memory sources.

Example (a local folder of four shards):
    >>> import tempfile, numpy as np, pyarrow as pa, pyarrow.parquet as pq
    >>> from pipeline.spec import DataSpec
    >>> root = tempfile.mkdtemp()
    >>> for i in range(4):
    ...     x = np.arange(10, dtype="float32") + 10 * i
    ...     pq.write_table(pa.table({"x": x, "label": (x % 2).astype("int64")}),
    ...                    f"{root}/part-{i}.parquet")
    >>> ds = load_shards(DataSpec(source="parquet", path=root, validation_fraction=0.25,
    ...                           test_fraction=0.25), seed=0)
    >>> [ds.rows(s) for s in ("train", "val", "test")], ds.input_shape, ds.num_classes
    ([20, 10, 10], (1,), 2)
    >>> sum(len(y) for _, y in ds.batches("train", batch_size=8))
    20
"""

from __future__ import annotations

import fnmatch
import hashlib
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, Iterator

import numpy as np

from pipeline.s3 import open_filesystem

SPLITS = ("train", "val", "test")
_PATTERN = "*?["
_READ_ROWS = 8192  # rows per batch read from a shard (a row group is read whole, then sliced)
_FOOTER_THREADS = 16


class ShardError(ValueError):
    """The shards cannot be used; the message starts with the spec field it is about."""


def is_pattern(path: str) -> bool:
    """``path`` is a glob (``*``, ``?`` or ``[``).

    >>> is_pattern("s3://b/train/*.parquet"), is_pattern("s3://b/train/")
    (True, False)
    """
    return any(c in path for c in _PATTERN)


def _split_pattern(path: str) -> tuple[str, str]:
    """(fixed prefix, pattern below it): ``s3://b/t/*.parquet`` -> (``s3://b/t``, ``*.parquet``)."""
    parts = path.split("/")
    first = next(i for i, p in enumerate(parts) if is_pattern(p))
    return "/".join(parts[:first]), "/".join(parts[first:])


def _base(path: str) -> str:
    """The folder part of a shard path: the glob's fixed prefix, or the folder itself."""
    return _split_pattern(path)[0] if is_pattern(path) else path.rstrip("/")


def list_shards(path: str, endpoint_override: str | None = None) -> tuple[Any, str, list[str]]:
    """(filesystem, base inside it, shard paths inside it, sorted) for a folder or a glob.

    A folder gives every ``*.parquet`` file below it; a glob, every file it matches
    (``*`` also crosses ``/``). Names starting with ``_`` or ``.`` (``_SUCCESS``) are skipped.
    """
    import pyarrow.fs as pafs

    base, pattern = _base(path), _split_pattern(path)[1] if is_pattern(path) else "**.parquet"
    fs, inside = open_filesystem(base, endpoint_override)
    inside = inside.rstrip("/")
    recursive = "/" in pattern or pattern.startswith("**")
    try:
        infos = fs.get_file_info(pafs.FileSelector(inside, recursive=recursive, allow_not_found=True))
    except OSError as exc:
        raise ShardError(f"data.path: cannot list {base}: {exc}") from None
    found = []
    for info in infos:
        rel = info.path[len(inside):].lstrip("/")
        hidden = any(part.startswith(("_", ".")) for part in rel.split("/"))
        if info.type == pafs.FileType.File and not hidden and fnmatch.fnmatchcase(rel, pattern):
            found.append(info.path)
    if not found:
        raise ShardError(f"data.path: no parquet shards match {path}")
    return fs, inside, sorted(found)


def is_sharded(path: str, endpoint_override: str | None = None) -> bool:
    """``path`` names shards (a glob or a folder) rather than one file (may ask the storage)."""
    import pyarrow.fs as pafs

    if is_pattern(path) or path.endswith("/"):
        return True
    fs, inside = open_filesystem(path, endpoint_override)
    try:
        return fs.get_file_info(inside).type == pafs.FileType.Directory
    except OSError:
        return False  # the one-file reader reports what is wrong


def assign_splits(names: list[str], seed: int, validation_fraction: float,
                  test_fraction: float) -> dict[str, list[int]]:
    """Indices of ``names`` per split, ranked by a hash of ``seed`` and each name.

    >>> assign_splits([f"part-{i}" for i in range(10)], 0, 0.2, 0.1)
    {'train': [0, 1, 3, 4, 7, 8, 9], 'val': [2, 5], 'test': [6]}
    """
    n = len(names)
    rank = sorted(range(n), key=lambda i: hashlib.sha256(f"{seed}/{names[i]}".encode()).hexdigest())
    n_test = max(1, round(n * test_fraction)) if test_fraction else 0
    n_val = max(1, round(n * validation_fraction))
    if n - n_test - n_val < 1:
        raise ShardError(
            f"data.path: {n} shard(s) are too few for the validation and test fractions "
            f"(the split is by shard: {n_val} validation + {n_test} test shards leave none to train)")
    return {"train": sorted(rank[n_test + n_val:]), "val": sorted(rank[n_test:n_test + n_val]),
            "test": sorted(rank[:n_test])}


@dataclass(frozen=True)
class TrainStats:
    """Per-class moments of every feature over the training split, and its min and max.

    ``count[c]`` rows of class ``c``, their feature means ``mean[c]`` and sums of squared
    deviations ``m2[c]``; ``low``/``high``: per-feature min and max over all of them.
    """

    count: np.ndarray  # (classes,)
    mean: np.ndarray   # (classes, features)
    m2: np.ndarray     # (classes, features)
    low: np.ndarray    # (features,)
    high: np.ndarray   # (features,)

    def center_scale(self, kind: str) -> tuple[np.ndarray, np.ndarray]:
        """(center, scale) per feature: ``standard`` = (mean, population std), ``minmax`` = (min, max - min)."""
        if kind == "minmax":
            return self.low, self.high - self.low
        n = self.count.sum()
        mean = (self.count[:, None] * self.mean).sum(axis=0) / n
        m2 = self.m2.sum(axis=0) + (self.count[:, None] * (self.mean - mean) ** 2).sum(axis=0)
        return mean, np.sqrt(m2 / n)

    def f_scores(self) -> np.ndarray:
        """One-way ANOVA F per feature (what ``sklearn.feature_selection.f_classif`` computes)."""
        present = self.count > 0
        count, mean, m2 = self.count[present], self.mean[present], self.m2[present]
        n, k = count.sum(), len(count)
        overall = (count[:, None] * mean).sum(axis=0) / n
        between = (count[:, None] * (mean - overall) ** 2).sum(axis=0) / max(k - 1, 1)
        within = m2.sum(axis=0) / max(n - k, 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            return between / within


class _Moments:
    """Accumulates :class:`TrainStats` batch by batch, keyed by the raw label value."""

    def __init__(self, width: int):
        self.by_label: dict[Any, list] = {}  # label -> [count, mean, m2]
        self.low = np.full(width, np.inf)
        self.high = np.full(width, -np.inf)

    def add(self, x: np.ndarray, y: np.ndarray) -> None:
        if not len(y):
            return
        x = x.astype("float64")
        self.low = np.minimum(self.low, x.min(axis=0))
        self.high = np.maximum(self.high, x.max(axis=0))
        labels, which = np.unique(y, return_inverse=True)
        for i, label in enumerate(labels.tolist()):
            rows = x[which == i]
            nb, mb = len(rows), rows.mean(axis=0)
            m2b = ((rows - mb) ** 2).sum(axis=0)
            if label not in self.by_label:
                self.by_label[label] = [nb, mb, m2b]
                continue
            na, ma, m2a = self.by_label[label]
            total = na + nb
            delta = mb - ma  # Chan et al.'s merge of two groups' moments
            self.by_label[label] = [total, ma + delta * nb / total,
                                    m2a + m2b + delta ** 2 * na * nb / total]

    def stats(self, classes: list[Any]) -> TrainStats:
        width = len(self.low)
        zero = [0, np.zeros(width), np.zeros(width)]
        rows = [self.by_label.get(c, zero) for c in classes]
        return TrainStats(np.array([r[0] for r in rows], dtype="int64"),
                          np.stack([r[1] for r in rows]), np.stack([r[2] for r in rows]),
                          self.low, self.high)


@dataclass(frozen=True)
class Shard:
    path: str  # inside the filesystem (``bucket/key`` for S3)
    rows: int


@dataclass(frozen=True)
class StreamedDataset:
    """Sharded data read in batches where it is used; see the module docstring.

    ``classes[i]`` is the label value the model's output ``i`` stands for.
    """

    path: str  # data.path as given (a folder or glob)
    endpoint_override: str | None
    features: tuple[str, ...]
    label: str
    classes: tuple[Any, ...]
    shards: dict[str, tuple[Shard, ...]]  # split -> its shards
    train_stats: TrainStats
    shuffle_buffer: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (len(self.features),)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def rows(self, split: str) -> int:
        return sum(s.rows for s in self.shards[split])

    @property
    def fingerprint(self) -> str:
        """12 hex digits naming the train and validation shards (what a trial sees)."""
        text = "|".join(f"{split}:{s.path}:{s.rows}" for split in ("train", "val")
                        for s in self.shards[split])
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def for_trials(self) -> "StreamedDataset":
        """A copy without the test shards: what goes to the object store."""
        return replace(self, shards={**self.shards, "test": ()})

    def summary(self) -> str:
        counts = ", ".join(f"{split} {len(self.shards[split])} ({self.rows(split):,} rows)"
                           for split in SPLITS)
        return f"data: {sum(len(s) for s in self.shards.values())} shards streamed: {counts}"

    def _read(self, shards: list[Shard], columns: list[str]) -> Iterator[Any]:
        """Record batches of ``columns``, shard after shard (one row group in memory at a time)."""
        import pyarrow.parquet as pq

        fs, _ = open_filesystem(_base(self.path), self.endpoint_override)
        for shard in shards:
            with fs.open_input_file(shard.path) as f:
                yield from pq.ParquetFile(f).iter_batches(batch_size=_READ_ROWS, columns=columns)

    def _arrays(self, shards: list[Shard]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        classes = np.asarray(self.classes)
        text = classes.dtype.kind in "US"
        classes = classes.astype(object) if text else classes
        for batch in self._read(shards, [*self.features, self.label]):
            x = np.column_stack([batch.column(c).to_numpy(zero_copy_only=False)
                                 for c in self.features]).astype("float32")
            raw = batch.column(self.label).to_numpy(zero_copy_only=False)
            raw = raw.astype(object) if text else raw
            y = np.searchsorted(classes, raw)
            bad = (y >= len(classes)) | (classes[np.minimum(y, len(classes) - 1)] != raw)
            if bad.any():
                raise ShardError(f"data.label: value {raw[bad][0]!r} was not among the classes "
                                 f"counted when the run started: the shards under {self.path} changed")
            yield x, y.astype("int64")

    def batches(self, split: str, batch_size: int,
                shuffle_seed: Any = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """One pass over ``split`` in ``(x, y)`` batches: ceil(rows / batch_size) of them.

        With a ``shuffle_seed`` the shard order is shuffled, and rows are shuffled within
        windows of ``shuffle_buffer`` rows; without, shards and rows come in order.
        """
        shards = list(self.shards[split])
        rng = None if shuffle_seed is None else np.random.default_rng(shuffle_seed)
        if rng is not None:
            shards = [shards[i] for i in rng.permutation(len(shards))]
        window = max(self.shuffle_buffer, batch_size) if rng is not None else batch_size
        xs: list[np.ndarray] = []
        ys: list[np.ndarray] = []
        held = 0
        for x, y in self._arrays(shards):
            xs.append(x)
            ys.append(y)
            held += len(y)
            if held >= window:
                yield from self._emit(xs, ys, batch_size, rng, keep_rest=True)
                held = len(ys[0]) if ys else 0
        if held:
            yield from self._emit(xs, ys, batch_size, rng, keep_rest=False)

    @staticmethod
    def _emit(xs: list, ys: list, batch_size: int, rng, keep_rest: bool):
        x, y = np.concatenate(xs), np.concatenate(ys)
        xs.clear()
        ys.clear()
        if rng is not None:
            order = rng.permutation(len(y))
            x, y = x[order], y[order]
        full = len(y) // batch_size * batch_size if keep_rest else len(y)
        for start in range(0, full, batch_size):
            yield x[start:start + batch_size], y[start:start + batch_size]
        if full < len(y):
            xs.append(x[full:])
            ys.append(y[full:])

    def _pipeline(self, split: str, batch_size: int, seed: int | None):
        """A repeating input for ``fit``/``evaluate``: tf.data with TensorFlow, else a generator."""
        import itertools

        import keras

        epochs = itertools.count()

        def one_pass():
            shuffle = None if seed is None else (seed, next(epochs))
            return self.batches(split, batch_size, shuffle)

        if keras.backend.backend() != "tensorflow":
            return itertools.chain.from_iterable(one_pass() for _ in itertools.count())
        import tensorflow as tf

        signature = (tf.TensorSpec((None, len(self.features)), tf.float32),
                     tf.TensorSpec((None,), tf.int64))
        return tf.data.Dataset.from_generator(one_pass, output_signature=signature).repeat().prefetch(2)

    def fit_inputs(self, batch_size: int, seed: int) -> dict[str, Any]:
        """``model.fit`` inputs: the training shards shuffled anew each epoch, validation in order."""
        return {"x": self._pipeline("train", batch_size, seed),
                "steps_per_epoch": math.ceil(self.rows("train") / batch_size), "shuffle": False,
                "validation_data": self._pipeline("val", batch_size, None),
                "validation_steps": math.ceil(self.rows("val") / batch_size)}

    def eval_inputs(self, split: str, batch_size: int) -> dict[str, Any]:
        """``model.evaluate`` inputs: one pass over ``split``."""
        return {"x": self._pipeline(split, batch_size, None),
                "steps": math.ceil(self.rows(split) / batch_size)}


def _columns(spec: Any, fs, shards: list[str]) -> tuple[list[str], list[int]]:
    """(feature columns, rows per shard), from the footers; every shard must have the columns."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    def footer(path: str):
        try:
            with fs.open_input_file(path) as f:
                meta = pq.ParquetFile(f).metadata
        except (OSError, pa.ArrowInvalid) as exc:
            raise ShardError(f"data.path: cannot read the parquet footer of {path}: {exc}") from None
        return meta.schema.to_arrow_schema(), meta.num_rows

    with ThreadPoolExecutor(min(_FOOTER_THREADS, len(shards))) as pool:
        footers = list(pool.map(footer, shards))
    schema = footers[0][0]
    cols = schema.names
    if spec.label not in cols:
        raise ShardError(f"data.label: column '{spec.label}' not in {shards[0]} "
                         f"(columns: {', '.join(cols)})")
    features = spec.features or [c for c in cols if c != spec.label]
    for path, (other, _) in zip(shards, footers):
        missing = [c for c in [*features, spec.label] if c not in other.names]
        if missing:
            raise ShardError(f"data.features: columns not in shard {path}: {', '.join(missing)}")
    odd = [c for c in features if not (pa.types.is_integer(schema.field(c).type)
                                       or pa.types.is_floating(schema.field(c).type)
                                       or pa.types.is_boolean(schema.field(c).type))]
    if odd:
        raise ShardError(f"data.features: streamed features must be numeric columns; "
                         f"not: {', '.join(f'{c} ({schema.field(c).type})' for c in odd)}")
    return features, [rows for _, rows in footers]


def load_shards(spec: Any, seed: int) -> StreamedDataset:
    """Describe the shards of ``spec.path``: split, classes, training statistics (one pass)."""
    if spec.limit:
        raise ShardError("data.limit: not supported for sharded parquet; "
                         "choose fewer shards with the path's glob instead")
    fs, base, paths = list_shards(spec.path, spec.endpoint_override)
    features, counts = _columns(spec, fs, paths)
    names = [p[len(base):].lstrip("/") for p in paths]
    split = assign_splits(names, seed, spec.validation_fraction, spec.test_fraction)
    shards = {s: tuple(Shard(paths[i], counts[i]) for i in split[s]) for s in SPLITS}
    empty = [s for s in ("train", "val") if sum(x.rows for x in shards[s]) == 0]
    if empty:
        raise ShardError(f"data.path: the {' and '.join(empty)} shards of {spec.path} hold no rows")
    # One pass: features and labels of the training shards, labels of the others.
    probe = StreamedDataset(spec.path, spec.endpoint_override, tuple(features), spec.label, (),
                            shards, TrainStats(*[np.zeros(0)] * 5), spec.shuffle_buffer)
    moments = _Moments(len(features))
    labels: set[Any] = set()
    for batch in probe._read(list(shards["train"]), [*features, spec.label]):
        x = np.column_stack([batch.column(c).to_numpy(zero_copy_only=False) for c in features])
        y = batch.column(spec.label).to_numpy(zero_copy_only=False)
        moments.add(x, y)
        labels.update(np.unique(y).tolist())
    for batch in probe._read([*shards["val"], *shards["test"]], [spec.label]):
        labels.update(np.unique(batch.column(0).to_numpy(zero_copy_only=False)).tolist())
    classes = sorted(labels)
    return replace(probe, classes=tuple(classes), train_stats=moments.stats(classes))
