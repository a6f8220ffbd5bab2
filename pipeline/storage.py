"""Where results live: a local folder or a URI that pyarrow.fs understands."""

from __future__ import annotations

import logging
import os
import time
import uuid
from dataclasses import dataclass
from typing import Callable, TypeVar

import pyarrow.fs as pafs

from pipeline.s3 import endpoint_for, s3_filesystem
from pipeline.safe_io import create_exclusive, write_file

SPEC_FILE = "pipeline_spec.yaml"

logger = logging.getLogger(__name__)
T = TypeVar("T")


class StorageUnavailable(RuntimeError):
    """Storage stayed unreachable for longer than ``storage.outage_tolerance_s``."""


def patiently(action: Callable[[], T], what: str, tolerance_s: float,
              sleep: Callable[[float], None] = time.sleep) -> T:
    """``action()``, retried with backoff while storage raises ``OSError``, for up to ``tolerance_s``.

    A storage outage (an S3 endpoint restarting, a network blip) then stalls the caller
    instead of failing it; past the tolerance the error names the setting::

        >>> calls = []
        >>> def flaky():
        ...     calls.append(1)
        ...     if len(calls) < 3:
        ...         raise OSError("connection refused")
        ...     return "saved"
        >>> patiently(flaky, "saving", tolerance_s=60, sleep=lambda s: None)
        'saved'
    """
    deadline = time.monotonic() + tolerance_s
    delay = 0.5
    while True:
        try:
            return action()
        except OSError as exc:
            left = deadline - time.monotonic()
            if left <= 0:
                raise StorageUnavailable(
                    f"storage.path: {what} failed and storage stayed unreachable for "
                    f"{tolerance_s:g} s (storage.outage_tolerance_s): {exc}") from None
            wait = min(delay, left)
            logger.warning("%s failed, storage unreachable (%s); retrying in %.1f s "
                           "(%.0f s of storage.outage_tolerance_s left)", what,
                           str(exc).splitlines()[0][:200], wait, left)
            sleep(wait)
            delay = min(delay * 2, 10.0)


@dataclass(frozen=True)
class Location:
    """An experiment folder: ``path`` inside ``fs`` (None = local disk)."""

    root: str  # storage path as Tune wants it (absolute local path or bucket/prefix)
    name: str
    fs: pafs.FileSystem | None

    @property
    def path(self) -> str:
        return f"{self.root.rstrip('/')}/{self.name}"

    @property
    def _fs(self) -> pafs.FileSystem:
        return self.fs or pafs.LocalFileSystem()

    def exists(self) -> bool:
        return self._fs.get_file_info(self.path).type != pafs.FileType.NotFound

    def write_text(self, filename: str, text: str) -> None:
        self._fs.create_dir(self.path, recursive=True)
        if self.fs is None:  # local: replace the name, never write through a link planted there
            write_file(f"{self.path}/{filename}", text, overwrite=True)
            return
        with self._fs.open_output_stream(f"{self.path}/{filename}") as f:
            f.write(text.encode())

    def check_writable(self) -> None:
        """Write and delete a probe file, so bad storage fails now, not an hour in.

        The probe has a fresh random name and, on local disk, is created exclusively
        without following links: nothing planted in a shared storage root is written.
        """
        probe = f"{self.root.rstrip('/')}/.write-probe-{self.name}-{uuid.uuid4().hex}"
        self._fs.create_dir(self.root, recursive=True)
        if self.fs is None:
            create_exclusive(probe, b"ok")
            os.unlink(probe)
            return
        with self._fs.open_output_stream(probe) as f:
            f.write(b"ok")
        self._fs.delete_file(probe)

    def read_text(self, filename: str) -> str:
        with self._fs.open_input_stream(f"{self.path}/{filename}") as f:
            return f.read().decode()


def filesystem(uri: str, endpoint_override: str | None = None) -> tuple[pafs.FileSystem | None, str]:
    """(filesystem or None for local disk, path inside it) for a folder or URI."""
    if "://" not in uri or uri.startswith("file://"):
        # PIPELINE_STORAGE_BASE: where relative folders live (`submit` to a cluster on this
        # machine sets it to the submitter's folder, not the job's unpacked copy)
        base = os.environ.get("PIPELINE_STORAGE_BASE") or os.getcwd()
        return None, os.path.abspath(os.path.join(base, uri.removeprefix("file://")))
    endpoint = endpoint_for(uri, endpoint_override)
    if endpoint:
        return s3_filesystem(endpoint, allow_bucket_creation=True), uri.removeprefix("s3://").rstrip("/")
    fs, path = pafs.FileSystem.from_uri(uri)
    return fs, path.rstrip("/")


def locate(storage_path: str, name: str, endpoint_override: str | None = None) -> Location:
    fs, root = filesystem(storage_path, endpoint_override)
    return Location(root, name, fs)


def locate_experiment(path: str, endpoint_override: str | None = None) -> Location:
    """The Location of an existing experiment folder given as one path or URI."""
    fs, full = filesystem(path, endpoint_override)
    root, _, name = full.rstrip("/").rpartition("/")
    return Location(root or "/", name, fs)
