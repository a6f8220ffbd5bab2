"""Sharded parquet streamed into trials (pipeline.streaming): the split, the training
statistics, the errors, and a search over S3 shards larger than what the object store
and the driver may hold."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pyarrow.fs as pafs
import pytest
import yaml

from examples.make_shards import write_shards
from pipeline.data import load_dataset
from pipeline.preprocessing import scaling_stats, select_indices
from pipeline.spec import DataSpec, SpecError, parse_spec
from pipeline.storage import filesystem
from pipeline.streaming import ShardError, assign_splits, load_shards
from tests.conftest import ROOT, tiny_spec


def test_split_is_by_shard_fixed_by_the_seed_and_the_names():
    names = [f"part-{i:05d}.parquet" for i in range(40)]
    split = assign_splits(names, 0, 0.2, 0.2)
    assert [len(split[s]) for s in ("train", "val", "test")] == [24, 8, 8]
    assert sorted(i for ids in split.values() for i in ids) == list(range(40))
    assert assign_splits(names, 0, 0.2, 0.2) == split
    # the listing order does not matter, only the names
    backwards = assign_splits(names[::-1], 0, 0.2, 0.2)
    assert {names[::-1][i] for i in backwards["test"]} == {names[i] for i in split["test"]}
    assert assign_splits(names, 1, 0.2, 0.2) != split
    assert assign_splits(names[:3], 0, 0.1, 0.0) == {"train": [1, 2], "val": [0], "test": []}
    with pytest.raises(ShardError, match=r"^data\.path: 2 shard\(s\) are too few"):
        assign_splits(names[:2], 0, 0.2, 0.2)


@pytest.fixture
def shards(tmp_path):
    folder = tmp_path / "shards"
    write_shards(str(folder), shards=8, rows=700, features=6, classes=3, row_group_rows=256)
    return folder


def test_training_statistics_match_the_in_memory_ones(shards):
    ds = load_dataset(DataSpec(source="parquet", path=str(shards), shuffle_buffer=500), seed=0)
    assert ds.input_shape == (6,) and ds.classes == (0, 1, 2)
    assert [ds.rows(s) for s in ("train", "val", "test")] == [2800, 1400, 1400]
    xs, ys = zip(*ds.batches("train", 64))
    x, y = np.concatenate(xs), np.concatenate(ys)
    assert len(xs) == -(-2800 // 64) and len(y) == 2800  # one pass, last batch partial
    for kind in ("standard", "minmax"):
        for streamed, whole in zip(scaling_stats(kind, None, ds.train_stats), scaling_stats(kind, x)):
            np.testing.assert_allclose(streamed, whole, rtol=1e-5, atol=1e-6)
    assert select_indices(None, None, 3, ds.train_stats) == select_indices(x, y, 3)
    # shuffled: every row once per epoch, another order each epoch
    e0 = np.concatenate([b for b, _ in ds.batches("train", 64, shuffle_seed=(0, 0))])
    e1 = np.concatenate([b for b, _ in ds.batches("train", 64, shuffle_seed=(0, 1))])
    np.testing.assert_array_equal(np.sort(e0, axis=0), np.sort(x, axis=0))
    assert not np.array_equal(e0, e1) and not np.array_equal(e0, x)
    # what goes to the object store: no test shards, and small
    trials = ds.for_trials()
    assert trials.rows("test") == 0 and trials.fingerprint == ds.fingerprint
    assert len(pickle.dumps(trials)) < 5000
    glob = load_shards(DataSpec(source="parquet", path=f"{shards}/part-*.parquet"), seed=0)
    assert glob.shards == ds.shards  # a folder and a glob of the same files split alike


def test_errors_name_the_field(tmp_path, shards):
    def lines(data: dict, environment: bool = True) -> str:
        with pytest.raises(SpecError) as info:
            parse_spec(tiny_spec(tmp_path, data={"limit": None, **data}), environment=environment)
        return "\n".join(info.value.lines)

    nothing = str(tmp_path / "none" / "*.parquet")
    assert lines({"source": "parquet", "path": nothing}) == \
        f"data.path: no parquet shards match {nothing}"
    assert lines({"source": "csv", "path": nothing}, environment=False) == \
        "data.path: a glob of shards is read by sources 'parquet' and 'tfrecord' only, not 'csv'"
    assert lines({"source": "parquet", "path": f"{shards}/*.parquet", "limit": 10},
                 environment=False).startswith("data.limit: not supported for sharded parquet")
    with pytest.raises(ShardError, match="^data.label: column 'y' not in"):
        load_dataset(DataSpec(source="parquet", path=str(shards), label="y"), seed=0)
    with pytest.raises(ShardError, match="^data.features: columns not in shard .*: nope"):
        load_dataset(DataSpec(source="parquet", path=str(shards), features=["f0", "nope"]), seed=0)


def test_missing_s3_shards_end_the_run_before_ray_starts(tmp_path, s3_server):
    import pipeline

    fs, _ = filesystem("s3://x", s3_server)
    fs.create_dir("b-missing-shards")
    raw = tiny_spec(tmp_path, data={"source": "parquet", "limit": None,
                                    "path": "s3://b-missing-shards/t/*.parquet",
                                    "endpoint_override": s3_server})
    with pytest.raises(SpecError) as info:
        pipeline.run(raw, progress=False)
    assert info.value.lines == ["data.path: no parquet shards match s3://b-missing-shards/t/*.parquet"]
    assert not (tmp_path / "results" / "tiny").exists()


# 16 shards of 40,000 rows x (24 float32 features + an int64 label): ~90 MiB of parquet,
# more than the object store allowed (Ray's minimum: 75 MiB).
SHARDS, ROWS, FEATURES = 16, 40_000, 24
OBJECT_STORE_MB = 76


@pytest.mark.slow  # 16 S3 shards past a small object store, ~30 s
def test_search_streams_s3_shards_larger_than_the_object_store_and_the_driver(tmp_path, s3_server):
    fs, _ = filesystem("s3://x", s3_server)
    bucket = "b-streamed-search"
    fs.create_dir(bucket)
    try:
        import time

        start = time.perf_counter()
        write_shards(f"s3://{bucket}/train", shards=SHARDS, rows=ROWS, features=FEATURES,
                     endpoint_override=s3_server)
        data_mb = sum(i.size for i in fs.get_file_info(  # the shards of the search
            pafs.FileSelector(f"{bucket}/train"))) / 2**20
        written_s = time.perf_counter() - start
        assert data_mb > OBJECT_STORE_MB
        raw = tiny_spec(
            tmp_path,
            data={"source": "parquet", "path": f"s3://{bucket}/train/*.parquet", "limit": None,
                  "endpoint_override": s3_server, "validation_fraction": 0.2,
                  "test_fraction": 0.2},
            space={"units": {"type": "int", "low": 8, "high": 16, "step": 8},
                   "scaling": {"type": "choice", "values": ["none", "standard"]}},
            training={"epochs": 1, "batch_size": 2048},
            searcher={"name": "random"}, search={"trials": 2, "max_concurrent": 2})
        spec = tmp_path / "spec.yaml"
        spec.write_text(yaml.safe_dump(raw))
        # The baseline is taken after one trial on 3 small shards: what a run costs whatever
        # its data (~70 MB: Tune's machinery, the S3 client, lazy imports) is not counted.
        write_shards(f"s3://{bucket}/tiny", shards=3, rows=500, features=FEATURES,
                     endpoint_override=s3_server)
        warmup = tmp_path / "warmup.yaml"
        warmup.write_text(yaml.safe_dump({
            **raw, "name": "warmup", "search": {"trials": 1, "max_concurrent": 1},
            "data": {**raw["data"], "path": f"s3://{bucket}/tiny/*.parquet"}}))
        proc = subprocess.run(
            [sys.executable, str(ROOT / "benchmarks" / "driver_rss.py"), str(spec),
             "--object-store-mb", str(OBJECT_STORE_MB), "--warmup", str(warmup)],
            capture_output=True, text=True, timeout=300, cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert proc.returncode == 0, proc.stderr[-3000:]
        got = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"data {data_mb:.0f} MiB (written in {written_s:.1f} s), object store "
              f"{OBJECT_STORE_MB} MiB, driver {got}")
        assert got["trials"] == 2 and got["status"] == ["TERMINATED"]
        # every trial trained and validated on the same shards
        splits = list(got["data_split"].values())
        assert len(splits) == 2 and splits[0] == splits[1] and len(splits[0]) == 1
        # the driver streamed the training shards for the statistics but never held them
        assert got["growth_mb"] < data_mb / 2, got  # measured: ~25 MB for 84 MiB
    finally:
        fs.delete_dir_contents(bucket)  # moto holds the objects in this process's memory


def test_docstring_examples():
    import doctest

    import examples.make_shards
    import pipeline.streaming

    assert doctest.testmod(pipeline.streaming).failed == 0
    assert doctest.testmod(examples.make_shards).failed == 0
