"""README's "Run on a Ray cluster" section, run verbatim in bash on a real 3-node cluster.

The commands run in a copy of the project (so the results and the cluster's state
folder land there), with this venv's ``python`` first on PATH, as a user with the
venv active. Takes ~3 min on 2 CPUs.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

# multi-node clusters, killed processes, storage outages: `make test-slow` (CI runs it too)
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]  # waits up to 900 s for its subprocess

if not sys.platform.startswith("linux"):
    pytest.skip("cluster.local process bookkeeping needs /proc", allow_module_level=True)


def readme_cluster_commands() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Run on a Ray cluster"):text.index("## Run on Kubernetes")]
    (block,) = re.findall(r"```bash\n(.*?)```", section, re.S)
    return block


def test_readme_cluster_section_runs_verbatim(tmp_path):
    from cluster import local
    from pipeline.results import Results

    project = tmp_path / "project"
    for folder in ("pipeline", "searchers", "cluster", "examples"):
        shutil.copytree(ROOT / folder, project / folder,
                        ignore=shutil.ignore_patterns("__pycache__"))
    commands = readme_cluster_commands()
    assert "cluster up" in commands and "submit examples/digits.yaml" in commands
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("RAY_") and k not in ("PYTHONPATH", "PIPELINE_STORAGE_BASE")}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    try:
        proc = subprocess.run(["bash", "-euo", "pipefail", "-c", commands], cwd=project, env=env,
                              capture_output=True, text=True, timeout=900)
    finally:
        local.stop(project / ".ray-local-cluster", timeout_s=20)  # if a line failed before `down`
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    assert "Traceback" not in out, out[-6000:]
    # `run`, then the job (resuming it, --resume): both in the project's own results folder,
    # not in the job's unpacked copy of the project
    stored = f"{project}/results/digits-tpe-asha: 16 trials (16 terminated)"
    assert proc.stdout.count(stored) == 2, proc.stdout[-4000:]
    assert re.search(r"job raysubmit_\w+: SUCCEEDED", proc.stdout), proc.stdout[-4000:]
    assert "stopped 3 node(s)" in proc.stdout
    res = Results.open(str(project / "results" / "digits-tpe-asha"))
    df = res.dataframe()
    assert len(df) == 16 and set(df["status"]) == {"TERMINATED"}
    workers = {str(h["node_id"].iloc[-1]) for h in res.histories.values()}
    assert len(workers) == 2, workers  # trials ran on both worker nodes
    assert local.load(project / ".ray-local-cluster") is None
