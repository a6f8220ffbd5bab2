"""The one place where the pipeline starts or joins Ray."""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def ray_session(address: str | None = None, *, dashboard: bool = False) -> Iterator[None]:
    """Start Ray locally (lean: no dashboard unless asked) or join ``address``.

    Reuses an already initialized Ray (tests, notebooks) and leaves it running;
    otherwise shuts down what it started.
    """
    import ray

    if ray.is_initialized():
        yield
        return
    # Snapshots forced by checkpoint retention are the price of durability, not a problem.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    address = address or os.environ.get("RAY_ADDRESS")
    kwargs = {"log_to_driver": True, "configure_logging": True, "logging_level": "WARNING"}
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(include_dashboard=dashboard, **kwargs)
    try:
        yield
    finally:
        ray.shutdown()
