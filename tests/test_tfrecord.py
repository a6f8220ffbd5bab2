"""TFRecord shards streamed into trials like parquet ones (pipeline.streaming): the same split,
row counts and training statistics, the declared types, the errors, S3, and a search."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from examples.make_shards import write_shards
from pipeline.data import Dataset, load_dataset
from pipeline.preprocessing import scaling_stats, select_indices
from pipeline.spec import DataSpec, SpecError, parse_spec
from pipeline.storage import filesystem
from pipeline.streaming import ShardError, StreamedDataset, assign_splits
from tests.conftest import tiny_spec

RECORDS = {"source": "tfrecord", "features": ["x"], "dtypes": {"x": "float[6]"}}


def _names(ds: StreamedDataset, split: str) -> list[str]:
    return [s.path.rsplit("/", 1)[-1].split(".")[0] for s in ds.shards[split]]


@pytest.fixture
def records(tmp_path) -> Path:
    """8 GZIP shards of 700 rows, and the same rows as parquet next to them."""
    write_shards(str(tmp_path / "records"), shards=8, rows=700, features=6, classes=3,
                 format="tfrecord", compression="gzip")
    write_shards(str(tmp_path / "parquet"), shards=8, rows=700, features=6, classes=3)
    return tmp_path / "records"


def test_split_counts_and_statistics_as_for_parquet(records):
    ds = load_dataset(DataSpec(path=str(records), shuffle_buffer=500, **RECORDS), seed=0)
    assert isinstance(ds, StreamedDataset) and ds.input_shape == (6,) and ds.classes == (0, 1, 2)
    assert [ds.rows(s) for s in ("train", "val", "test")] == [2800, 1400, 1400]  # counted once
    files = sorted(p.name for p in records.iterdir())
    split = assign_splits(files, 0, 0.2, 0.2)  # by shard name, like parquet's
    assert {s: _names(ds, s) for s in split} == {s: [files[i].split(".")[0] for i in ids]
                                                 for s, ids in split.items()}
    # the statistics are those of the same rows as parquet, from the training shards only
    parquet = records.parent / "parquet"
    table = pq.read_table([str(parquet / f"{n}.parquet") for n in _names(ds, "train")])
    x = np.column_stack([table.column(f"f{j}").to_numpy() for j in range(6)])
    y = table.column("label").to_numpy()
    for kind in ("standard", "minmax"):
        for streamed, whole in zip(scaling_stats(kind, None, ds.train_stats), scaling_stats(kind, x)):
            np.testing.assert_allclose(streamed, whole, rtol=1e-5, atol=1e-6)
    assert select_indices(None, None, 3, ds.train_stats) == select_indices(x, y, 3)
    # a trial's input: every training row once per epoch, through tf.data
    fit = ds.for_trials().fit_inputs(batch_size=256, seed=0)
    got = np.concatenate([b.numpy() for b, _ in fit["x"].take(fit["steps_per_epoch"])])
    np.testing.assert_allclose(np.sort(got, axis=0), np.sort(x, axis=0))
    assert ds.for_trials().rows("test") == 0 and len(pickle.dumps(ds.for_trials())) < 5000
    glob = load_dataset(DataSpec(path=f"{records}/part-*.tfrecord.gz", **RECORDS), seed=0)
    assert glob.shards == ds.shards and glob.fingerprint == ds.fingerprint


def _write(path: Path, rows: list[dict], gzip: bool = False) -> None:
    """``rows`` of {name: list of floats, ints or strs} as tf.train.Example records."""
    import tensorflow as tf

    def feature(values: list) -> tf.train.Feature:
        if isinstance(values[0], str):
            return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.encode() for v in values]))
        if isinstance(values[0], int):
            return tf.train.Feature(int64_list=tf.train.Int64List(value=values))
        return tf.train.Feature(float_list=tf.train.FloatList(value=values))

    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path), tf.io.TFRecordOptions(compression_type="GZIP" if gzip else "")) as w:
        for row in rows:
            example = tf.train.Example(features=tf.train.Features(
                feature={k: feature(v) for k, v in row.items()}))
            w.write(example.SerializeToString())


def _animals(folder: Path, shards: int = 4, gzip: bool = False) -> None:
    for i in range(shards):
        _write(folder / f"part-{i}.tfrecord", gzip=gzip, rows=[
            {"a": [10 * i + r], "px": [float(r), r + 0.5, -float(r)], "label": [("cat", "dog", "owl")[r % 3]]}
            for r in range(5)])


TYPED = {"source": "tfrecord", "features": ["a", "px"], "dtypes": {"a": "int", "px": "float[3]",
                                                                    "label": "bytes"}}


def test_declared_types_vectors_and_text_labels(tmp_path):
    _animals(tmp_path / "animals")
    ds = load_dataset(DataSpec(path=str(tmp_path / "animals"), **TYPED), seed=0)
    assert ds.input_shape == (4,) and ds.classes == ("cat", "dog", "owl")
    x, y = next(ds.batches("train", 64))
    assert x.dtype == np.float32 and x[:3].tolist() == [[10 * int(x[0, 0] // 10) + r, r, r + 0.5, -r]
                                                        for r in range(3)]
    assert y[:3].tolist() == [0, 1, 2]
    # one file is read whole and split by rows, as one parquet file is
    one = load_dataset(DataSpec(path=str(tmp_path / "animals" / "part-0.tfrecord"),
                                validation_fraction=0.2, test_fraction=0.2, **TYPED), seed=0)
    assert isinstance(one, Dataset) and one.input_shape == (4,) and one.num_classes == 3


def test_errors_name_the_field(tmp_path):
    folder = tmp_path / "animals"
    _animals(folder)

    def error(**data) -> str:
        with pytest.raises(ShardError) as info:
            load_dataset(DataSpec(path=str(data.pop("path", folder)), **{**TYPED, **data}), seed=0)
        return re.sub(r"/animals/part-\d\.tfrecord", "/animals/part-N.tfrecord", str(info.value))

    shard = f"{folder}/part-N.tfrecord"  # the first shard read
    assert error(features=["a", "px", "nope"]).startswith(
        f"data.features: 'nope' is not in the records of {shard} (they hold: a, label, px)")
    assert error(label="kind", dtypes={"a": "int", "px": "float[3]", "kind": "bytes"}).startswith(
        f"data.label: 'kind' is not in the records of {shard}")
    assert error(dtypes={"px": "float[3]", "label": "bytes"}) == \
        f"data.dtypes: 'a' is int in the records of {shard}, declared float"
    assert error(dtypes={"a": "int", "px": "float[2]", "label": "bytes"}) == \
        f"data.dtypes: 'px' is float[3] in the records of {shard}, declared float[2]"
    assert error(dtypes={"a": "int", "px": "float[3]"}) == \
        f"data.dtypes: 'label' is bytes in the records of {shard}, declared int"
    _animals(tmp_path / "zipped", gzip=True)  # GZIP files without a .gz name
    assert error(path=tmp_path / "zipped").endswith(
        "is not a TFRecord file (it is GZIP-compressed: name it *.gz or set data.compression: gzip)")
    zipped = load_dataset(DataSpec(path=str(tmp_path / "zipped"), compression="gzip", **TYPED), seed=0)
    assert [zipped.rows(s) for s in ("train", "val", "test")] == [10, 5, 5]
    (tmp_path / "a.tfrecord").write_bytes(b"PAR1" + bytes(40))  # one file: read whole, same checks
    assert error(path=tmp_path / "a.tfrecord") == f"data.path: {tmp_path}/a.tfrecord is not a TFRecord file"

    def lines(data: dict, environment: bool = True) -> list[str]:
        with pytest.raises(SpecError) as info:
            parse_spec(tiny_spec(tmp_path, data={"limit": None, **data}), environment=environment)
        return info.value.lines

    nothing = f"{tmp_path}/none/*.tfrecord"
    assert lines({**TYPED, "path": nothing}) == [f"data.path: no tfrecord shards match {nothing}"]
    assert lines({**TYPED, "path": f"{tmp_path}/absent"}) == [f"data.path: file not found: {tmp_path}/absent"]
    assert lines({**TYPED, "path": str(folder), "features": ["a", "label"]}, environment=False) == \
        ["data.features: 'label' is the label (data.label), not a feature"]
    assert lines({"source": "csv", "path": "x.csv", "dtypes": {"a": "int"}}, environment=False) == \
        ["data.dtypes: for source 'tfrecord' only, not 'csv'"]


def test_a_run_with_an_undeclared_feature_exits_2_before_ray_starts(tmp_path, capsys):
    from pipeline.cli import main

    _animals(tmp_path / "animals")
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec(tmp_path, data={
        **TYPED, "path": str(tmp_path / "animals"), "features": ["a", "px", "nope"], "limit": None})))
    assert main(["run", str(spec)]) == 2  # `python -m pipeline run`, in this process
    out, err = capsys.readouterr()
    assert err.strip().splitlines()[-1].startswith("error: data.features: 'nope' is not in the records")
    assert "Ray" not in out and not (tmp_path / "results" / "tiny").exists()


def test_s3_shards_split_and_stream_like_local_ones(tmp_path, records, s3_server):
    import pipeline

    fs, _ = filesystem("s3://x", s3_server)
    bucket = "b-tfrecord"
    fs.create_dir(bucket)
    try:
        write_shards(f"s3://{bucket}/records", shards=8, rows=700, features=6, classes=3,
                     format="tfrecord", compression="gzip", endpoint_override=s3_server)
        remote = load_dataset(DataSpec(path=f"s3://{bucket}/records/*.tfrecord.gz",
                                       endpoint_override=s3_server, **RECORDS), seed=0)
        local = load_dataset(DataSpec(path=str(records), **RECORDS), seed=0)
        assert isinstance(remote, StreamedDataset) and isinstance(local, StreamedDataset)
        assert {s: _names(remote, s) for s in ("train", "val", "test")} == \
            {s: _names(local, s) for s in ("train", "val", "test")}
        assert [remote.rows(s) for s in ("train", "val", "test")] == [2800, 1400, 1400]
        for a, b in zip(remote.train_stats.center_scale("standard"), local.train_stats.center_scale("standard")):
            np.testing.assert_allclose(a, b)
        ev = remote.eval_inputs("val", 512)  # what a trial reads, from S3
        assert sum(len(y) for _, y in ev["x"].take(ev["steps"])) == 1400
        raw = tiny_spec(tmp_path, data={**RECORDS, "path": f"s3://{bucket}/nothing/*.tfrecord",
                                        "endpoint_override": s3_server, "limit": None})
        with pytest.raises(SpecError) as info:
            pipeline.run(raw, progress=False)
        assert info.value.lines == [f"data.path: no tfrecord shards match s3://{bucket}/nothing/*.tfrecord"]
        assert not (tmp_path / "results" / "tiny").exists()
    finally:
        fs.delete_dir_contents(bucket)


def test_search_streams_local_tfrecord_shards(ray_session, tmp_path):
    import pipeline

    write_shards(str(tmp_path / "records"), shards=6, rows=300, features=6, classes=3,
                 format="tfrecord")  # plain .tfrecord, no GZIP
    raw = tiny_spec(tmp_path, data={**RECORDS, "path": str(tmp_path / "records"), "limit": None,
                                    "validation_fraction": 0.2, "test_fraction": 0.2},
                    space={"units": {"type": "int", "low": 8, "high": 16, "step": 8},
                           "scaling": {"type": "choice", "values": ["none", "standard"]}},
                    training={"epochs": 2, "batch_size": 128},
                    searcher={"name": "random"}, search={"trials": 2, "max_concurrent": 2})
    res = pipeline.run(raw, progress=False)
    df = res.dataframe()
    assert df["status"].tolist() == ["TERMINATED"] * 2 and (df["epochs"] == 2).all()
    splits = {tid: set(h["data_split"]) for tid, h in res.histories.items()}
    assert len(splits) == 2 and len({frozenset(s) for s in splits.values()}) == 1
    assert len(next(iter(splits.values()))) == 1  # one split, every epoch of every trial
    assert 0.0 <= res.evaluate_best()["test_accuracy"] <= 1.0  # streamed from the test shards
