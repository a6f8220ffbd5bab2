"""Submitting a spec to a Ray cluster as a job (Ray's Jobs API), and managing jobs.

Token authentication: set ``RAY_AUTH_MODE=token`` and ``RAY_AUTH_TOKEN`` or
``RAY_AUTH_TOKEN_PATH`` (``python -m pipeline cluster up`` prints them); Ray's
``JobSubmissionClient`` then sends the token with every request.
"""

from __future__ import annotations

import asyncio
import ipaddress
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

# Never shipped to the cluster with the project.
EXCLUDES = [".venv", ".git", "results", ".ray-local-cluster", "*.egg-info", "__pycache__",
            ".pytest_cache", "benchmarks/out"]
TERMINAL = {"SUCCEEDED": 0, "FAILED": 1, "STOPPED": 1}


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
        raise SubmitError(f"--address: expected http(s)://HOST:8265, got {address}")
    if url.scheme == "http" and not _is_loopback(url.hostname) and not insecure:
        raise SubmitError(
            f"--address: refusing plain http to {url.hostname}: the token and your code would "
            "cross the network unencrypted; use https (e.g. through an ingress or a port-forward "
            "to localhost) or pass --insecure"
        )
    return address


def client(address: str, insecure: bool = False):
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(check_address(address, insecure))


def submit(spec_path: str, address: str, *, project_dir: str | Path = ".", insecure: bool = False,
           resume: bool = True, extra_env: dict[str, str] | None = None) -> str:
    """Ship the project folder and run ``python -m pipeline run SPEC`` as a Ray job."""
    project = Path(project_dir).resolve()
    spec = Path(spec_path).resolve()
    if not spec.is_relative_to(project):
        raise SubmitError(f"spec: {spec_path} must be inside the project folder {project}")
    rel = spec.relative_to(project).as_posix()
    entrypoint = f"python -m pipeline run {rel}" + (" --resume" if resume else "")
    env = {"PYTHONPATH": "."}
    from cluster.local import running_at

    if running_at(check_address(address, insecure)) is not None:
        # A cluster `up` started on this machine: a relative storage folder is the
        # submitter's (every node sees it), not one inside the job's unpacked copy.
        env["PIPELINE_STORAGE_BASE"] = str(project)
    env.update(extra_env or {})
    return client(address, insecure).submit_job(
        entrypoint=entrypoint,
        runtime_env={"working_dir": str(project), "excludes": EXCLUDES, "env_vars": env},
    )


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
