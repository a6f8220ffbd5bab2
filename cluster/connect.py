"""The one place where the pipeline starts or joins Ray."""

from __future__ import annotations

import logging
import os
import socket
import threading
from contextlib import contextmanager
from typing import Iterator

REACH_TIMEOUT_S = 10.0
# what the workers of a Ray this module starts import before they take work
PRELOAD = {"preload_python_modules": ["keras"]}


class ClusterConnectError(ConnectionError):
    """The cluster at ``address`` cannot be reached or refused us."""


def check_reachable(address: str, timeout_s: float = REACH_TIMEOUT_S) -> None:
    """Fail fast (bounded) if a ``host:port`` GCS address does not accept connections.

    ``ray.init(address=...)`` retries an unreachable address for minutes; this
    probe turns that into a clear error after ``timeout_s``.
    """
    if address in ("auto", "local") or address.startswith("ray://"):
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ClusterConnectError(f"--address: expected HOST:PORT of the Ray head, got '{address}'")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except OSError as exc:
        raise ClusterConnectError(
            f"cannot reach the Ray cluster at {address} within {timeout_s:.0f}s ({exc}); "
            "is the head running and the address right?") from None


def alive_nodes() -> int:
    import ray

    return sum(1 for n in ray.nodes() if n.get("Alive"))


def nodes_not_seeing(folder: str, timeout_s: float = 60.0) -> list[str]:
    """The alive nodes (as ``ip (node id)``) on which the local ``folder`` is not visible.

    Writes a marker file into ``folder`` (or, if it does not exist yet, its nearest
    existing parent), asks one zero-CPU task pinned to each alive node whether it
    sees that file, and removes the marker again. On a cluster whose nodes all run
    on this machine (``cluster up``) or mount the same share, every node sees it.
    """
    import uuid

    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    parent = os.path.abspath(folder)
    while not os.path.isdir(parent):
        parent = os.path.dirname(parent)
    marker = os.path.join(parent, f".pipeline-visible-{uuid.uuid4().hex}")
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    sees = ray.remote(num_cpus=0, max_retries=0)(os.path.exists)
    with open(marker, "w"):
        pass
    try:
        refs = [sees.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
            n["NodeID"], soft=False)).remote(marker) for n in nodes]
        answers = ray.get(refs, timeout=timeout_s)
    finally:
        os.remove(marker)
    return [f"{n.get('NodeManagerAddress')} ({n['NodeID'][:8]})"
            for n, seen in zip(nodes, answers) if not seen]


def _init(address: str | None, dashboard: bool) -> None:
    import ray

    # Snapshots forced by checkpoint retention are the price of durability, not a problem.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    address = address or os.environ.get("RAY_ADDRESS")
    kwargs = {"log_to_driver": True, "configure_logging": True, "logging_level": "WARNING"}
    if address:
        check_reachable(address)
        try:
            ray.init(address=address, **kwargs)
        except ConnectionError as exc:
            hint = ("" if os.environ.get("RAY_AUTH_MODE") == "token" else
                    " (a cluster with token authentication needs RAY_AUTH_MODE=token and "
                    "RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH)")
            raise ClusterConnectError(f"could not join the Ray cluster at {address}: {exc}{hint}") from None
    else:
        # Ray prestarts as many idle workers as there are CPUs; trial actors take them. With
        # Keras imported as they start (seconds of TensorFlow import), the first trials
        # begin training at once instead of importing it after the search has started.
        ray.init(include_dashboard=dashboard, _system_config=PRELOAD, **kwargs)


class _NotMainThread(logging.Filter):
    """Drops Ray's note that a Ray started off the main thread sets no SIGTERM handler
    (the early start's processes end with the process anyway)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "SIGTERM handler is not set" not in record.getMessage()


def _no_start() -> None:
    return None


class EarlyStart:
    """Ray started (or joined) in the background, ahead of the :func:`ray_session` that uses it.

    The front doors begin this when the tuner or study is created, so that Ray's processes
    start while the user's script still prepares its data, instead of after ``search()`` or
    ``optimize()`` is called. Nothing happens when Ray is already initialized. The starting
    thread stays alive until :meth:`stop` (Ray's child processes are tied to the thread that
    started them). Errors are raised where the session is used, not in the background.
    """

    def __init__(self, address: str | None = None):
        import ray

        self.address = address
        self.error: BaseException | None = None
        self._ready, self._stop = threading.Event(), threading.Event()
        self._thread: threading.Thread | None = None
        if ray.is_initialized():
            self._ready.set()
            return
        self._thread = threading.Thread(target=self._run, name="ray-early-start", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        quiet = _NotMainThread()
        logger = logging.getLogger("ray._private.worker")
        logger.addFilter(quiet)
        try:
            _init(self.address, dashboard=False)
        except BaseException as exc:  # noqa: BLE001 - raised again in the user's thread
            self.error = exc
        finally:
            logger.removeFilter(quiet)
            self._ready.set()
        self._stop.wait()

    def __reduce__(self):  # a tuner or study captured by a trial travels without its start
        return (_no_start, ())

    @property
    def owned(self) -> bool:
        """Whether this start began Ray (and so its session ends it)."""
        return self._thread is not None

    def wait(self) -> None:
        self._ready.wait()
        if self.error is not None:
            error, self.error = self.error, None
            self._thread = None
            raise error

    def stop(self) -> None:
        import ray

        if self._thread is not None:
            ray.shutdown()
            self._stop.set()
            self._thread.join(timeout=30)
            self._thread = None


@contextmanager
def ray_session(address: str | None = None, *, dashboard: bool = False,
                early: EarlyStart | None = None) -> Iterator[None]:
    """Start Ray locally (lean: no dashboard unless asked) or join ``address``.

    Reuses an already initialized Ray (tests, notebooks) and leaves it running;
    otherwise shuts down what it started. ``early``: an :class:`EarlyStart` begun
    before, waited for here and ended with this session when it started Ray.
    """
    import ray

    if early is not None and early.owned:
        early.wait()
        try:
            yield
        finally:
            early.stop()
        return
    if ray.is_initialized():
        yield
        return
    _init(address, dashboard)
    try:
        yield
    finally:
        ray.shutdown()
