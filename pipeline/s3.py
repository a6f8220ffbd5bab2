"""The one place an S3 filesystem is built, for data files and for results storage alike.

An S3-compatible endpoint (MinIO, moto, Ceph...) is given as a URL; without a
scheme it is taken as ``https``. Connections time out and failed requests are
retried, so an endpoint that went away fails a call in bounded time instead of
hanging it (``storage.patiently`` then decides whether to wait for it).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where used: the spec's schema checks need no pyarrow
    import pyarrow.fs as pafs

CONNECT_TIMEOUT_S = 5
REQUEST_TIMEOUT_S = 20
MAX_ATTEMPTS = 4


def endpoint_for(uri: str, endpoint_override: str | None = None) -> str | None:
    """The S3-compatible endpoint to use for ``uri``: the override, else ``AWS_ENDPOINT_URL``."""
    if not uri.startswith("s3://"):
        return None
    return endpoint_override or os.environ.get("AWS_ENDPOINT_URL") or None


def s3_filesystem(endpoint: str, *, allow_bucket_creation: bool = False) -> pafs.S3FileSystem:
    """A pyarrow S3 filesystem on ``endpoint`` (``http://host:port``), with timeouts and retries."""
    import pyarrow.fs as pafs

    scheme, _, host = endpoint.rpartition("://")
    return pafs.S3FileSystem(
        endpoint_override=host, scheme=scheme or "https", allow_bucket_creation=allow_bucket_creation,
        connect_timeout=CONNECT_TIMEOUT_S, request_timeout=REQUEST_TIMEOUT_S,
        retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=MAX_ATTEMPTS))


def open_filesystem(path: str, endpoint_override: str | None = None) -> tuple[pafs.FileSystem, str]:
    """(pyarrow filesystem, path inside it) for a data file or folder given as a path or URI."""
    import pyarrow.fs as pafs

    endpoint = endpoint_for(path, endpoint_override)
    if endpoint:
        return s3_filesystem(endpoint), path.removeprefix("s3://")
    return pafs.FileSystem.from_uri(path) if "://" in path else (pafs.LocalFileSystem(), path)
