"""Write a sharded data set for ``examples/sharded_parquet.yaml`` or ``examples/sharded_tfrecord.yaml``
(or any size you like).

Rows are a learnable classification problem generated from a seed (no download):
each class has a centre in feature space, a row is its class centre plus Gaussian
noise. Parquet: float32 columns ``f0 .. f{n-1}`` and an int64 column ``label``.
TFRecord (``--format tfrecord``): one ``tf.train.Example`` per row, the features as
one float list ``x`` of n values and an int64 ``label`` (``--compression gzip``
writes ``.tfrecord.gz``). Random floats do not compress, so the files' total size is
close to ``shards * rows * (4 * features + 8)`` bytes: choose it larger than the
machine's memory to try the streamed source for real.

    python examples/make_shards.py data/shards --shards 64 --rows 200000      # ~2.2 GB
    python examples/make_shards.py s3://bucket/train --endpoint-override http://127.0.0.1:9000
    python examples/make_shards.py data/records --format tfrecord --compression gzip

Example:
    >>> import tempfile
    >>> root = tempfile.mkdtemp()
    >>> paths = write_shards(root, shards=3, rows=100, features=4)
    >>> [p.rsplit("/", 1)[-1] for p in paths]
    ['part-00000.parquet', 'part-00001.parquet', 'part-00002.parquet']
    >>> paths = write_shards(root, shards=2, rows=10, features=4, format="tfrecord", compression="gzip")
    >>> [p.rsplit("/", 1)[-1] for p in paths]
    ['part-00000.tfrecord.gz', 'part-00001.tfrecord.gz']
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

SUFFIX = {"parquet": ".parquet", "tfrecord": ".tfrecord"}


def write_shards(path: str, *, shards: int = 16, rows: int = 20_000, features: int = 32,
                 classes: int = 4, seed: int = 0, endpoint_override: str | None = None,
                 row_group_rows: int = 16_384, format: str = "parquet",
                 compression: str | None = None) -> list[str]:
    """Write ``shards`` files under ``path`` (a folder or s3:// URI); their paths.

    ``format``: ``parquet`` or ``tfrecord``; ``compression``: ``gzip`` for TFRecord.
    """
    from pipeline.s3 import open_filesystem

    if format not in SUFFIX:
        raise ValueError(f"format: parquet or tfrecord, not {format!r}")
    gzip = compression == "gzip"
    fs, root = open_filesystem(path, endpoint_override)
    root = root.rstrip("/")
    fs.create_dir(root)
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=1.0, size=(classes, features)).astype("float32")
    written = []
    for i in range(shards):
        y = rng.integers(0, classes, rows)
        x = centres[y] + rng.normal(scale=1.5, size=(rows, features)).astype("float32")
        name = f"{root}/part-{i:05d}{SUFFIX[format]}{'.gz' if gzip else ''}"
        if format == "tfrecord":
            _write_tfrecord(fs, name, x, y, gzip)
        else:
            _write_parquet(fs, name, x, y, row_group_rows)
        written.append(name)
    return written


def _write_parquet(fs: Any, name: str, x: np.ndarray, y: np.ndarray, row_group_rows: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({**{f"f{j}": x[:, j] for j in range(x.shape[1])}, "label": y.astype("int64")})
    with fs.open_output_stream(name) as f:
        pq.write_table(table, f, row_group_size=row_group_rows)


def _write_tfrecord(fs: Any, name: str, x: np.ndarray, y: np.ndarray, gzip: bool) -> None:
    """TensorFlow's writer on a local file; elsewhere (S3) a local copy is uploaded."""
    import shutil
    import tempfile

    import pyarrow.fs as pafs
    import tensorflow as tf

    Example, Features, Feature = tf.train.Example, tf.train.Features, tf.train.Feature
    options = tf.io.TFRecordOptions(compression_type="GZIP" if gzip else "")
    with tempfile.TemporaryDirectory() as tmp:
        local = name if isinstance(fs, pafs.LocalFileSystem) else f"{tmp}/shard"
        with tf.io.TFRecordWriter(local, options) as writer:
            for row, label in zip(x.tolist(), y.tolist()):
                writer.write(Example(features=Features(feature={
                    "x": Feature(float_list=tf.train.FloatList(value=row)),
                    "label": Feature(int64_list=tf.train.Int64List(value=[label]))})).SerializeToString())
        if local != name:
            with open(local, "rb") as src, fs.open_output_stream(name, compression=None) as dst:
                shutil.copyfileobj(src, dst, 1 << 20)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("path", help="a folder or s3://bucket/prefix")
    p.add_argument("--shards", type=int, default=16)
    p.add_argument("--rows", type=int, default=20_000, help="rows per shard")
    p.add_argument("--features", type=int, default=32)
    p.add_argument("--classes", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--format", choices=sorted(SUFFIX), default="parquet")
    p.add_argument("--compression", choices=["gzip"], default=None, help="tfrecord: GZIP files (.tfrecord.gz)")
    p.add_argument("--endpoint-override", default=None, help="S3-compatible endpoint URL")
    a = p.parse_args(argv)
    if a.compression and a.format != "tfrecord":
        p.error("--compression is for --format tfrecord")
    paths = write_shards(a.path, shards=a.shards, rows=a.rows, features=a.features,
                         classes=a.classes, seed=a.seed, endpoint_override=a.endpoint_override,
                         format=a.format, compression=a.compression)
    size = a.shards * a.rows * (4 * a.features + 8)
    print(f"wrote {len(paths)} {a.format} shards, ~{size / 2**20:.0f} MiB before compression, under {a.path}")


if __name__ == "__main__":
    main()
