"""Attacks that need no cluster (issue #21): each must fail, and bad input exits 2 cleanly.

Points: 1 (what `submit` ships), 3 (`run` to another machine without TLS), 4 (callbacks
that run commands, results another user controls), 5 (writes through planted links),
6 (credentials in storage URIs and in messages).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, tiny_spec

SECRETS = (".env", ".env.production", ".aws/credentials", ".ssh/id_ed25519", "credentials.json",
           "id_rsa", "server.pem", ".netrc", ".git/config", "mymods/.env")


def _cli(args, cwd, env=None, timeout=120) -> subprocess.CompletedProcess:
    env = {**(env if env is not None else os.environ), "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


class _Listener:
    """A TCP listener that counts the connections it accepts (nothing must arrive)."""

    def __init__(self, host: str = "127.0.0.1"):
        self.sock = socket.socket()
        self.sock.bind((host, 0))
        self.sock.listen()
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._stop = False
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self):
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            conn.close()

    def close(self):
        self._stop = True
        self.thread.join()
        self.sock.close()


@pytest.fixture
def listener():
    lst = _Listener()
    yield lst
    lst.close()


def _project(tmp_path: Path) -> Path:
    for name in SECRETS:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("SECRET\n")
    (tmp_path / "mymods").mkdir(exist_ok=True)
    (tmp_path / "mymods" / "__init__.py").write_text("")
    (tmp_path / "mymods" / "cbs.py").write_text("def make():\n    return None\n")
    (tmp_path / "mymods" / "unrelated.py").write_text("")
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "data" / "train.csv").write_text("a,b\n1,2\n")
    (tmp_path / "notes.txt").write_text("private notes\n")
    raw = tiny_spec(tmp_path, training={"callbacks": ["mymods.cbs:make"]}, storage="results")
    raw["data"] = {"source": "csv", "path": "data/train.csv", "label": "b"}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(raw))
    return tmp_path


# --- point 1: submit ships only what the job needs -------------------------------------


def test_ship_list_has_no_secret_files_but_what_the_spec_names(tmp_path):
    from cluster.jobs import files_to_ship

    project = _project(tmp_path)
    for folder in ("pipeline", "searchers"):
        (project / folder).mkdir()
        (project / folder / "__init__.py").write_text("")
    (project / "pipeline" / ".env").write_text("SECRET\n")
    (project / "pipeline" / "big.log").write_text("x")
    (project / ".rayignore").write_text("*.log\n")
    files = files_to_ship(project, project / "spec.yaml")
    assert set(files) == {"pipeline/__init__.py", "searchers/__init__.py", "spec.yaml",
                          "mymods/__init__.py", "mymods/cbs.py", "data/train.csv"}, files
    # named explicitly, a file goes; a folder's secrets still do not
    files = files_to_ship(project, project / "spec.yaml", include=["notes.txt", ".env", "mymods"])
    assert {"notes.txt", ".env", "mymods/unrelated.py"} <= set(files)
    assert "mymods/.env" not in files and ".aws/credentials" not in files


def test_submit_refuses_over_the_size_cap_before_connecting(tmp_path, listener):
    project = _project(tmp_path)
    (project / "data" / "train.csv").write_bytes(b"a,b\n" + b"1,2\n" * 300_000)  # 1.2 MB
    proc = _cli(["submit", "spec.yaml", "--address", f"http://127.0.0.1:{listener.port}",
                 "--max-upload-mb", "1"], project)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "error: --max-upload-mb:" in proc.stderr and "over the cap of 1 MiB" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert listener.accepted == 0


def test_submit_refuses_outside_project_include(tmp_path, listener):
    project = _project(tmp_path / "p")
    proc = _cli(["submit", "spec.yaml", "--address", f"http://127.0.0.1:{listener.port}",
                 "--include", "../.."], project)
    assert proc.returncode == 2 and "error: --include:" in proc.stderr, proc.stderr
    assert listener.accepted == 0


# --- point 3: `run` to another machine without TLS --------------------------------------


@pytest.mark.parametrize("how", ["flag", "env"])
def test_run_refuses_a_remote_cluster_without_tls_before_connecting(tmp_path, how):
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(tiny_spec(tmp_path)))
    address = "192.0.2.1:6379"  # TEST-NET-1: not this machine
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    args = ["run", "spec.yaml"]
    if how == "flag":
        args += ["--address", address]
    else:
        env["RAY_ADDRESS"] = address
    started = time.monotonic()
    proc = _cli(args, tmp_path, env=env)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "error: --address: refusing to join the Ray cluster at 192.0.2.1 without TLS" in proc.stderr
    assert "--insecure" in proc.stderr and "Traceback" not in proc.stderr
    assert time.monotonic() - started < 30  # refused, not a 10 s connection attempt per try
    assert not (tmp_path / "results").exists()


def test_transport_check_accepts_this_machine_and_tls():
    from cluster.connect import ClusterConnectError, check_transport

    for address in ("127.0.0.1:6379", "localhost:6379", "ray://127.0.0.1:10001", "auto", None):
        check_transport(address)
    with pytest.raises(ClusterConnectError):
        check_transport("ray://192.0.2.1:10001")
    check_transport("192.0.2.1:6379", insecure=True)


def test_submit_address_check_refuses_credentials_and_remote_http():
    from cluster.jobs import SubmitError, check_address

    with pytest.raises(SubmitError, match="refusing plain http"):
        check_address("http://192.0.2.1:8265")
    with pytest.raises(SubmitError, match="credentials"):
        check_address("https://user:pw@192.0.2.1:8265")
    assert check_address("127.0.0.1:5000/") == "http://127.0.0.1:5000"


# --- point 4: callbacks may not name arbitrary callables ---------------------------------


def test_callback_factory_cannot_run_a_shell_command(tmp_path):
    from pipeline.spec import parse_spec
    from pipeline.trainable import _user_callbacks

    marker = tmp_path / "PWNED"
    for factory, kwargs in (("subprocess:getoutput", {"cmd": f"touch {marker}"}),
                            ("os:system", {"command": f"touch {marker}"}),
                            ("pipeline.cli:main", {"argv": ["validate", "x"]})):
        spec = parse_spec(tiny_spec(tmp_path, training={
            "callbacks": [{"factory": factory, "kwargs": kwargs}]}))
        with pytest.raises(ValueError, match="neither a Keras callback class nor a callable"):
            _user_callbacks(spec)
    assert not marker.exists()
    # a Keras callback and the user's own callback class still work
    spec = parse_spec(tiny_spec(tmp_path, training={"callbacks": [
        {"factory": "keras.callbacks:EarlyStopping", "kwargs": {"patience": 2}},
        {"factory": "tests.models:RecordThread", "kwargs": {"path": str(tmp_path / "t")}}]}))
    made = _user_callbacks(spec)
    assert [type(c).__name__ for c in made] == ["EarlyStopping", "RecordThread"]


# --- points 4 and 5 on stored results -----------------------------------------------------


@pytest.fixture(scope="module")
def experiment(ray_session, tmp_path_factory):
    import pipeline

    tmp = tmp_path_factory.mktemp("sec-exp")
    res = pipeline.run(tiny_spec(tmp, search={"trials": 2}, training={"epochs": 1}), progress=False)
    return Path(res.where.path)


def test_export_refuses_an_existing_file_and_never_follows_a_link(experiment, tmp_path):
    target = tmp_path / "victim.txt"
    target.write_text("keep me\n")
    out = tmp_path / "trials.csv"
    out.symlink_to(target)
    proc = _cli(["results", str(experiment), "--export", str(out)], tmp_path)
    assert proc.returncode == 2 and "error: --export:" in proc.stderr, proc.stderr
    proc = _cli(["results", str(experiment), "--export", str(out), "--force"], tmp_path)
    assert proc.returncode == 2 and "symbolic link" in proc.stderr, proc.stderr
    assert target.read_text() == "keep me\n" and out.is_symlink()

    plain = tmp_path / "plain.json"
    plain.write_text("old\n")
    proc = _cli(["results", str(experiment), "--export", str(plain)], tmp_path)
    assert proc.returncode == 2 and "pass --force" in proc.stderr
    assert plain.read_text() == "old\n"  # nothing written
    proc = _cli(["results", str(experiment), "--export", str(plain), "--force"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert len(__import__("json").loads(plain.read_text())) == 2


def test_report_refuses_an_existing_folder_and_replaces_planted_links(experiment, tmp_path):
    out = tmp_path / "rep"
    out.mkdir()
    target = tmp_path / "victim.html"
    target.write_text("keep me\n")
    (out / "index.html").symlink_to(target)
    proc = _cli(["report", str(experiment), "-o", str(out)], tmp_path)
    assert proc.returncode == 2 and "error: -o:" in proc.stderr and "--force" in proc.stderr
    proc = _cli(["report", str(experiment), "-o", str(out), "--force"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert target.read_text() == "keep me\n"
    assert not (out / "index.html").is_symlink() and "<html" in (out / "index.html").read_text()


@pytest.mark.skipif(os.getuid() != 0, reason="making a folder another user's needs root")
def test_results_from_a_folder_another_user_owns_warn_first(experiment, tmp_path):
    import shutil

    theirs = tmp_path / "theirs"
    shutil.copytree(experiment, theirs / experiment.name)
    os.chown(theirs, 65534, 65534)
    proc = _cli(["results", str(theirs / experiment.name)], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"warning: {theirs} is controlled by uid 65534" in proc.stderr
    assert "pickle" in proc.stderr
    mine = _cli(["results", str(experiment)], tmp_path)
    assert mine.returncode == 0 and "warning:" not in mine.stderr, mine.stderr
    # `run --resume` loads the stored experiment state (pickles) too: same warning, first
    spec = tiny_spec(tmp_path, search={"trials": 2}, training={"epochs": 1}, storage=str(theirs))
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    resumed = _cli(["run", "spec.yaml", "--resume"], tmp_path, env=env, timeout=300)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    assert f"warning: {theirs} is controlled by uid 65534" in resumed.stderr


# --- point 5: the storage write probe -------------------------------------------------------


def test_storage_probe_and_spec_copy_do_not_write_through_planted_links(tmp_path):
    from pipeline.storage import SPEC_FILE, locate

    root = tmp_path / "shared"
    (root / "tiny").mkdir(parents=True)
    target = tmp_path / "victim"
    target.write_text("keep me\n")
    (root / ".write-probe-tiny").symlink_to(target)  # the probe's old, predictable name
    (root / "tiny" / SPEC_FILE).symlink_to(target)
    where = locate(str(root), "tiny")
    where.check_writable()
    where.write_text(SPEC_FILE, "name: tiny\n")
    assert target.read_text() == "keep me\n"
    assert (root / "tiny" / SPEC_FILE).read_text() == "name: tiny\n"
    assert not (root / "tiny" / SPEC_FILE).is_symlink()
    assert sorted(p.name for p in root.iterdir()) == [".write-probe-tiny", "tiny"]  # probe gone


def test_safe_write_is_create_exclusive(tmp_path):
    from pipeline.safe_io import create_exclusive, write_file

    target = tmp_path / "victim"
    target.write_text("keep me\n")
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(FileExistsError):
        write_file(link, "x")
    with pytest.raises(FileExistsError):
        create_exclusive(link, b"x")
    write_file(link, "new", overwrite=True)
    assert target.read_text() == "keep me\n" and link.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".part")] == []


# --- point 6: credentials in URIs ---------------------------------------------------------


@pytest.mark.parametrize("command", ["validate", "run", "k8s"])
def test_credentials_in_storage_uri_are_refused_and_never_printed(tmp_path, command):
    raw = tiny_spec(tmp_path, storage={"path": "s3://AKIAEXAMPLE:wJalr/XUtnFEMI@bucket/x"})
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(raw))
    args = {"validate": ["validate", "spec.yaml"], "run": ["run", "spec.yaml"],
            "k8s": ["k8s", "render", "spec.yaml", "-o", "job.yaml"]}[command]
    proc = _cli(args, tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert ("error: storage.path: put credentials in the environment or a Secret"
            in proc.stderr), proc.stderr
    out = proc.stdout + proc.stderr
    assert "wJalr" not in out and "AKIAEXAMPLE" not in out and "Traceback" not in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.yaml"]  # nothing written


def test_secret_shaped_text_is_redacted_in_error_messages(tmp_path):
    proc = _cli(["results", "s3://AKIAEXAMPLE:wJalrXUtnFEMI@bucket/x?secret_key=SK123456"], tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "error:" in proc.stderr and "Traceback" not in proc.stderr
    for secret in ("wJalrXUtnFEMI", "SK123456", "AKIAEXAMPLE"):
        assert secret not in proc.stderr, proc.stderr


def test_redaction_doctests():
    import doctest

    import pipeline.redact

    result = doctest.testmod(pipeline.redact)
    assert result.attempted >= 8 and result.failed == 0
