"""Yardsticks for the front doors: the peers' own tests and examples, only the import changed.

1. KerasTuner's public-API unit tests (keras-team/keras-tuner, ``keras_tuner/**/*_test.py``,
   the files in ``KT_FILES``), one ``pytest`` process per file, once against the installed
   keras-tuner and once against ``pipeline.compat.keras_tuner``;
2. Optuna's examples (optuna/optuna-examples, the directories in ``OPTUNA_DIRS``), one
   ``python example.py`` per example, once with ``import optuna`` and once with
   ``from pipeline.compat import optuna``.

Only import lines are rewritten (see ``rewrite_kt`` and ``rewrite_optuna``), and, on both
sides alike, Keras' MNIST import of an Optuna example (an offline stand-in,
``benchmarks/_yard_data.py``: nothing downloads here; such an example runs at most
``STAND_IN_TRIALS`` trials) and, with ``--trial-cap``, any example's ``n_trials``; the
report marks the examples so changed. Results go to
a JSON file (``--json``) and a Markdown report (``--out``); ``--report-only`` re-renders
the report from the JSON. Run::

    .venv/bin/python benchmarks/yardsticks.py --kt-repo PATH --optuna-repo PATH

PATH is a checkout or a bare git directory (as the ``fetch`` tool leaves it; its HEAD is
exported with ``git archive``).
"""

from __future__ import annotations

import argparse
import ast
import datetime
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent

# -- selection -------------------------------------------------------------------------------

KT_FILES = [  # cheapest first
    "engine/hyperparameters/hp_types/boolean_hp_test.py",
    "engine/hyperparameters/hp_types/choice_hp_test.py",
    "engine/hyperparameters/hp_types/fixed_hp_test.py",
    "engine/hyperparameters/hp_types/float_hp_test.py",
    "engine/hyperparameters/hp_types/int_hp_test.py",
    "engine/hyperparameters/hyperparameters_test.py",
    "engine/objective_test.py",
    "engine/oracle_test.py",
    "integration_tests/legacy_import_test.py",
    "integration_tests/randomness_test.py",
    "tuners/randomsearch_test.py",
    "tuners/gridsearch_test.py",
    "tuners/bayesian_test.py",
    "integration_tests/end_to_end_test.py",
    "tuners/hyperband_test.py",
    "engine/tuner_test.py",
]
KT_EXCLUDED = {
    "engine/base_tuner_test.py": "imports keras_tuner.test_utils.mock_distribute, which needs "
                                 "portpicker (not installed)",
    "tuners/sklearn_tuner_test.py": "SklearnTuner: not one of the front door's tuners",
    "applications/*": "HyperResNet/HyperXception/...: not offered by the front door",
    "distribute/*": "KerasTuner's gRPC chief/worker internals",
    "engine/trial_test.py, metrics_tracking_test.py, tuner_utils_test.py, conditions_test.py, "
    "hyperparameters/hp_utils_test.py, hyperparameters/hyperparameter_test.py, utils_test.py, "
    "test_utils/*": "internal modules only",
}
OPTUNA_DIRS = ["basic", "faq", "multi_objective", "pruners", "samplers", "sklearn", "terminator",
               "visualization", "keras", "tensorflow", "tfkeras", "tensorboard", "ray",
               "kubernetes"]
# Examples that need more than the code shows (checked before the generic rules).
OPTUNA_SKIP = {
    "kubernetes/simple/sklearn_distributed.py": "needs a Kubernetes cluster and its PostgreSQL "
                                                "storage",
}
DOWNLOAD = re.compile(r"load_data\(|fetch_openml|fetch_\w+\(|tfds\.|tensorflow_datasets|"
                      r"urlretrieve|download=True|MNIST")
# Downloads other than Keras' MNIST, which both sides get from an offline stand-in instead.
OTHER_DOWNLOAD = re.compile(r"fetch_openml|fetch_\w+\(|tfds\.|tensorflow_datasets|"
                            r"urlretrieve|download=True|torchvision")
# Trials of an example given the stand-in, unless --trial-cap says otherwise: their own 100
# (with timeout=600) would outlast the per-example timeout on both sides.
STAND_IN_TRIALS = 10
MNIST_IMPORT = re.compile(r"^from (?:tensorflow\.)?keras\.datasets import mnist[ \t]*$", re.M)
# tensorboard/tensorboard_simple.py's Fashion-MNIST (same shapes as MNIST): the same stand-in.
FASHION_MNIST = re.compile(r"^fashion_mnist = tf\.keras\.datasets\.fashion_mnist[ \t]*$", re.M)
GPU = re.compile(r"\bcuda\b|cudf|cuml")

# Markers that label a KerasTuner test "internal" (it uses more than the public API).
ORACLE_INTERNALS = {"create_trial", "update_trial", "end_trial", "populate_space", "get_space",
                    "update_space", "score_trial"}


def _sh(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def checkout(repo: Path, dest: Path) -> tuple[Path, str]:
    """A work tree of ``repo`` (a checkout, used as is, or a bare git dir, exported)."""
    repo = repo.resolve()
    git_dir = repo if (repo / "objects").is_dir() and (repo / "HEAD").is_file() else None
    if git_dir is None and (repo / ".git").exists():
        commit = _sh(["git", "-C", str(repo), "rev-parse", "HEAD"]).stdout.strip()
        return repo, commit
    if git_dir is None:
        return repo, "unknown"
    commit = _sh(["git", f"--git-dir={git_dir}", "rev-parse", "HEAD"]).stdout.strip()
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    archive = subprocess.Popen(["git", f"--git-dir={git_dir}", "archive", "HEAD"],
                               stdout=subprocess.PIPE)
    subprocess.run(["tar", "-x", "-C", str(dest)], stdin=archive.stdout, check=True)
    archive.wait()
    return dest, commit


# -- import rewriting -------------------------------------------------------------------------


def _replace_nodes(source: str, pick) -> str:
    """Replace the source lines of top-level-or-nested import statements ``pick`` answers."""
    lines = source.splitlines(keepends=True)
    edits = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            new = pick(node)
            if new is not None:
                edits.append((node.lineno, node.end_lineno, node.col_offset, new))
    for start, end, col, new in sorted(edits, reverse=True):
        first = lines[start - 1]
        indent = first[:col]
        if first[:col].strip():  # `x; import y` -- not seen in these sources
            raise ValueError(f"cannot rewrite line {start}: {first!r}")
        body = "".join(indent + line + "\n" for line in new)
        lines[start - 1:end] = [body]
    return "".join(lines)


def rewrite_kt(source: str, ours: bool) -> str:
    """KerasTuner's imports -> ours (through ``_yard_kt``) or the installed keras-tuner.

    The tests were written against keras-tuner's source layout (``keras_tuner.engine.tuner``
    ...); the installed 1.4.8 keeps that layout under ``keras_tuner.src`` and publishes the
    API in generated modules. So the original run imports ``keras_tuner.src.*`` (the same
    objects), and ours imports ``_yard_kt``, which maps each object to the front door.
    """

    def kt_mod(name: str | None) -> bool:
        return bool(name) and (name == "keras_tuner" or name.startswith("keras_tuner."))

    def pick(node):
        if isinstance(node, ast.Import):
            if not any(kt_mod(a.name) for a in node.names):
                return None
            out = []
            for a in node.names:
                if not kt_mod(a.name):
                    out.append(f"import {a.name}" + (f" as {a.asname}" if a.asname else ""))
                elif ours:
                    bound = a.asname or "keras_tuner"
                    target = a.name if a.asname else "keras_tuner"
                    out.append(f"import _yard_kt; {bound} = _yard_kt.module({target!r})")
                else:
                    src = "keras_tuner.src" + a.name[len("keras_tuner"):]
                    if a.asname:
                        out.append(f"import {src} as {a.asname}")
                    else:
                        out.append(f"import {src}; import keras_tuner.src as keras_tuner")
            return out
        if node.level or not kt_mod(node.module):
            return None
        if node.module.startswith("keras_tuner.test_utils"):
            mod = "yard_kt_test_utils" + node.module[len("keras_tuner.test_utils"):]
            names = ", ".join(a.name + (f" as {a.asname}" if a.asname else "") for a in node.names)
            return [f"from {mod} import {names}"]
        if not ours:
            src = "keras_tuner.src" + node.module[len("keras_tuner"):]
            names = ", ".join(a.name + (f" as {a.asname}" if a.asname else "") for a in node.names)
            return [f"from {src} import {names}"]
        return ["import _yard_kt"] + [
            f"{a.asname or a.name} = _yard_kt.name({node.module!r}, {a.name!r})"
            for a in node.names]

    source = _replace_nodes(source, pick)
    if not ours:  # mock.patch("keras_tuner.engine...") targets
        source = re.sub(r"""(["'])keras_tuner\.(?!src\.)""", r"\1keras_tuner.src.", source)
    return source


def rewrite_optuna(source: str) -> str:
    """``import optuna [as x]`` -> ``from pipeline.compat import optuna [as x]``;
    ``from optuna import a`` -> ``from pipeline.compat.optuna import a``. Imports of
    Optuna's submodules (``from optuna.trial import TrialState``) are left alone: the front
    door re-exports those same objects."""

    def pick(node):
        if isinstance(node, ast.Import):
            if not any(a.name == "optuna" for a in node.names):
                return None
            return [("from pipeline.compat import optuna" + (f" as {a.asname}" if a.asname
                                                               else ""))
                    if a.name == "optuna" else
                    (f"import {a.name}" + (f" as {a.asname}" if a.asname else ""))
                    for a in node.names]
        if node.level == 0 and node.module == "optuna":
            names = ", ".join(a.name + (f" as {a.asname}" if a.asname else "") for a in node.names)
            return [f"from pipeline.compat.optuna import {names}"]
        return None

    return _replace_nodes(source, pick)


# -- KerasTuner tests --------------------------------------------------------------------------

CONFTEST = '''
import json, os, signal
import pytest
import keras

_TIMEOUT = int(os.environ["YARD_TEST_TIMEOUT"])
_OUT = os.environ["YARD_RESULTS"]


def _write(rec):
    with open(_OUT, "a") as f:
        f.write(json.dumps(rec) + "\\n")


@pytest.fixture(autouse=True)
def _yard_seed():  # KerasTuner's conftest does the same
    keras.utils.set_random_seed(0)
    keras.backend.set_image_data_format("channels_last")
    yield


def _alarm(signum, frame):
    raise TimeoutError(f"yardstick: test ran over {_TIMEOUT} s")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(_TIMEOUT)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def pytest_collection_modifyitems(items):
    _write({"collected": [i.nodeid for i in items]})


def _msg(report):
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is not None:
        return crash.message
    if isinstance(report.longrepr, tuple):
        return report.longrepr[-1]
    return str(report.longrepr)


def pytest_runtest_logreport(report):
    if report.when == "call" or report.outcome != "passed":
        crash = getattr(report.longrepr, "reprcrash", None)
        _write({"test": report.nodeid, "when": report.when, "outcome": report.outcome,
                "msg": "" if report.passed else _msg(report), "s": round(report.duration, 1),
                "where": f"{crash.path}:{crash.lineno}" if crash is not None else ""})


def pytest_collectreport(report):
    if report.failed:
        _write({"collect_error": _msg(report)})
'''


def internal_markers(source: str) -> dict[str, list[str]]:
    """Per test function: why it is "internal" (empty: public API only, as far as seen)."""
    tree = ast.parse(source)
    helpers = {n.name: n for n in tree.body
               if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and not n.name.startswith("test")}

    def marks(node, seen) -> set[str]:
        found = set()
        for sub in ast.walk(node):
            if isinstance(sub, ast.Attribute):
                a = sub.attr
                if a.startswith("_") and not a.startswith("__"):
                    found.add(f"private .{a}")
                elif a in ORACLE_INTERNALS:
                    found.add(f"oracle.{a}")
                elif a in ("patch", "object") and isinstance(sub.value, (ast.Name, ast.Attribute)):
                    found.add("mock.patch")
            elif isinstance(sub, ast.Name) and sub.id in helpers and sub.id not in seen:
                seen.add(sub.id)
                found |= marks(helpers[sub.id], seen)
            elif isinstance(sub, ast.FunctionDef) and sub.name in ORACLE_INTERNALS \
                    and sub is not node:
                found.add(f"overrides {sub.name}")
        return found

    out = {}
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and \
                node.name.startswith("test"):
            out[node.name] = sorted(marks(node, set()))
    return out


def _run(cmd: list[str], cwd: Path, env: dict, timeout: float) -> tuple[int, str, float]:
    """Run in a new process group (killed whole on timeout, Ray's children included)."""
    t0 = time.monotonic()
    proc = subprocess.Popen(["nice", "-n", "15", *cmd], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
        rc = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        rc = 124
    try:  # leftovers of the group (e.g. Ray's raylet after the driver exited)
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return rc, out, time.monotonic() - t0


def _env(extra_path: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(extra_path)])
    env.update(TF_CPP_MIN_LOG_LEVEL="3", MPLBACKEND="Agg", KERAS_BACKEND="tensorflow",
               PYTHONDONTWRITEBYTECODE="1")
    return env


def run_kt(kt_root: Path, scratch: Path, files: list[str], test_timeout: int,
           file_timeout: int, log, results: dict, save) -> dict:
    """File by file, the original then ours (``save`` after each file: partial runs count)."""
    pkg = kt_root / "keras_tuner"
    for side in ("original", "ours"):
        work = scratch / f"kt-{side}"
        if work.exists():
            shutil.rmtree(work)
        work.mkdir(parents=True)
        (work / "conftest.py").write_text(CONFTEST)
        shutil.copy(HERE / "_yard_kt.py", work / "_yard_kt.py")
        if (pkg / "test_utils").is_dir():
            shutil.copytree(pkg / "test_utils", work / "yard_kt_test_utils")
    for rel in files:
        results.pop(rel, None)
        for side in ("original", "ours"):
            work = scratch / f"kt-{side}"
            src = (pkg / rel).read_text()
            name = "test_" + rel.replace("/", "__")
            (work / name).write_text(rewrite_kt(src, ours=side == "ours"))
            res_file = work / (name + ".jsonl")
            env = _env(work)
            env.update(YARD_TEST_TIMEOUT=str(test_timeout), YARD_RESULTS=str(res_file))
            rc, out, wall = _run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                                  "-q", name], work, env, file_timeout)
            recs = [json.loads(x) for x in res_file.read_text().splitlines()] \
                if res_file.exists() else []
            results.setdefault(rel, {})[side] = {"rc": rc, "wall": round(wall, 1),
                                                 "records": recs, "tail": out[-3000:]}
            log(f"kt {side:8s} {rel}: rc {rc}, {wall:.0f} s")
        results[rel]["internal"] = internal_markers((pkg / rel).read_text())
        save()
    return results


# -- Optuna examples --------------------------------------------------------------------------


def _top_imports(source: str) -> set[str]:
    mods = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            mods |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            mods.add(node.module.split(".")[0])
    return mods


def stand_in_data(source: str) -> tuple[str, bool]:
    """Keras' MNIST import -> the offline stand-in (``benchmarks/_yard_data.py``), for both
    sides; and whether it was replaced."""
    new = MNIST_IMPORT.sub("from benchmarks._yard_data import mnist  # yardsticks: offline MNIST "
                           "stand-in", source)
    new = FASHION_MNIST.sub("from benchmarks._yard_data import mnist as fashion_mnist  # yardsticks: "
                            "offline stand-in", new)
    return new, new != source


def cap_trials(source: str, cap: int | None) -> str:
    """``n_trials=K`` -> ``n_trials=min(K, cap)`` (both sides; ``--trial-cap``)."""
    if cap is None:
        return source
    return re.sub(r"\bn_trials=(\d+)", lambda m: f"n_trials={min(int(m.group(1)), cap)}", source)


def skip_reason(rel: str, source: str, stand_in: bool = False) -> str | None:
    top = rel.split("/")[0]
    if top not in OPTUNA_DIRS:
        return f"out of scope: {top} (not keras/tensorflow/sklearn/plain Python)"
    if rel in OPTUNA_SKIP:
        return OPTUNA_SKIP[rel]
    missing = sorted(m for m in _top_imports(source) - {"benchmarks"}  # the stand-in: on PYTHONPATH
                     if m not in sys.stdlib_module_names and importlib.util.find_spec(m) is None)
    if missing:
        return f"needs {', '.join(missing)} (not installed)"
    if ("optuna.integration" in source or "optuna_integration" in source) and \
            importlib.util.find_spec("optuna_integration") is None:
        return "needs optuna-integration (not installed)"
    m = (OTHER_DOWNLOAD if stand_in else DOWNLOAD).search(source)
    if m:
        return f"needs a download ({m.group(0).rstrip('(')})"
    if GPU.search(source):
        return "needs a GPU"
    if re.search(r"optuna\.visualization\.(?!matplotlib)|from optuna\.visualization import",
                 source) and importlib.util.find_spec("plotly") is None:
        return "needs plotly (optuna.visualization; not installed)"
    return None


def error_line(out: str, rc: int, timeout: float) -> str:
    if rc == 124:
        return f"timeout: ran over {timeout:.0f} s"
    lines = [x.strip() for x in out.splitlines() if x.strip()]
    for line in reversed(lines):
        if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt|Pruned|Failure)\b:?",
                    line):
            return line
    return lines[-1] if lines else f"exit status {rc}"


def run_optuna(oe_root: Path, scratch: Path, timeout: int, only: list[str] | None, log,
               results: dict, save, trial_cap: int | None = None) -> dict:
    examples = sorted(str(p.relative_to(oe_root)) for p in oe_root.rglob("*.py"))
    for rel in examples:
        if only and not any(rel.startswith(o) for o in only):
            continue
        source = (oe_root / rel).read_text()
        if "optuna" not in source:
            continue  # helper modules
        source, stand_in = stand_in_data(source)
        reason = skip_reason(rel, source, stand_in)
        if reason:
            results[rel] = {"skipped": reason}
            continue
        capped = cap_trials(source, trial_cap if trial_cap is not None
                            else STAND_IN_TRIALS if stand_in else None)
        changed = (["MNIST: offline stand-in"] if stand_in else []) + \
            ([f"n_trials capped at {trial_cap or STAND_IN_TRIALS}"] if capped != source else [])
        source = capped
        results[rel] = {"changed": changed} if changed else {}
        for side in ("original", "ours"):
            work = scratch / f"optuna-{side}" / Path(rel).parent
            if work.exists():
                shutil.rmtree(work)
            shutil.copytree((oe_root / rel).parent, work)
            script = work / Path(rel).name
            script.write_text(rewrite_optuna(source) if side == "ours" else source)
            rc, out, wall = _run([sys.executable, script.name], work, _env(work), timeout)
            results[rel][side] = {"rc": rc, "wall": round(wall, 1),
                                  "error": "" if rc == 0 else error_line(out, rc, timeout),
                                  "tail": out[-3000:]}
            log(f"optuna {side:8s} {rel}: rc {rc}, {wall:.0f} s")
        save()
    return results


# -- report -------------------------------------------------------------------------------------


def _first(msg: str) -> str:
    line = (msg or "").strip().splitlines()[0] if (msg or "").strip() else ""
    return line[:240].replace("|", "\\|")


def kt_rows(kt: dict) -> list[dict]:
    rows = []
    for rel, res in kt.items():
        per = {}
        for side in ("original", "ours"):
            s = res.get(side, {})
            recs = s.get("records", [])
            collected = [i for r in recs for i in r.get("collected", [])]
            cerr = [r["collect_error"] for r in recs if "collect_error" in r]
            outcome = {}
            for r in recs:
                if "test" in r:
                    prev = outcome.get(r["test"])
                    if prev is None or prev["outcome"] == "passed":
                        outcome[r["test"]] = r
            per[side] = (collected, cerr, outcome, s.get("rc"))
        ids = list(dict.fromkeys(per["original"][0] + per["ours"][0]))
        if not ids and per["original"][1]:
            rows.append({"file": rel, "test": "(collection)", "original": "error", "ours": "error",
                         "orig_msg": per["original"][1][0], "ours_msg": per["ours"][1][:1] or "",
                         "internal": ""})
            continue
        for tid in ids:
            row = {"file": rel, "test": tid.split("::", 1)[-1]}
            for side in ("original", "ours"):
                collected, cerr, outcome, rc = per[side]
                r = outcome.get(tid)
                if r is not None:
                    row[side] = r["outcome"]
                    row[side[:4] + "_msg"] = r["msg"]
                    where = r.get("where") or ""
                    if where.startswith(str(ROOT) + "/pipeline/"):  # where ours raised
                        row[side[:4] + "_where"] = where[len(str(ROOT)) + 1:]
                elif cerr and tid not in collected:
                    row[side], row[side[:4] + "_msg"] = "error", "collection: " + cerr[0]
                else:
                    row[side] = "not run"
                    row[side[:4] + "_msg"] = ("file timed out" if rc == 124 else
                                              f"pytest exit status {rc}")
            base = re.sub(r"\[.*$", "", row["test"].split("::")[-1])
            marks = list(res.get("internal", {}).get(base, []))
            if "yardstick-internal" in row.get("ours_msg", ""):
                marks.append("internal module/function")
            row["internal"] = ", ".join(marks)
            rows.append(row)
    return rows


def _normalize(msg: str) -> str:
    msg = _first(msg)
    msg = re.sub(r"0x[0-9a-f]+", "0x…", msg)
    msg = re.sub(r"/[\w./-]+", "<path>", msg)
    msg = re.sub(r"\d+(\.\d+)?", "N", msg)
    return msg[:160]


def render(data: dict) -> str:
    meta = data.get("meta", {})
    out = ["# Yardsticks: the peers' own tests and examples on the front doors", ""]
    out.append(f"Run {meta.get('date', '?')} on {meta.get('host', '?')}; pipeline commit "
               f"`{meta.get('commit', '?')}`; keras-tuner tests at `{meta.get('kt_commit', '?')}`"
               f" (installed keras-tuner {meta.get('kt_version', '?')}); optuna-examples at "
               f"`{meta.get('oe_commit', '?')}` (installed optuna {meta.get('optuna_version', '?')})"
               f". Wall time: {meta.get('wall', {})}. Produced by `benchmarks/yardsticks.py`.")
    out.append("")
    kt = data.get("kt", {})
    oe = data.get("optuna", {})
    rows = kt_rows(kt)
    counted = [r for r in rows if r["original"] != "skipped"]
    n = len(counted)
    ours = sum(r["ours"] == "passed" for r in counted)
    orig = sum(r["original"] == "passed" for r in counted)
    ran = {k: v for k, v in oe.items() if "skipped" not in v}
    on = len(ran)
    oours = sum(v["ours"]["rc"] == 0 for v in ran.values())
    oorig = sum(v["original"]["rc"] == 0 for v in ran.values())
    out += ["## Totals", "",
            "| yardstick | N | ours pass | original passes |", "|---|---|---|---|",
            f"| KerasTuner public-API tests ({len(kt)} files) | {n} | {ours} | {orig} |",
            f"| Optuna examples ({on} run, {len(oe) - on} skipped) | {on} | {oours} | {oorig} |",
            ""]
    out.append(f"KerasTuner: ours {ours} of {n} where the original passes {orig} of {n}. "
               f"Optuna: ours {oours} of {on} where the original passes {oorig} of {on}.")
    internal_fail = sum(1 for r in counted if r["ours"] != "passed" and r["internal"])
    out += ["", f"Of ours' {n - ours} KerasTuner failures, {internal_fail} are in tests labelled"
            " *internal* (they use oracle internals, private attributes, mock.patch or internal"
            " modules); tests the original skips (pytest skip marks) are not counted."]
    public = [r for r in counted if not r["internal"]]
    out += ["", f"Public API only (the {len(public)} tests not labelled internal): ours "
            f"{sum(r['ours'] == 'passed' for r in public)} of {len(public)} where the original "
            f"passes {sum(r['original'] == 'passed' for r in public)} of {len(public)}.", ""]
    analysis = HERE / "out" / "yardsticks_analysis.md"
    if analysis.exists():  # written by hand from this report (kept across re-renders)
        out += [analysis.read_text().rstrip(), ""]

    # grouped causes (ours fails)
    groups: dict[str, list[str]] = {}
    for r in counted:
        if r["ours"] != "passed":
            groups.setdefault(_normalize(r.get("ours_msg", "")), []).append(
                f"{Path(r['file']).stem}::{r['test']}")
    for k, v in ran.items():
        if v["ours"]["rc"] != 0:
            groups.setdefault(_normalize(v["ours"]["error"]), []).append(k)
    out += ["## Failure messages on the front doors, grouped (ours)", "",
            "| count | first error line (normalized) | tests/examples |", "|---|---|---|"]
    for msg, items in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        shown = ", ".join(items[:6]) + (f", … (+{len(items) - 6})" if len(items) > 6 else "")
        out.append(f"| {len(items)} | {msg} | {shown} |")
    out.append("")

    out += ["## KerasTuner tests", "",
            "| file | test | original | ours | internal | ours: first error line | "
            "original: first error line |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['file']} | {r['test'].replace('|', '/')} | {r['original']} | "
                   f"{r['ours']} | {r['internal']} | "
                   f"{_first(r.get('ours_msg', '')) if r['ours'] != 'passed' else ''}"
                   f"{' (at ' + r['ours_where'] + ')' if r.get('ours_where') else ''} | "
                   f"{_first(r.get('orig_msg', '')) if r['original'] != 'passed' else ''} |")
    out += ["", "Files' wall time (s), original / ours: " + "; ".join(
        f"{rel} {res.get('original', {}).get('wall')} / {res.get('ours', {}).get('wall')}"
        for rel, res in kt.items()), ""]
    out += ["Not selected: " + "; ".join(f"`{k}` ({v})" for k, v in KT_EXCLUDED.items()), ""]

    out += ["## Optuna examples", "",
            "| example | original | ours | wall s (orig / ours) | ours: first error line | "
            "original: first error line |", "|---|---|---|---|---|---|"]
    for k, v in ran.items():
        o, u = v["original"], v["ours"]
        changed = f" ({'; '.join(v['changed'])}, both sides)" if v.get("changed") else ""
        out.append(f"| {k}{changed} | {'pass' if o['rc'] == 0 else 'FAIL'} | "
                   f"{'pass' if u['rc'] == 0 else 'FAIL'} | {o['wall']} / {u['wall']} | "
                   f"{_first(u['error'])} | {_first(o['error'])} |")
    out += ["", "Skipped (not counted in N):", ""]
    for k, v in oe.items():
        if "skipped" in v:
            out.append(f"- `{k}`: skipped: {v['skipped']}")
    out.append("")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kt-repo", type=Path, help="keras-team/keras-tuner checkout or bare git dir")
    ap.add_argument("--optuna-repo", type=Path, help="optuna/optuna-examples checkout or git dir")
    ap.add_argument("--only", choices=["kt", "optuna"], help="run one yardstick (the other's "
                    "results are kept from --json)")
    ap.add_argument("--kt-files", nargs="*", help="subset of KT_FILES (paths under keras_tuner/)")
    ap.add_argument("--examples", nargs="*", help="prefixes of Optuna examples to run")
    ap.add_argument("--scratch", type=Path, default=Path("/tmp/yardsticks"))
    ap.add_argument("--test-timeout", type=int, default=120, help="per KerasTuner test (s)")
    ap.add_argument("--file-timeout", type=int, default=1800, help="per KerasTuner file (s)")
    ap.add_argument("--example-timeout", type=int, default=300, help="per Optuna example (s)")
    ap.add_argument("--json", type=Path, default=HERE / "out" / "yardsticks.json")
    ap.add_argument("--out", type=Path, default=HERE / "out" / "yardsticks.md")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--trial-cap", type=int, help="run at most this many trials of each Optuna "
                    "example (both sides; marked in the report)")
    args = ap.parse_args()

    data = json.loads(args.json.read_text()) if args.json.exists() else {}
    if not args.report_only:
        def log(msg):
            print(msg, flush=True)

        def save():
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(data, indent=1))
            args.out.write_text(render(data))

        import keras_tuner
        import optuna
        meta = data.setdefault("meta", {})
        meta.update(date=datetime.datetime.now().isoformat(timespec="minutes"),
                    host=f"{os.uname().nodename}, {os.cpu_count()} CPUs",
                    commit=_sh(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
                    .stdout.strip(),
                    kt_version=keras_tuner.__version__, optuna_version=optuna.__version__)
        meta.setdefault("wall", {})
        args.scratch.mkdir(parents=True, exist_ok=True)
        if args.only in (None, "kt"):
            if not args.kt_repo:
                ap.error("--kt-repo is needed")
            t0 = time.monotonic()
            root, meta["kt_commit"] = checkout(args.kt_repo, args.scratch / "src-kt")
            run_kt(root, args.scratch, args.kt_files or KT_FILES, args.test_timeout,
                   args.file_timeout, log, data.setdefault("kt", {}), save)
            meta["wall"]["kt"] = f"{time.monotonic() - t0:.0f} s"
        if args.only in (None, "optuna"):
            if not args.optuna_repo:
                ap.error("--optuna-repo is needed")
            t0 = time.monotonic()
            root, meta["oe_commit"] = checkout(args.optuna_repo, args.scratch / "src-optuna")
            run_optuna(root, args.scratch, args.example_timeout, args.examples, log,
                       data.setdefault("optuna", {}), save, args.trial_cap)
            meta["wall"]["optuna"] = f"{time.monotonic() - t0:.0f} s"
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(data, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(data))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
