"""Spec validation at the edge: one clear message naming the field, exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.spec import Spec, SpecError, load_spec, parse_spec
from tests.conftest import ROOT, TINY

BAD = sorted((ROOT / "tests" / "specs" / "bad").glob("*.yaml"))
DEFAULT_EXPECT = {"empty.yaml": "(top level): ", "not_utf8.yaml": "not UTF-8"}


def _expected(path: Path) -> str:
    if path.name in DEFAULT_EXPECT:
        return DEFAULT_EXPECT[path.name]
    first = path.read_bytes().split(b"\n", 1)[0].decode()
    assert first.startswith("# expect: "), f"{path.name} lacks an '# expect:' line"
    return first.removeprefix("# expect: ")


def test_corpus_is_large():
    assert len(BAD) >= 25


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.stem)
def test_bad_spec_rejected_with_field_path(path, capsys):
    rc = main(["validate", str(path)])
    err = capsys.readouterr().err
    assert rc == 2
    assert _expected(path) in err, err
    assert "Traceback" not in err
    assert err.startswith("error: ")


@pytest.mark.parametrize("path", sorted((ROOT / "examples").glob("*.yaml")), ids=lambda p: p.stem)
def test_examples_validate(path):
    spec = load_spec(path)
    assert spec.num_trials >= 1


def test_bad_run_in_subprocess_writes_nothing_and_starts_no_ray(tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text((ROOT / "tests/specs/bad/trials_zero.yaml").read_text()
                    + f"storage: {tmp_path / 'results'}\n")
    before = set(os.listdir(tmp_path))
    proc = subprocess.run([sys.executable, "-m", "pipeline", "run", str(spec)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: search.trials: must be > 0"
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "Ray" not in proc.stdout + proc.stderr
    assert set(os.listdir(tmp_path)) == before


def test_existing_experiment_is_never_overwritten(tmp_path, capsys):
    raw = {**TINY, "storage": str(tmp_path)}
    (tmp_path / "tiny").mkdir()
    marker = tmp_path / "tiny" / "earlier-result.json"
    marker.write_text("{}")
    spec = tmp_path / "s.yaml"
    spec.write_text(Spec.model_validate(raw).to_yaml())
    assert main(["run", str(spec)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert marker.read_text() == "{}"


def test_python_api_defaults_and_round_trip():
    spec = parse_spec(dict(TINY))
    assert spec.searcher.name == "tpe" and spec.scheduler.name == "fifo"
    assert parse_spec(__import__("yaml").safe_load(spec.to_yaml())) == spec


def test_errors_are_collected_not_first_only():
    raw = {**TINY, "search": {"trials": 0, "max_concurrent": 0}}
    with pytest.raises(SpecError) as info:
        parse_spec(raw)
    assert "search.trials: must be > 0" in info.value.lines
    assert "search.max_concurrent: must be > 0" in info.value.lines


def test_yaml_loaded_safely(tmp_path):
    evil = tmp_path / "evil.yaml"
    evil.write_text("name: !!python/object/apply:os.system ['echo pwned']\nspace: {}\n")
    with pytest.raises(SpecError) as info:
        load_spec(evil)
    assert info.value.lines[0].startswith("(yaml)")
