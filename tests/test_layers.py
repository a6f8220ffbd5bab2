"""How the parts depend on each other: reading results needs only the stored spec's schema,
``validate`` has no side effects, no import circles, one S3 filesystem builder, no dead code."""

from __future__ import annotations

import ast
import collections
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, TINY, tiny_spec

PACKAGES = ("pipeline", "searchers", "cluster")


def _cli(args: list[str], cwd: Path, pythonpath: Path = ROOT) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PIPELINE_STORAGE_BASE"}
    env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


# ------------------------------------------------------ A: results open anywhere


def test_results_and_report_open_where_the_user_builder_is_not_importable(ray_session, tmp_path):
    import pipeline

    space = {"width": {"type": "int", "low": 8, "high": 16, "step": 8},
             "learning_rate": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}}
    raw = tiny_spec(tmp_path, model={"builder": "examples.user_model:build_model"}, space=space,
                    training={"epochs": 1}, search={"trials": 1, "max_concurrent": 1})
    pipeline.run(raw, progress=False)
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(tmp_path / "results" / "tiny", elsewhere / "copied")
    # The packages without the project around them (as `pip install .` leaves them):
    # `examples` is not importable there.
    site = tmp_path / "site"
    site.mkdir()
    for package in PACKAGES:
        (site / package).symlink_to(ROOT / package)
    assert _cli(["-c", "import examples.user_model"], elsewhere, site).returncode != 0

    listed = _cli(["-m", "pipeline", "results", "copied"], elsewhere, site)
    assert listed.returncode == 0, listed.stderr
    assert "1 trials (1 terminated)" in listed.stdout
    assert "width" in listed.stdout and "val_accuracy" in listed.stdout

    report = _cli(["-m", "pipeline", "report", "copied", "-o", "rep"], elsewhere, site)
    assert report.returncode == 0, report.stderr
    assert (elsewhere / "rep" / "index.html").is_file()


def test_stored_spec_is_read_by_its_schema_only(tmp_path):
    """What the environment lacks (user module, data file, restorable state) is no schema error."""
    from pipeline.spec import SpecError, check_environment, parse_spec

    raw = {**TINY, "model": {"builder": "no_such_pkg.models:build"},
           "data": {"source": "npz", "path": str(tmp_path / "gone.npz")},
           "training": {"epochs": 2, "callbacks": ["no_such_pkg.callbacks:make"]},
           "searcher": {"name": "tpe", "restore_from": str(tmp_path)}}
    spec = parse_spec(raw, environment=False)
    assert spec.model.builder == "no_such_pkg.models:build"
    with pytest.raises(SpecError) as info:
        check_environment(spec)
    text = "\n".join(info.value.lines)
    assert "model.builder: cannot import module 'no_such_pkg.models'" in text
    assert "data.path: file not found" in text
    assert "training.callbacks.0.factory: cannot import module 'no_such_pkg.callbacks'" in text
    assert "searcher.restore_from: no searcher state" in text
    # the schema itself is still checked
    with pytest.raises(SpecError) as info:
        parse_spec({**raw, "search": {"trials": 0}}, environment=False)
    assert "search.trials: must be > 0" in info.value.lines


# ------------------------------------------------------ B: validate writes nothing


def _optuna_spec(tmp_path: Path, storage: str) -> Path:
    raw = {**TINY, "storage": "results",
           "searcher": {"name": "tpe", "options": {"storage": storage}}}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_validate_writes_nothing(tmp_path):
    _optuna_spec(tmp_path, "sqlite:///o.db")
    before = sorted(os.listdir(tmp_path))
    proc = _cli(["-m", "pipeline", "validate", "spec.yaml"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "spec.yaml: OK" in proc.stdout
    assert sorted(os.listdir(tmp_path)) == before  # no o.db, no results folder


def test_searcher_options_still_checked_by_validate_and_at_the_start_of_run(tmp_path):
    _optuna_spec(tmp_path, "o.db")  # not a database URL: known without building anything
    proc = _cli(["-m", "pipeline", "validate", "spec.yaml"], tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: searcher.options: storage must be a database URL")
    assert "Traceback" not in proc.stderr

    # a well-formed URL that only fails when the searcher is built: run names the field,
    # exits 2 and writes nothing (no results folder, no write probe, no Ray)
    _optuna_spec(tmp_path, f"sqlite:///{tmp_path}/no/such/dir/o.db")
    before = sorted(os.listdir(tmp_path))
    assert _cli(["-m", "pipeline", "validate", "spec.yaml"], tmp_path).returncode == 0
    proc = _cli(["-m", "pipeline", "run", "spec.yaml"], tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: searcher.options: "), proc.stderr
    assert "Traceback" not in proc.stderr
    assert sorted(os.listdir(tmp_path)) == before


# ------------------------------------------------------ C: no import circles


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for file in (ROOT / package).rglob("*.py"):
            parts = list(file.relative_to(ROOT).with_suffix("").parts)
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = file
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports, read from the source with ``ast``.

    Every import counts: at module level, inside functions and under ``if TYPE_CHECKING:``
    (a type hint is a dependency too). ``from pkg import name`` points at ``pkg.name`` when
    that is a module, else at ``pkg``; importing a submodule is not counted as importing
    its parent package's ``__init__`` (Python runs it, but it is no dependency of the code).
    """
    modules = _modules()

    def owner(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for module, file in modules.items():
        package = module if file.name == "__init__.py" else module.rpartition(".")[0]
        targets: set[str | None] = set()
        for node in ast.walk(ast.parse(file.read_text(), str(file))):
            if isinstance(node, ast.Import):
                targets.update(owner(alias.name) for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    head = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(head + ([node.module] if node.module else []))
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    targets.add(full if full in modules else owner(base))
        graph[module] = {t for t in targets if t and t != module}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_cycle_finder_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_import_graph_has_no_cycle():
    graph = import_graph()
    assert {"pipeline.spec", "searchers", "pipeline.models", "cluster.connect"} <= set(graph)
    assert "pipeline.preprocessing" in graph["pipeline.models"]  # function-level imports count
    found = cycles(graph)
    assert found == [], "import circles: " + "; ".join(" <-> ".join(c) for c in found)


# ------------------------------------------------------ D: one S3 filesystem builder


def test_data_and_storage_build_s3_filesystems_in_one_place():
    constructed = []
    for module, file in _modules().items():
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.Call) and ast.unparse(node.func).endswith("S3FileSystem"):
                constructed.append(module)
    assert constructed == ["pipeline.s3"]


def test_data_reads_s3_with_the_storage_timeouts():
    from pipeline import data, storage

    endpoint = "http://127.0.0.1:9"
    data_fs, key = data.open_filesystem("s3://bucket/d.npz", endpoint)
    storage_fs, _ = storage.filesystem("s3://bucket/x", endpoint)
    assert key == "bucket/d.npz"
    options = data_fs.__reduce__()[1][0]
    assert options["connect_timeout"] == 5 and options["request_timeout"] == 20
    assert options["scheme"] == "http" and options["endpoint_override"] == "127.0.0.1:9"
    same = ("connect_timeout", "request_timeout", "scheme", "endpoint_override")
    assert {k: options[k] for k in same} == {k: storage_fs.__reduce__()[1][0][k] for k in same}


# ------------------------------------------------------ E: no dead code

# Imported for their effect or to hand on, not used in the importing module.
KEPT_IMPORTS = {  # optuna's submodules, re-exported so that `optuna.samplers.TPESampler` works on the front door
    ("pipeline/compat/optuna.py", name) for name in ("exceptions", "logging", "storages")
} | {  # `import pipeline.preprocessing` registers the custom Keras layers saved models use
    ("pipeline/results.py", "pipeline"), ("pipeline/trainable.py", "pipeline"),
}


def _references() -> dict[str, int]:
    """How often each identifier is read anywhere in the repository's Python files."""
    seen: collections.Counter[str] = collections.Counter()
    project = ("pipeline", "searchers", "cluster", "tests", "benchmarks", "examples", "k8s")
    for file in (f for folder in project for f in (ROOT / folder).rglob("*.py")):
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
                seen[node.id] += 1
            elif isinstance(node, ast.Attribute):
                seen[node.attr] += 1
            elif isinstance(node, ast.ImportFrom):
                seen.update(alias.name for alias in node.names)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):  # __all__, "a:b"
                seen.update(re.findall(r"[A-Za-z_]\w*", node.value))
    return seen


def test_no_module_level_name_is_unused():
    """Functions, classes and constants that nothing reads (decorated ones register themselves)."""
    seen = _references()
    dead = []
    for file in _modules().values():
        for node in ast.parse(file.read_text()).body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names = [] if node.decorator_list else [node.name]
            elif isinstance(node, ast.Assign):
                names = [t.id for t in node.targets if isinstance(t, ast.Name)]
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                names = [node.target.id]
            else:
                continue
            dead += [f"{file.relative_to(ROOT)}: {n}" for n in names
                     if not n.startswith("__") and seen[n] == 0]
    assert dead == []


def test_no_unused_import():
    unused = []
    for file in _modules().values():
        tree = ast.parse(file.read_text())
        read = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
        read |= {word for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
                 for word in re.findall(r"[A-Za-z_]\w*", n.value)}  # __all__, string annotations
        rel = str(file.relative_to(ROOT))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and getattr(node, "module", "") != "__future__":
                for alias in node.names:
                    name = (alias.asname or alias.name).split(".")[0]
                    if name not in read and (rel, name) not in KEPT_IMPORTS:
                        unused.append(f"{rel}: {name}")
    assert unused == []


# ------------------------------------------------------ F: extending touches one place


def test_a_new_searcher_module_registers_itself(tmp_path):
    """A searcher is one new module in searchers/: the package and the spec find it."""
    shutil.copytree(ROOT / "searchers", tmp_path / "searchers",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "searchers" / "everything_twice.py").write_text(
        "from searchers.basic import _random\n"
        "from searchers.registry import SEARCHERS\n"
        "SEARCHERS.add('twice', _random, 'Random search, for the test', variant_generator=True)\n")
    code = ("from pipeline.spec import parse_spec; from tests.conftest import TINY; "
            "print(parse_spec({**TINY, 'searcher': {'name': 'twice'}}).searcher.name)")
    proc = _cli(["-c", code], tmp_path, Path(f"{tmp_path}{os.pathsep}{ROOT}"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "twice"


def test_a_new_file_data_source_is_one_registration(tmp_path):
    from pipeline.data import SOURCES, _Sources
    from pipeline.spec import DataSpec

    sources = _Sources("data source")
    sources.register("tsv", needs_path=True)(lambda spec, seed: None)
    sources.register("noise")(lambda spec, seed: None)
    assert sources.needs_path("tsv") and not sources.needs_path("noise")
    assert [s for s in SOURCES if SOURCES.needs_path(s)] == ["npz", "csv", "parquet", "tfrecord"]
    with pytest.raises(ValueError, match="path: required for source 'csv'"):
        DataSpec(source="csv")
