"""The locks in requirements/ match pyproject.toml, are complete, and are what `make test` runs.

A fresh clone installs ``requirements/dev.txt`` (``make demo``, ``make test``, CI) and the
image installs ``requirements/image*.txt``; a pyproject range edited without ``make lock``,
a lock missing a dependency, or a venv that drifted from the lock fails here.
``make test-latest`` sets PIPELINE_UNLOCKED=1: it tests the newest allowed versions
on purpose, so the environment check is skipped there.
"""

from __future__ import annotations

import os
import re
import sys
import tomllib
from importlib import metadata

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "requirements"))
import drift  # noqa: E402  (requirements/drift.py)

LOCKS = ROOT / "requirements"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
PROJECT = canonicalize_name(PYPROJECT["name"])
# lock file -> the pyproject extras it was compiled with
COMPILED = {"dev.txt": ["test", "gp", "mlflow", "bench"], "image.txt": [], "image-cuda.txt": ["cuda"]}
ENV = {**default_environment(), "python_version": "3.11", "python_full_version": "3.11.7",
       "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64"}


def _applies(req: Requirement, extras: set[str]) -> bool:
    if req.marker is None:
        return True
    return any(req.marker.evaluate({**ENV, "extra": e}) for e in (extras or {""}))


def _roots(lock: str) -> list[Requirement]:
    reqs = [Requirement(r) for r in PYPROJECT["dependencies"]]
    for extra in COMPILED[lock]:
        reqs += [Requirement(r) for r in PYPROJECT["optional-dependencies"][extra]]
    reqs += [Requirement(line) for line in (LOCKS / "build.in").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    return reqs


def test_make_install_and_the_image_use_the_locks_hash_checked():
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"pip install .*--require-hashes -r \$\(LOCK\)", makefile)
    assert "LOCK := requirements/dev.txt" in makefile
    assert re.search(r"pip install .*--no-deps .*-e \.", makefile)  # the project: no resolving
    for target in ("lock:", "lock-upgrade:", "test-latest:"):
        assert re.search(rf"^{target}", makefile, re.M), target
    assert "--require-hashes -r ${LOCK}" in (ROOT / "k8s" / "Dockerfile").read_text()


@pytest.mark.parametrize("lock", list(COMPILED))
def test_every_pin_is_exact_and_hashed(lock):
    text = (LOCKS / lock).read_text()
    entries = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 2)[2])  # one block a package
    pinned = [e for e in entries if "==" in e.split("\n")[0]]
    assert len(pinned) == len(drift.pins(LOCKS / lock)) > 50
    unhashed = [e.split()[0] for e in pinned if "--hash=sha256:" not in e]
    assert unhashed == []


@pytest.mark.parametrize("lock", list(COMPILED))
def test_lock_pins_every_pyproject_requirement_within_its_range(lock):
    pins = drift.pins(LOCKS / lock)
    problems = []
    for req in _roots(lock):
        if not _applies(req, set()):
            continue
        name = canonicalize_name(req.name)
        if name not in pins:
            problems.append(f"{req} is not in requirements/{lock}")
        elif not req.specifier.contains(Version(pins[name]), prereleases=True):
            problems.append(f"{req}: requirements/{lock} pins {pins[name]}")
    assert problems == [], "pyproject.toml changed without `make lock`: " + "; ".join(problems)


@pytest.mark.parametrize("lock", [k for k in COMPILED if k != "dev.txt"])
def test_image_locks_hold_the_versions_make_test_ran(lock):
    dev, image = drift.pins(LOCKS / "dev.txt"), drift.pins(LOCKS / lock)
    differ = {n: (v, dev[n]) for n, v in image.items() if n in dev and Version(dev[n]) != Version(v)}
    assert differ == {}
    if lock == "image.txt":  # the CPU image is a subset of what the tests ran
        assert set(image) <= set(dev)


def test_image_lock_is_closed_under_dependencies():
    """``pip install --require-hashes`` fails on a dependency the lock lacks: none may be."""
    image = drift.pins(LOCKS / "image.txt")
    queue = [(r, set(r.extras)) for r in _roots("image.txt")]
    missing, seen = set(), set()
    while queue:
        req, extras = queue.pop()
        name = canonicalize_name(req.name)
        key = (name, tuple(sorted(extras)))
        if key in seen:
            continue
        seen.add(key)
        if name not in image:
            missing.add(f"{name} (for {req})")
            continue
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            pytest.skip(f"{name} is not installed here; its requirements cannot be read")
        for line in requires:
            dep = Requirement(line)
            if _applies(dep, extras):
                queue.append((dep, set(dep.extras)))
    assert missing == set()


@pytest.mark.skipif(os.environ.get("PIPELINE_UNLOCKED") == "1",
                    reason="make test-latest: the newest allowed versions, not the lock")
def test_this_environment_is_the_lock():
    differ = drift.drift(LOCKS / "dev.txt")
    assert differ == [], ("this environment is not requirements/dev.txt (rebuild it: rm -rf .venv && "
                          f"make install): {differ}")
    assert metadata.version(PROJECT) == PYPROJECT["version"]


def test_drift_lists_what_differs(tmp_path):
    lock = tmp_path / "lock.txt"
    lock.write_text("# header\npytest==0.0.1 \\\n    --hash=sha256:00\n"
                    f"packaging=={metadata.version('packaging')}\nno-such-package==1.0\n")
    assert drift.pins(lock) == {"pytest": "0.0.1", "packaging": metadata.version("packaging"),
                                "no-such-package": "1.0"}
    assert drift.drift(lock) == [("no-such-package", "1.0", None),
                                 ("pytest", "0.0.1", metadata.version("pytest"))]
    assert drift.main([str(lock)]) == 0 and drift.main([str(lock), "--strict"]) == 1


def test_make_lock_reproduces_the_committed_locks(tmp_path):
    """`make lock` (README) on an unchanged pyproject keeps every pin: the locks are its output.

    Runs the real command on a copy of the files it reads; uv resolves against PyPI.
    """
    import shutil
    import subprocess

    for name in ("Makefile", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(LOCKS, tmp_path / "requirements")
    uv_venv = ROOT / ".venv-lock"  # reused between runs, as `make lock` does in the checkout
    proc = subprocess.run(["make", "lock", f"UV_VENV={uv_venv}", f"PYTHON={sys.executable}"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for lock in COMPILED:
        assert (tmp_path / "requirements" / lock).read_text() == (LOCKS / lock).read_text(), lock
