"""Write a sharded parquet data set for ``examples/sharded_parquet.yaml`` (or any size you like).

Rows are a learnable classification problem generated from a seed (no download):
each class has a centre in feature space, a row is its class centre plus Gaussian
noise. Features are float32 columns ``f0 .. f{n-1}``, the label an int64 column
``label``. Random floats do not compress, so the files' total size is close to
``shards * rows * (4 * features + 8)`` bytes: choose it larger than the machine's
memory to try the streamed source for real.

    python examples/make_shards.py data/shards --shards 64 --rows 200000      # ~2.2 GB
    python examples/make_shards.py s3://bucket/train --endpoint-override http://127.0.0.1:9000

Example:
    >>> import tempfile
    >>> root = tempfile.mkdtemp()
    >>> paths = write_shards(root, shards=3, rows=100, features=4)
    >>> [p.rsplit("/", 1)[-1] for p in paths]
    ['part-00000.parquet', 'part-00001.parquet', 'part-00002.parquet']
"""

from __future__ import annotations

import argparse

import numpy as np


def write_shards(path: str, *, shards: int = 16, rows: int = 20_000, features: int = 32,
                 classes: int = 4, seed: int = 0, endpoint_override: str | None = None,
                 row_group_rows: int = 16_384) -> list[str]:
    """Write ``shards`` parquet files under ``path`` (a folder or s3:// URI); their paths."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.s3 import open_filesystem

    fs, root = open_filesystem(path, endpoint_override)
    root = root.rstrip("/")
    fs.create_dir(root)
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=1.0, size=(classes, features)).astype("float32")
    written = []
    for i in range(shards):
        y = rng.integers(0, classes, rows)
        x = centres[y] + rng.normal(scale=1.5, size=(rows, features)).astype("float32")
        table = pa.table({**{f"f{j}": x[:, j] for j in range(features)}, "label": y.astype("int64")})
        name = f"{root}/part-{i:05d}.parquet"
        with fs.open_output_stream(name) as f:
            pq.write_table(table, f, row_group_size=row_group_rows)
        written.append(name)
    return written


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("path", help="a folder or s3://bucket/prefix")
    p.add_argument("--shards", type=int, default=16)
    p.add_argument("--rows", type=int, default=20_000, help="rows per shard")
    p.add_argument("--features", type=int, default=32)
    p.add_argument("--classes", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--endpoint-override", default=None, help="S3-compatible endpoint URL")
    a = p.parse_args(argv)
    paths = write_shards(a.path, shards=a.shards, rows=a.rows, features=a.features,
                         classes=a.classes, seed=a.seed, endpoint_override=a.endpoint_override)
    size = a.shards * a.rows * (4 * a.features + 8)
    print(f"wrote {len(paths)} shards, ~{size / 2**20:.0f} MiB, under {a.path}")


if __name__ == "__main__":
    main()
