"""Results, checkpoints and data on a real S3-compatible server (moto on loopback)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

import pipeline
from pipeline.data import load_dataset
from pipeline.results import Results
from pipeline.spec import DataSpec
from pipeline.storage import filesystem
from tests.conftest import tiny_spec


@pytest.fixture
def bucket(s3_server, request):
    fs, _ = filesystem("s3://x", s3_server)
    name = f"b-{request.node.name.lower().replace('_', '-')[:40]}"
    fs.create_dir(name)
    return fs, name


def _digits_parquet(fs, path):
    from sklearn.datasets import load_digits

    d = load_digits()
    cols = {f"px{i}": d.data[:, i] / 16.0 for i in range(64)}
    cols["digit"] = d.target
    with fs.open_output_stream(path) as f:
        pq.write_table(pa.table(cols), f)


def test_files_sources_npz_csv_parquet_local(tmp_path):
    x = np.random.default_rng(0).normal(size=(50, 4)).astype("float32")
    y = np.arange(50) % 3
    np.savez(tmp_path / "d.npz", x=x, label=y)
    import pandas as pd

    pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "target": y}).to_csv(tmp_path / "d.csv", index=False)
    pq.write_table(pa.table({"a": x[:, 0], "b": x[:, 1], "target": y}), tmp_path / "d.parquet")
    npz = load_dataset(DataSpec(source="npz", path=str(tmp_path / "d.npz")), seed=0)
    assert npz.input_shape == (4,) and npz.num_classes == 3
    for ext in ("csv", "parquet"):
        ds = load_dataset(DataSpec(source=ext, path=str(tmp_path / f"d.{ext}"), label="target",
                                   features=["a", "b"]), seed=0)
        assert ds.input_shape == (2,)
        assert len(ds.x_train) + len(ds.x_val) + len(ds.x_test) == 50
    # fixed by seed; the test split is disjoint from what trials see
    again = load_dataset(DataSpec(source="npz", path=str(tmp_path / "d.npz")), seed=0)
    np.testing.assert_array_equal(npz.x_test, again.x_test)
    assert npz.for_trials().x_test.shape[0] == 0


def test_run_with_s3_results_and_s3_parquet_data(ray_session, tmp_path, s3_server, bucket):
    fs, name = bucket
    _digits_parquet(fs, f"{name}/data/digits.parquet")
    raw = tiny_spec(
        tmp_path,
        data={"source": "parquet", "path": f"s3://{name}/data/digits.parquet", "label": "digit",
              "endpoint_override": s3_server, "limit": 360},
        storage={"path": f"s3://{name}/experiments", "endpoint_override": s3_server},
        search={"trials": 2},
    )
    res = pipeline.run(raw, progress=False)
    assert len(res.dataframe()) == 2
    assert set(res.dataframe()["status"]) == {"TERMINATED"}
    listing = fs.get_file_info(pafs.FileSelector(f"{name}/experiments/tiny", recursive=True))
    names = [info.path for info in listing]
    assert any(p.endswith("pipeline_spec.yaml") for p in names)
    assert sum(p.endswith("model.keras") for p in names) >= 2
    assert not (tmp_path / "results").exists()  # nothing written locally
    again = Results.open(f"s3://{name}/experiments/tiny", endpoint_override=s3_server)
    assert again.best_config == res.best_config
    model = again.best_model()
    assert model.output_shape == (None, 10)


def test_patiently_examples_and_the_tolerance_error():
    import doctest

    import pipeline.storage as storage

    assert doctest.testmod(storage).failed == 0

    def down():
        raise OSError("connection refused")

    with pytest.raises(storage.StorageUnavailable, match=r"^storage\.path: saving failed .* "
                       r"unreachable for 0\.2 s \(storage\.outage_tolerance_s\): connection refused"):
        storage.patiently(down, "saving", tolerance_s=0.2)
