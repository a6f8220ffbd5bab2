"""Driver memory of a search: peak RSS of the process that runs ``pipeline.run``, vs the data.

Runs a spec in this process on a local Ray started here with a bounded object store
(``--object-store-mb``), and prints one JSON line: the driver's RSS high-water mark
before the run
(Python, Ray, Tune, pyarrow, pandas and the pipeline imported, Ray started)
and after it, the growth between them, the run's wall time, and per trial the
``data_split`` fingerprints its epochs reported (sharded data: which shards it saw).

    python examples/make_shards.py s3://datasets/train --endpoint-override http://127.0.0.1:9000 \\
        --shards 64 --rows 200000
    python benchmarks/driver_rss.py examples/sharded_parquet.yaml --object-store-mb 100 \
        --warmup tiny.yaml    # the same spec on a few small shards, under another name

``tests/test_streaming.py`` runs it on shards larger than the object store it allows.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def peak_rss_mb() -> float:
    """This process's RSS high-water mark, in MiB.

    Linux: ``VmHWM``. Not ``ru_maxrss``, which keeps the high-water mark of the process
    that forked this one from before its ``exec`` (a pytest holding the test's data).
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 if sys.platform != "darwin" else 2**20)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("spec")
    p.add_argument("--object-store-mb", type=int, default=100)
    p.add_argument("--num-cpus", type=int, default=2)
    p.add_argument("--warmup", help="a spec run first, before the baseline (tiny data): what any "
                   "run costs once -- lazy imports, the S3 client, Tune's machinery")
    a = p.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    # What every run imports whatever its data (pandas comes with the results), before the baseline.
    import pyarrow.parquet  # noqa: F401
    import ray
    from ray import tune  # noqa: F401

    import pipeline
    import pipeline.results  # noqa: F401
    import pipeline.runner  # noqa: F401
    import pipeline.trainable  # noqa: F401

    ray.init(num_cpus=a.num_cpus, object_store_memory=a.object_store_mb * 2**20,
             include_dashboard=False, dashboard_port=0, logging_level="WARNING",
             runtime_env={"env_vars": {"PYTHONPATH": os.environ.get("PYTHONPATH", str(ROOT))}})
    if a.warmup:
        pipeline.run(a.warmup, progress=False)
    before = peak_rss_mb()
    start = time.perf_counter()
    results = pipeline.run(a.spec, progress=False)
    wall = time.perf_counter() - start
    after = peak_rss_mb()
    df = results.dataframe()
    splits = {tid: sorted(set(h["data_split"])) for tid, h in results.histories.items()
              if "data_split" in h}
    print(json.dumps({"baseline_rss_mb": round(before, 1), "peak_rss_mb": round(after, 1),
                      "growth_mb": round(after - before, 1), "wall_s": round(wall, 1),
                      "trials": len(df), "status": sorted(set(df["status"])),
                      "data_split": splits}))
    ray.shutdown()


if __name__ == "__main__":
    main()
