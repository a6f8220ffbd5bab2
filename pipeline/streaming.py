"""Sharded data larger than memory (parquet, TFRecord): described on the driver, streamed in each trial.

A ``parquet`` or ``tfrecord`` source whose ``data.path`` is a folder (every
``*.parquet``, or ``*.tfrecord``/``*.tfrecords`` and their ``.gz``, under it) or a
glob (``s3://bucket/train/*.parquet``, ``data/part-*.tfrecord.gz``) is never
loaded whole. :func:`load_shards` returns a :class:`StreamedDataset`: a small,
picklable description that goes to every trial through the object store -- the
shard list with each shard's row count, the split, the label classes and the
training split's feature statistics. Each trial then reads its batches from the
shards itself, one row group (parquet) or 8,192 records (TFRecord) at a time.

What differs between the formats is a :class:`ShardFormat` (listing patterns,
the features and how one shard is read); listing, splitting, the statistics pass,
batching and shuffling are shared. Parquet shards name and type their columns in
their footers; TFRecord files of ``tf.train.Example`` records have no schema, so
the spec declares it: ``data.features`` (required), ``data.label`` and
``data.dtypes`` (``float``, ``int``, ``bytes`` for a text label, ``[n]`` for n
values per record; default ``float`` features and an ``int`` label). TFRecord
bytes are read with pyarrow (local or S3, GZIP when the name ends in ``.gz`` or
``data.compression: gzip``) and parsed with ``tf.io.parse_example``.

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
pass reads the labels of the validation and test shards, so the classes are
those of the whole data, as for in-memory sources, and counts every shard's rows.

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
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Iterator

import numpy as np

from pipeline.s3 import open_filesystem

SPLITS = ("train", "val", "test")
_PATTERN = "*?["
_READ_ROWS = 8192  # rows per batch read from a shard (a row group is read whole, then sliced)
_FOOTER_THREADS = 16
_STREAM_BUFFER = 1 << 20  # bytes read at a time from a TFRecord shard
_MAX_RECORD = 1 << 28  # a longer TFRecord record is taken for a damaged file
_DTYPE = re.compile(r"(float|int|bytes)(?:\[([1-9][0-9]*)\])?")


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


def list_shards(path: str, endpoint_override: str | None = None,
                source: str = "parquet") -> tuple[Any, str, list[str]]:
    """(filesystem, base inside it, shard paths inside it, sorted) for a folder or a glob.

    A folder gives every file of ``source``'s kind below it (``*.parquet``; ``*.tfrecord``,
    ``*.tfrecords`` and their ``.gz``); a glob, every file it matches (``*`` also crosses
    ``/``). Names starting with ``_`` or ``.`` (``_SUCCESS``) are skipped.
    """
    import pyarrow.fs as pafs

    patterns: tuple[str, ...]
    if is_pattern(path):
        patterns = (_split_pattern(path)[1],)
        recursive = "/" in patterns[0] or patterns[0].startswith("**")
    else:
        patterns, recursive = FORMATS[source].folder_patterns, True
    base = _base(path)
    fs, inside = open_filesystem(base, endpoint_override)
    inside = inside.rstrip("/")
    try:
        infos = fs.get_file_info(pafs.FileSelector(inside, recursive=recursive, allow_not_found=True))
    except OSError as exc:
        raise ShardError(f"data.path: cannot list {base}: {exc}") from None
    found = []
    for info in infos:
        rel = info.path[len(inside):].lstrip("/")
        hidden = any(part.startswith(("_", ".")) for part in rel.split("/"))
        if (info.type == pafs.FileType.File and not hidden
                and any(fnmatch.fnmatchcase(rel, pattern) for pattern in patterns)):
            found.append(info.path)
    if not found:
        raise ShardError(f"data.path: no {source} shards match {path}")
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


def parse_dtype(text: str) -> tuple[str, int] | None:
    """A ``data.dtypes`` value as (kind, values per record); None if it is not one.

    >>> parse_dtype("float"), parse_dtype("int[3]"), parse_dtype("double")
    (('float', 1), ('int', 3), None)
    """
    match = _DTYPE.fullmatch(text.strip()) if isinstance(text, str) else None
    return (match[1], int(match[2] or 1)) if match else None


class ShardFormat:
    """How the shards of one ``data.source`` are found and read; the rest is shared.

    A format lists its folder patterns, names the features it reads (checked against
    the shards) and reads one shard as ``(features, raw labels)`` numpy batches.
    Instances are small and picklable: they travel with the :class:`StreamedDataset`.
    """

    name: ClassVar[str]
    folder_patterns: ClassVar[tuple[str, ...]]  # the files a folder given as data.path holds

    @classmethod
    def from_spec(cls, spec: Any) -> "ShardFormat":
        return cls()

    def width(self, features: tuple[str, ...]) -> int:
        """Model inputs the features make: one per value."""
        return len(features)

    def features(self, spec: Any, fs: Any, paths: list[str]) -> list[str]:
        """The features to read, checked against the shards (raises :class:`ShardError`)."""
        raise NotImplementedError

    def read(self, fs: Any, path: str, features: tuple[str, ...] | list[str], label: str,
             with_features: bool = True) -> Iterator[tuple[Any, np.ndarray]]:
        """One shard in batches of ``(x, labels)`` (x: rows x width; None unless ``with_features``)."""
        raise NotImplementedError


@dataclass(frozen=True)
class ParquetShards(ShardFormat):
    """Parquet shards: the columns and their types come from the footers."""

    name: ClassVar[str] = "parquet"
    folder_patterns: ClassVar[tuple[str, ...]] = ("*.parquet",)

    def features(self, spec: Any, fs: Any, paths: list[str]) -> list[str]:
        """Every shard must have the columns, numeric (all but the label unless named)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        def footer(path: str):
            try:
                with fs.open_input_file(path) as f:
                    return pq.ParquetFile(f).metadata.schema.to_arrow_schema()
            except (OSError, pa.ArrowInvalid) as exc:
                raise ShardError(f"data.path: cannot read the parquet footer of {path}: {exc}") from None

        with ThreadPoolExecutor(min(_FOOTER_THREADS, len(paths))) as pool:
            schemas = list(pool.map(footer, paths))
        schema = schemas[0]
        cols = schema.names
        if spec.label not in cols:
            raise ShardError(f"data.label: column '{spec.label}' not in {paths[0]} "
                             f"(columns: {', '.join(cols)})")
        features = spec.features or [c for c in cols if c != spec.label]
        for path, other in zip(paths, schemas):
            missing = [c for c in [*features, spec.label] if c not in other.names]
            if missing:
                raise ShardError(f"data.features: columns not in shard {path}: {', '.join(missing)}")
        odd = [c for c in features if not (pa.types.is_integer(schema.field(c).type)
                                           or pa.types.is_floating(schema.field(c).type)
                                           or pa.types.is_boolean(schema.field(c).type))]
        if odd:
            raise ShardError(f"data.features: streamed features must be numeric columns; "
                             f"not: {', '.join(f'{c} ({schema.field(c).type})' for c in odd)}")
        return features

    def read(self, fs: Any, path: str, features: tuple[str, ...] | list[str], label: str,
             with_features: bool = True) -> Iterator[tuple[Any, np.ndarray]]:
        """One row group in memory at a time, sliced into batches."""
        import pyarrow.parquet as pq

        columns = [*features, label] if with_features else [label]
        with fs.open_input_file(path) as f:
            for batch in pq.ParquetFile(f).iter_batches(batch_size=_READ_ROWS, columns=columns):
                x = (np.column_stack([batch.column(c).to_numpy(zero_copy_only=False) for c in features])
                     if with_features else None)
                yield x, batch.column(label).to_numpy(zero_copy_only=False)


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
        table.append(crc)
    return table


_CRC32C = _crc32c_table()


def masked_crc32c(data: bytes) -> int:
    """TFRecord's checksum: CRC-32C, rotated and offset (pure Python: for short fields only).

    >>> hex(masked_crc32c(b"123456789"))  # the CRC-32C check value is 0xe3069283
    '0xc78ab0e5'
    """
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC32C[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    crc ^= 0xFFFFFFFF
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecords(stream: Any, path: str, compressed: bool = False) -> Iterator[bytes]:
    """The records of a TFRecord file read from ``stream`` (a pyarrow input stream).

    A record is its length (uint64, little-endian), the length's masked CRC-32C, the bytes
    and their CRC. The first length's CRC is checked (a file of another format, or GZIP
    read as plain, fails there); the data CRCs are not (a damaged record fails to parse).
    """
    first = True
    while True:
        head = stream.read(12)
        if not head:
            return
        size = int.from_bytes(head[:8], "little") if len(head) == 12 else -1
        if first and size >= 0 and masked_crc32c(head[:8]) != int.from_bytes(head[8:], "little"):
            hint = (" (it is GZIP-compressed: name it *.gz or set data.compression: gzip)"
                    if head[:2] == b"\x1f\x8b" and not compressed else "")
            raise ShardError(f"data.{'compression' if hint else 'path'}: {path} is not a TFRecord file"
                             f"{hint}")
        first = False
        body = stream.read(size + 4) if 0 <= size <= _MAX_RECORD else b""
        if len(body) != size + 4:
            raise ShardError(f"data.path: {path} is cut short (its last record is incomplete)")
        yield body[:size]


_KINDS = {"float": "float_list", "int": "int64_list", "bytes": "bytes_list"}


@dataclass(frozen=True)
class TFRecordShards(ShardFormat):
    """TFRecord shards of ``tf.train.Example`` records: no schema in the files, so the spec
    declares it (``data.features``, ``data.label``, ``data.dtypes``). Read with pyarrow
    (local or S3, GZIP or not) and parsed by ``tf.io.parse_example``.
    """

    name: ClassVar[str] = "tfrecord"
    folder_patterns: ClassVar[tuple[str, ...]] = ("*.tfrecord", "*.tfrecords", "*.tfrecord.gz",
                                                  "*.tfrecords.gz")
    types: tuple[tuple[str, str, int], ...] = ()  # (name, kind, values) per feature, the label last
    compression: str = "auto"  # auto (GZIP when the name ends in .gz) | gzip | none

    @classmethod
    def from_spec(cls, spec: Any) -> "TFRecordShards":
        declared = spec.dtypes or {}

        def kind(name: str, default: str) -> tuple[str, str, int]:
            parsed = parse_dtype(declared.get(name, default))
            if parsed is None:  # the spec checks this first
                raise ShardError(f"data.dtypes: '{name}': not a type: {declared[name]!r}")
            return (name, *parsed)

        return cls(tuple(kind(f, "float") for f in spec.features or ()) + (kind(spec.label, "int"),),
                   spec.compression)

    def width(self, features: tuple[str, ...]) -> int:
        return sum(n for _, _, n in self.types[:-1])

    def features(self, spec: Any, fs: Any, paths: list[str]) -> list[str]:
        """As declared: each shard's first record is checked as it is read."""
        return [name for name, _, _ in self.types[:-1]]

    def _check(self, record: bytes, path: str) -> None:
        """Raise a :class:`ShardError` naming the field if ``record`` lacks a declared feature."""
        from google.protobuf.message import DecodeError
        from tensorflow.core.example.example_pb2 import Example

        try:
            have = Example.FromString(record).features.feature
        except DecodeError:
            raise ShardError(f"data.path: the records of {path} are not tf.train.Example") from None
        for i, (name, kind, n) in enumerate(self.types):
            field = "data.label" if i == len(self.types) - 1 else "data.features"
            if name not in have:
                raise ShardError(f"{field}: '{name}' is not in the records of {path} "
                                 f"(they hold: {', '.join(sorted(have))})")
            stored = have[name].WhichOneof("kind")
            count = len(getattr(have[name], stored).value) if stored else 0
            if stored != _KINDS[kind] or count != n:
                got = {v: k for k, v in _KINDS.items()}.get(stored or "", "empty")
                got += f"[{count}]" if count != 1 else ""
                raise ShardError(f"data.dtypes: '{name}' is {got} in the records of {path}, "
                                 f"declared {kind}{f'[{n}]' if n != 1 else ''}")

    def read(self, fs: Any, path: str, features: tuple[str, ...] | list[str], label: str,
             with_features: bool = True) -> Iterator[tuple[Any, np.ndarray]]:
        """Records framed here, parsed ``_READ_ROWS`` at a time (the features as declared)."""
        import tensorflow as tf

        dtypes = {"float": tf.float32, "int": tf.int64, "bytes": tf.string}
        wanted = self.types if with_features else self.types[-1:]
        last = self.types[-1][0]
        parse = {name: tf.io.FixedLenFeature([] if name == last else [n], dtypes[kind])
                 for name, kind, n in wanted}
        compressed = self.compression == "gzip" or (self.compression == "auto" and path.endswith(".gz"))

        def batch(records: list[bytes]) -> tuple[Any, np.ndarray]:
            try:
                out = tf.io.parse_example(records, parse)
            except tf.errors.InvalidArgumentError as exc:
                for record in records:  # name the field of the first record that differs
                    self._check(record, path)
                raise ShardError(f"data.dtypes: a record of {path} does not parse as declared: "
                                 f"{exc.message.splitlines()[0]}") from None
            y = out[last].numpy()
            if y.dtype == object:  # bytes labels: text, like parquet's string columns
                y = np.array([v.decode("utf-8", "backslashreplace") for v in y], dtype=object)
            x = (np.concatenate([out[name].numpy() for name, _, _ in self.types[:-1]], axis=1)
                 if with_features else None)
            return x, y

        try:
            with fs.open_input_stream(path, compression="gzip" if compressed else None,
                                      buffer_size=_STREAM_BUFFER) as stream:
                records: list[bytes] = []
                for i, record in enumerate(tfrecords(stream, path, compressed)):
                    if i == 0:  # every shard's first record, as parquet's footers are
                        self._check(record, path)
                    records.append(record)
                    if len(records) == _READ_ROWS:
                        yield batch(records)
                        records = []
                if records:
                    yield batch(records)
        except OSError as exc:
            raise ShardError(f"data.path: cannot read {path}: {exc}") from None


FORMATS: dict[str, type[ShardFormat]] = {f.name: f for f in (ParquetShards, TFRecordShards)}


def shard_format(spec: Any) -> ShardFormat:
    """The :class:`ShardFormat` of ``spec.source`` (``parquet`` or ``tfrecord``)."""
    return FORMATS[spec.source].from_spec(spec)


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
    reader: ShardFormat  # how the shards are read (parquet, tfrecord)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self.reader.width(self.features),)

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
        return (f"data: {sum(len(s) for s in self.shards.values())} {self.reader.name} shards "
                f"streamed: {counts}")

    def _raw(self, shards: list[Shard], with_features: bool = True) -> Iterator[tuple[Any, np.ndarray]]:
        """``(x, raw labels)`` batches, shard after shard (a batch or row group in memory at a time)."""
        fs, _ = open_filesystem(_base(self.path), self.endpoint_override)
        for shard in shards:
            yield from self.reader.read(fs, shard.path, self.features, self.label, with_features)

    def _arrays(self, shards: list[Shard]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        classes = np.asarray(self.classes)
        text = classes.dtype.kind in "US"
        classes = classes.astype(object) if text else classes
        for x, raw in self._raw(shards):
            raw = raw.astype(object) if text else raw
            y = np.searchsorted(classes, raw)
            bad = (y >= len(classes)) | (classes[np.minimum(y, len(classes) - 1)] != raw)
            if bad.any():
                raise ShardError(f"data.label: value {raw[bad][0]!r} was not among the classes "
                                 f"counted when the run started: the shards under {self.path} changed")
            yield x.astype("float32"), y.astype("int64")

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

        signature = (tf.TensorSpec((None, *self.input_shape), tf.float32),
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


def load_shards(spec: Any, seed: int) -> StreamedDataset:
    """Describe the shards of ``spec.path``: split, row counts, classes, training statistics.

    One pass: features and labels of the training shards, labels of the others, each
    shard's rows counted as it is read (the same code for every :class:`ShardFormat`).
    """
    reader = shard_format(spec)
    if spec.limit:
        raise ShardError(f"data.limit: not supported for sharded {reader.name}; "
                         "choose fewer shards with the path's glob instead")
    fs, base, paths = list_shards(spec.path, spec.endpoint_override, reader.name)
    features = tuple(reader.features(spec, fs, paths))
    names = [p[len(base):].lstrip("/") for p in paths]
    split = assign_splits(names, seed, spec.validation_fraction, spec.test_fraction)
    moments = _Moments(reader.width(features))
    labels: set[Any] = set()
    shards: dict[str, tuple[Shard, ...]] = {}
    for name in SPLITS:
        counted = []
        for i in split[name]:
            rows = 0
            for x, y in reader.read(fs, paths[i], features, spec.label, with_features=name == "train"):
                if x is not None:
                    moments.add(x, y)
                labels.update(np.unique(y).tolist())
                rows += len(y)
            counted.append(Shard(paths[i], rows))
        shards[name] = tuple(counted)
    empty = [s for s in ("train", "val") if sum(x.rows for x in shards[s]) == 0]
    if empty:
        raise ShardError(f"data.path: the {' and '.join(empty)} shards of {spec.path} hold no rows")
    classes = sorted(labels)
    return StreamedDataset(spec.path, spec.endpoint_override, features, spec.label, tuple(classes),
                           shards, moments.stats(classes), spec.shuffle_buffer, reader)
