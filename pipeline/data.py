"""Datasets: built-in sources that need no network, files, and fixed splits.

Sources are looked up by name in :data:`SOURCES`. Splits are fixed by the
spec's seed, so every trial (and ``pipeline best``) sees the same train,
validation and test rows; the test split never reaches a trial.

Example:
    >>> from pipeline.data import load_dataset
    >>> from pipeline.spec import DataSpec
    >>> ds = load_dataset(DataSpec(source="digits", limit=300), seed=0)
    >>> ds.input_shape, ds.num_classes, len(ds.x_train) + len(ds.x_val) + len(ds.x_test)
    ((8, 8), 10, 300)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from pipeline.registry import Registry
from pipeline.s3 import open_filesystem

if TYPE_CHECKING:
    from pipeline.streaming import StreamedDataset


@dataclass(frozen=True)
class Dataset:
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def for_trials(self) -> "Dataset":
        """A copy without the test split: what goes to the object store."""
        empty_x = self.x_test[:0]
        return Dataset(self.x_train, self.y_train, self.x_val, self.y_val,
                       empty_x, self.y_test[:0], self.num_classes)


class _Sources(Registry[Callable[..., tuple[np.ndarray, np.ndarray]]]):
    """Data sources by name: ``@SOURCES.register("name", needs_path=True)`` on a loader
    ``(data spec, seed) -> (x, y)`` is all a new source takes (the spec checks names here)."""

    def __init__(self, kind: str):
        super().__init__(kind)
        self._with_path: set[str] = set()

    def register(self, *names: str, needs_path: bool = False):
        if needs_path:
            self._with_path.update(names)
        return super().register(*names)

    def needs_path(self, name: str) -> bool:
        """The source reads ``data.path`` (a file or URI), which the spec must then give."""
        return name in self._with_path


SOURCES = _Sources("data source")


@SOURCES.register("external")
def _external(spec: Any, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Arrays handed to ``pipeline.run(..., data=...)`` from Python (e.g. ``tuner.search(x, y)``)."""
    raise LookupError("data.source is 'external': the arrays were passed from Python and are "
                      "not stored with the results, so they cannot be reloaded here")


def _sklearn_data_file(name: str) -> str | None:
    """Path of a data file scikit-learn ships, found without importing scikit-learn."""
    import importlib.util
    import os

    found = importlib.util.find_spec("sklearn")
    if found is None or not found.submodule_search_locations:
        return None
    path = os.path.join(found.submodule_search_locations[0], "datasets", "data", name)
    return path if os.path.exists(path) else None


@SOURCES.register("digits")
def _digits(spec: Any, seed: int) -> tuple[np.ndarray, np.ndarray]:
    # scikit-learn's bundled copy: its rows (64 pixels 0-16, then the label) are what
    # load_digits returns; reading the file directly spares the driver the ~2 s
    # import of scikit-learn before the first trial can start.
    path = _sklearn_data_file("digits.csv.gz")
    if path is None:  # a scikit-learn that stores it elsewhere
        from sklearn.datasets import load_digits

        d = load_digits()
        return (d.images / 16.0).astype("float32"), d.target.astype("int64")
    rows = np.loadtxt(path, delimiter=",")
    return (rows[:, :-1].reshape(-1, 8, 8) / 16.0).astype("float32"), rows[:, -1].astype("int64")


@SOURCES.register("mnist1d")
def _mnist1d(spec: Any, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = spec.num_samples
    args.seed = seed
    d = make_dataset(args)  # generated offline; never downloads
    x = np.concatenate([d["x"], d["x_test"]]).astype("float32")
    y = np.concatenate([d["y"], d["y_test"]]).astype("int64")
    return x, y


def _open(path: str, endpoint_override: str | None):
    fs, rel = open_filesystem(path, endpoint_override)
    return fs.open_input_file(rel)


@SOURCES.register("npz", needs_path=True)
def _npz(spec: Any, seed: int) -> tuple[np.ndarray, np.ndarray]:
    import io

    with _open(spec.path, spec.endpoint_override) as f:
        arrays = np.load(io.BytesIO(f.read()))
    for key in (spec.features_key, spec.label):
        if key not in arrays:
            raise ValueError(f"data: npz file has no array '{key}' (has: {', '.join(arrays.files)})")
    return arrays[spec.features_key].astype("float32"), arrays[spec.label]


def _table(spec: Any, table) -> tuple[np.ndarray, np.ndarray]:
    cols = table.column_names
    if spec.label not in cols:
        raise ValueError(f"data.label: column '{spec.label}' not in file (columns: {', '.join(cols)})")
    features = spec.features or [c for c in cols if c != spec.label]
    missing = [c for c in features if c not in cols]
    if missing:
        raise ValueError(f"data.features: columns not in file: {', '.join(missing)}")
    x = np.stack([table.column(c).to_numpy(zero_copy_only=False) for c in features], axis=1)
    return x.astype("float32"), table.column(spec.label).to_numpy(zero_copy_only=False)


@SOURCES.register("csv", needs_path=True)
def _csv(spec: Any, seed: int) -> tuple[np.ndarray, np.ndarray]:
    import pyarrow.csv as pacsv

    with _open(spec.path, spec.endpoint_override) as f:
        return _table(spec, pacsv.read_csv(f))


@SOURCES.register("parquet", needs_path=True)
def _parquet(spec: Any, seed: int) -> tuple[np.ndarray, np.ndarray]:
    import pyarrow.parquet as pq

    with _open(spec.path, spec.endpoint_override) as f:
        return _table(spec, pq.read_table(f))


@SOURCES.register("tfrecord", needs_path=True)
def _tfrecord(spec: Any, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One TFRecord file, read whole (a folder or glob of them is streamed instead)."""
    from pipeline.streaming import ShardError, TFRecordShards

    reader = TFRecordShards.from_spec(spec)
    fs, inside = open_filesystem(spec.path, spec.endpoint_override)
    batches = list(reader.read(fs, inside, reader.features(spec, fs, [inside]), spec.label))
    if not batches:
        raise ShardError(f"data.path: no records in {spec.path}")
    return (np.concatenate([x for x, _ in batches]).astype("float32"),
            np.concatenate([y for _, y in batches]))


def _encode_labels(y: np.ndarray) -> tuple[np.ndarray, int]:
    classes, encoded = np.unique(y, return_inverse=True)
    return encoded.astype("int64"), len(classes)


def load_dataset(spec: Any, seed: int) -> "Dataset | StreamedDataset":
    """Load ``spec.source`` and split it into train/validation/test by ``seed``.

    A ``parquet`` or ``tfrecord`` path that is a folder or a glob of shards is not loaded:
    it gives a :class:`~pipeline.streaming.StreamedDataset` that trials read batch by batch.
    """
    from pipeline.streaming import FORMATS, is_sharded, load_shards

    if spec.source in FORMATS and is_sharded(spec.path, spec.endpoint_override):
        return load_shards(spec, seed)
    x, y = SOURCES[spec.source](spec, seed)
    if len(x) != len(y):
        raise ValueError(f"data: {len(x)} feature rows but {len(y)} labels")
    y, num_classes = _encode_labels(y)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    if spec.limit:
        order = order[: spec.limit]
    n = len(order)
    n_test = int(round(n * spec.test_fraction))
    n_val = int(round(n * spec.validation_fraction))
    test, val, train = order[:n_test], order[n_test:n_test + n_val], order[n_test + n_val:]
    if len(train) == 0 or len(val) == 0:
        raise ValueError(f"data: {n} samples are too few for the requested splits")
    return Dataset(x[train], y[train], x[val], y[val], x[test], y[test], num_classes)
