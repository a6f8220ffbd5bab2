"""Submitting a spec to a Ray cluster as a job (Ray's Jobs API), and managing jobs.

Token authentication: set ``RAY_AUTH_MODE=token`` and ``RAY_AUTH_TOKEN`` or
``RAY_AUTH_TOKEN_PATH`` (``python -m pipeline cluster up`` prints them); Ray's
``JobSubmissionClient`` then sends the token with every request.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import ipaddress
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

TERMINAL = {"SUCCEEDED": 0, "FAILED": 1, "STOPPED": 1}

# The packages a job runs (`python -m pipeline run`), shipped when the project has them.
PACKAGES = ("pipeline", "searchers", "cluster")
# Well-known secret files and folders: never shipped unless named explicitly (--include,
# or a file the spec names).
SECRETS = (".env", ".env.*", ".envrc", ".aws", ".ssh", ".gnupg", ".kube", ".docker", ".git",
           ".netrc", ".pypirc", "*.pem", "*.key", "*.p12", "*.pfx", "id_*", "credentials*",
           ".ray-local-cluster", "token")
# Never useful on the cluster.
NOISE = (".venv", "venv", "results", "__pycache__", "*.pyc", ".pytest_cache", "*.egg-info",
         ".mypy_cache", ".ruff_cache")
MAX_UPLOAD_MB = 50.0
_MODULE_REF = re.compile(r"^([A-Za-z_][\w]*(?:\.[A-Za-z_][\w]*)*):[A-Za-z_][\w]*$")


class SubmitError(ValueError):
    """Refused before contacting the cluster (bad address, spec outside the project)."""


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_address(address: str, insecure: bool = False) -> str:
    """Dashboard URL for the Jobs API; plain http only to loopback unless ``insecure``."""
    if "://" not in address:
        address = f"http://{address}"
    url = urlparse(address)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise SubmitError(f"--address: expected http(s)://HOST:PORT of the dashboard, got {address}")
    if url.username or url.password:
        raise SubmitError("--address: put credentials in the environment (RAY_AUTH_TOKEN_PATH), "
                          "not in the address")
    if url.scheme == "http" and not _is_loopback(url.hostname) and not insecure:
        raise SubmitError(
            f"--address: refusing plain http to {url.hostname}: the token and your code would "
            "cross the network unencrypted; use https (e.g. through an ingress or a port-forward "
            "to localhost) or pass --insecure"
        )
    return address.rstrip("/")


def resolve_address(flag: str | None, insecure: bool = False) -> tuple[str, str]:
    """The one dashboard URL to use, and where it came from; checked.

    In this order: ``--address``; ``RAY_DASHBOARD_ADDRESS`` (what ``cluster env``
    exports), Ray's own ``RAY_API_SERVER_ADDRESS``, an ``http(s)://`` ``RAY_ADDRESS``;
    the running cluster recorded in the state folder of ``RAY_AUTH_TOKEN_PATH`` or in
    ``.ray-local-cluster``. There is no fixed-port default: another local user could
    listen there first and collect the token and the shipped code.
    """
    if flag:
        return check_address(flag, insecure), "--address"
    for var in ("RAY_DASHBOARD_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_ADDRESS"):
        value = os.environ.get(var, "").strip()
        if value and (var != "RAY_ADDRESS" or value.startswith(("http://", "https://"))):
            return check_address(value, insecure), var
    from cluster.local import DEFAULT_STATE_DIR, _is_running, load

    folders = [DEFAULT_STATE_DIR]
    if os.environ.get("RAY_AUTH_TOKEN_PATH"):
        folders.insert(0, Path(os.environ["RAY_AUTH_TOKEN_PATH"]).parent)
    for folder in folders:
        try:
            cluster = load(folder)
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if cluster is not None and _is_running(cluster):
            return check_address(cluster.dashboard_url, insecure), f"the cluster in {folder}"
    raise SubmitError(
        "--address: no cluster to talk to: pass --address http(s)://HOST:PORT, export "
        "RAY_DASHBOARD_ADDRESS (eval \"$(python -m pipeline cluster env)\" does), or start one "
        "with: python -m pipeline cluster up")


@contextlib.contextmanager
def _without_env(*names: str):
    saved = {n: os.environ.pop(n) for n in names if n in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def client(address: str, insecure: bool = False):
    """A Jobs API client for exactly ``address`` (checked first).

    Ray's client would silently replace the address by ``RAY_API_SERVER_ADDRESS`` or
    ``RAY_ADDRESS``, and sends the token as it connects; both are hidden from it here,
    and the address it ends up with is compared with the one that was checked.
    """
    from ray.job_submission import JobSubmissionClient

    address = check_address(address, insecure)
    with _without_env("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS"):
        c = JobSubmissionClient(address)
    if c.get_address().rstrip("/") != address:  # pragma: no cover - a Ray change
        raise SubmitError(f"--address: Ray chose {c.get_address()} instead of {address}")
    return c


def _matches(rel: str, patterns) -> bool:
    parts = rel.split("/")
    return any(fnmatch.fnmatch(part, pat) for part in parts for pat in patterns)


def _rayignore(project: Path) -> list[str]:
    try:
        lines = (project / ".rayignore").read_text().splitlines()
    except OSError:
        return []
    return [ln.strip().rstrip("/") for ln in lines if ln.strip() and not ln.startswith("#")]


def _walk(project: Path, folder: Path, ignore: list[str]) -> list[str]:
    """Files under ``folder`` (relative to ``project``), without secrets, noise, links."""
    found = []
    for root, dirs, files in os.walk(folder):
        for name in list(dirs):
            rel = (Path(root) / name).relative_to(project).as_posix()
            if (Path(root) / name).is_symlink() or _matches(rel, SECRETS + NOISE) or \
                    any(fnmatch.fnmatch(rel, p) for p in ignore):
                dirs.remove(name)
        for name in files:
            path = Path(root) / name
            rel = path.relative_to(project).as_posix()
            if path.is_symlink() or _matches(rel, SECRETS + NOISE) or \
                    any(fnmatch.fnmatch(rel, p) or fnmatch.fnmatch(name, p) for p in ignore):
                continue
            found.append(rel)
    return found


def _strings(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def _inside(project: Path, path: Path) -> Path | None:
    try:
        resolved = path.resolve()
    except OSError:
        return None
    return resolved if resolved.is_relative_to(project) else None


def files_to_ship(project: str | Path, spec_path: str | Path,
                  include: list[str] | tuple[str, ...] = ()) -> list[str]:
    """What ``submit`` ships, relative to ``project``: only what the job needs.

    The packages (:data:`PACKAGES`) the project holds, the spec, the files and the
    project modules (``module:function``) the spec names, and what ``include`` names
    (files, or folders). Well-known secret files (:data:`SECRETS`) inside folders are
    never shipped; a file named explicitly (spec or ``include``) is. Patterns in the
    project's ``.rayignore`` leave files out of the folders shipped.
    """
    import yaml

    project = Path(project).resolve()
    spec = Path(spec_path).resolve()
    ignore = _rayignore(project)
    chosen: dict[str, None] = {}

    def add_folder(folder: Path) -> None:
        for rel in _walk(project, folder, ignore):
            chosen[rel] = None

    def add_file(path: Path) -> None:
        chosen[path.relative_to(project).as_posix()] = None

    for pkg in PACKAGES:
        if (project / pkg / "__init__.py").is_file() and not (project / pkg).is_symlink():
            add_folder(project / pkg)
    add_file(spec)
    raw = yaml.safe_load(spec.read_text()) or {}
    for text in _strings(raw):
        text = text.strip()
        ref = _MODULE_REF.match(text)
        if ref:  # a project module: a.b.c -> a/__init__.py, a/b/__init__.py, a/b/c.py or a/b/c/
            parts = ref.group(1).split(".")
            for i in range(1, len(parts)):
                init = project.joinpath(*parts[:i], "__init__.py")
                if init.is_file():
                    add_file(init)
            module = project.joinpath(*parts)
            if module.with_suffix(".py").is_file():
                add_file(module.with_suffix(".py"))
            elif (module / "__init__.py").is_file():
                add_folder(module)
            continue
        if "://" in text or not text or len(text) > 4096 or "\n" in text:
            continue
        path = _inside(project, spec.parent / text) or _inside(project, project / text)
        if path is not None and path.is_file():
            add_file(path)
    for item in include:
        path = _inside(project, project / item)
        if path is None or not path.exists():
            raise SubmitError(f"--include: {item} is not inside the project folder {project}")
        if path.is_dir():
            add_folder(path)
        else:
            add_file(path)
    return list(chosen)


def _stage(project: Path, files: list[str]) -> Path:
    staging = Path(tempfile.mkdtemp(prefix="pipeline-submit-"))
    for rel in files:
        target = staging / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(project / rel, target)
    return staging


def _size(nbytes: float) -> str:
    for unit in ("B", "KiB", "MiB"):
        if nbytes < 1024 or unit == "MiB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return ""  # pragma: no cover


def submit(spec_path: str, address: str, *, project_dir: str | Path = ".", insecure: bool = False,
           resume: bool = True, extra_env: dict[str, str] | None = None,
           include: list[str] | tuple[str, ...] = (), max_upload_mb: float = MAX_UPLOAD_MB,
           stream=None) -> str:
    """Ship what the job needs (:func:`files_to_ship`) and run ``python -m pipeline run SPEC``.

    Prints what is shipped (file count and size) to ``stream`` (stderr); refuses,
    before contacting the cluster, more than ``max_upload_mb``.
    """
    stream = stream or sys.stderr
    address = check_address(address, insecure)
    project = Path(project_dir).resolve()
    spec = Path(spec_path).resolve()
    if not spec.is_relative_to(project):
        raise SubmitError(f"spec: {spec_path} must be inside the project folder {project}")
    rel = spec.relative_to(project).as_posix()
    files = files_to_ship(project, spec, include)
    total = sum((project / f).stat().st_size for f in files)
    if total > max_upload_mb * 1024 * 1024:
        raise SubmitError(
            f"--max-upload-mb: {len(files)} files, {_size(total)}, to ship is over the cap of "
            f"{max_upload_mb:g} MiB; leave files out (.rayignore) or raise the cap")
    tops = sorted({f.split("/")[0] + ("/" if "/" in f else "") for f in files})
    print(f"shipping {len(files)} files ({_size(total)}) to {address}: {', '.join(tops)}",
          file=stream)
    entrypoint = f"python -m pipeline run {rel}" + (" --resume" if resume else "")
    env = {"PYTHONPATH": "."}
    from cluster.local import running_at

    if running_at(address) is not None:
        # A cluster `up` started on this machine: a relative storage folder is the
        # submitter's (every node sees it), not one inside the job's unpacked copy.
        env["PIPELINE_STORAGE_BASE"] = str(project)
    env.update(extra_env or {})
    staging = _stage(project, files)
    try:
        return client(address, insecure).submit_job(
            entrypoint=entrypoint, runtime_env={"working_dir": str(staging), "env_vars": env})
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def follow(job_id: str, address: str, insecure: bool = False, stream=None,
           settle_s: float = 30.0) -> int:
    """Stream a job's logs until it ends; return 0 if it succeeded, else 1.

    The log stream can close before the job's last output arrives (seen when a job
    fails at once): once the job has ended, whatever of its stored logs the stream
    did not show is printed, so a failed job always shows why.
    """
    c = client(address, insecure)
    stream = stream or sys.stdout
    seen: list[str] = []

    async def _tail() -> None:
        async for chunk in c.tail_job_logs(job_id):
            seen.append(chunk)
            stream.write(chunk)
            stream.flush()

    asyncio.run(_tail())
    deadline = time.monotonic() + settle_s
    status = str(c.get_job_status(job_id)).split(".")[-1]
    while status not in TERMINAL and time.monotonic() < deadline:
        time.sleep(0.5)
        status = str(c.get_job_status(job_id)).split(".")[-1]
    if status != "SUCCEEDED":
        stream.write(unseen_logs("".join(seen), c.get_job_logs(job_id) or ""))
    print(f"job {job_id}: {status}", file=stream)
    return TERMINAL.get(status, 1)


def unseen_logs(streamed: str, stored: str, tail_lines: int = 40) -> str:
    r"""What of ``stored`` (the job's whole log) the stream did not show, for printing.

    Example:
        >>> unseen_logs("a\nb\n", "a\nb\nerror: boom\n")
        'error: boom\n'
        >>> unseen_logs("a\n", "a\n")
        ''
        >>> print(unseen_logs("x\n", "1\n2\n3\n", tail_lines=2), end="")
        --- last 2 lines of the job's logs ---
        2
        3
    """
    if stored.startswith(streamed):
        rest = stored[len(streamed):]
        return rest if not rest or rest.endswith("\n") else rest + "\n"
    lines = stored.splitlines()[-tail_lines:]
    return f"--- last {len(lines)} lines of the job's logs ---\n" + "".join(f"{ln}\n" for ln in lines)
