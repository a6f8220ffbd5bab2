"""The one place where the pipeline starts or joins Ray."""

from __future__ import annotations

import atexit
import importlib
import logging
import os
import re
import socket
import sys
import threading
import time
from contextlib import contextmanager
from typing import Any, Iterator

from pipeline.worker_park import WorkerPark

REACH_TIMEOUT_S = 10.0


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


def _host(address: str) -> str:
    rest = address.split("://", 1)[-1].rsplit("@", 1)[-1]
    host = rest.rpartition(":")[0] if ":" in rest else rest
    return host.strip("[]")


def _tls_on() -> bool:
    return os.environ.get("RAY_USE_TLS", "").strip().lower() in ("1", "true", "yes")


def _on_this_machine(host: str) -> bool:
    """True if ``host`` is loopback or an address of this machine (traffic stays local)."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return False
    for family, _, _, _, sockaddr in infos:
        ip = ipaddress.ip_address(sockaddr[0])
        if ip.is_loopback:
            continue
        try:  # binding works only to an address one of this machine's interfaces holds
            with socket.socket(family, socket.SOCK_STREAM) as s:
                s.bind((sockaddr[0], 0))
        except OSError:
            return False
    return bool(infos)


def check_transport(address: str | None, insecure: bool = False) -> None:
    """Refuse, before connecting, to join a Ray cluster on another machine without TLS.

    Joining sends the cluster token (``authorization: Bearer ...``) and then code and
    data over the connection; without Ray's TLS (``RAY_USE_TLS=1``) they cross the
    network in clear. ``insecure`` accepts that. ``address`` None means ``RAY_ADDRESS``.
    """
    address = address or os.environ.get("RAY_ADDRESS")
    if not address or address in ("auto", "local") or insecure or _tls_on():
        return
    host = _host(address)
    if not _on_this_machine(host):
        raise ClusterConnectError(
            f"--address: refusing to join the Ray cluster at {host} without TLS: the cluster "
            "token and your code would cross the network in clear; turn on Ray's TLS "
            "(RAY_USE_TLS=1 with RAY_TLS_SERVER_CERT, RAY_TLS_SERVER_KEY, RAY_TLS_CA_CERT), "
            "tunnel to localhost (ssh -L, kubectl port-forward), or pass --insecure")


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
    os.close(os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
    try:
        refs = [sees.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
            n["NodeID"], soft=False)).remote(marker) for n in nodes]
        answers = ray.get(refs, timeout=timeout_s)
    finally:
        os.remove(marker)
    return [f"{n.get('NodeManagerAddress')} ({n['NodeID'][:8]})"
            for n, seen in zip(nodes, answers) if not seen]


# A Ray started without its dashboard still records the dashboard's usual address
# (127.0.0.1:8265) as the place its node agents send cluster events to, token header
# included: whoever else listens on that port on a shared machine would get the token.
# Port 0 is one nothing can listen on. Tests start their Ray with the same arguments.
NO_DASHBOARD: dict[str, Any] = {"dashboard_port": 0}
# A Ray started here would also start one idle worker per CPU for the driver's first tasks,
# each importing Ray (~0.7 s of CPU): the pipeline runs no such tasks, and Tune's trial
# actors cannot take those workers (their environment differs, see cluster.prewarm), so on
# a small machine they only compete with the script's imports and the trial workers' start.
# (The Optuna door asks for one such worker, for its study actor: cluster.prewarm's helpers.)
NO_IDLE_WORKERS: dict[str, Any] = {"_system_config": {"prestart_worker_first_driver": False}}


# Ray lowers its workers' priority (each raises its niceness by the raylet's worker_niceness,
# 15) so that a driver stays responsive; here the workers run the trials, the search's real
# work. At +15 a trial gets ~3% of a CPU beside any busy process at the usual priority, the
# driver's own work included: a 4-trial test search took 305 s instead of 28-31 s beside
# two busy processes on 2 CPUs, the KerasTuner door's benchmark scenario 310 s instead of
# 64 s (idle, both ~33 s). KerasTuner and Optuna train at the script's own priority; so do
# the trials of a Ray the pipeline starts or joins (this job's workers do not raise it).
TRIAL_PRIORITY: dict[str, str] = {"RAY_worker_niceness": "0"}


def end_monitor() -> None:
    """End the autoscaler monitor of the Ray this process started, at once.

    ``ray.shutdown()`` (and Ray's exit hook, at the end of a script) ends a local Ray's
    processes one after another, each with a SIGTERM and up to 1 s to exit; the monitor
    (Ray 2.60) never exits within that second, so every script that started Ray waited a
    second more at its end than it needed (``kill monitor: 1.01 s``, the raylet 0.06 s).
    It has nothing to save on a Ray about to end: it gets a SIGKILL, and Ray's shutdown
    then skips it. Nothing happens for a Ray this process joined (it owns no processes),
    nor when Ray's internals differ (an optimisation: Ray's shutdown ends the monitor anyway).
    """
    try:
        from ray._private import ray_constants, worker

        node = getattr(worker, "_global_node", None)
        for info in (node.all_processes.get(ray_constants.PROCESS_TYPE_MONITOR, [])
                     if node is not None else []):
            if info.process.poll() is None:
                info.process.kill()
                info.process.wait(timeout=5)
    except Exception:  # noqa: BLE001 - see above
        logging.getLogger(__name__).debug("ending Ray's monitor failed", exc_info=True)


def _shutdown() -> None:
    import ray

    end_monitor()
    ray.shutdown()


# Ray's exit hook waits this long before it ends a Ray that a script started, so that the
# workers' last lines reach the console.
LOG_GRACE_S = 0.5


class _OwnRay:
    """The Ray node this process started (:func:`_init`), for :func:`_exit_ray`."""

    node: Any = None


def _exit_ray() -> None:
    """Ends the Ray this process started as the script exits, in place of Ray's own hook.

    Ray's hook sleeps :data:`LOG_GRACE_S` before it ends a script's Ray, every time, so that
    lines its workers have just printed reach the console; but once a search has returned,
    a front door's workers print nothing more, and the script's exit waited that half second
    for nothing (the exit of a small search script took 2.6-2.8 s here, 2.1-2.4 s without
    the wait; KerasTuner's 1.0 s, most of it TensorFlow's own teardown in both).
    This hook gives every line the same grace, counted from when it was written: it waits
    until :data:`LOG_GRACE_S` has passed since the last write to any worker's output (what
    Ray forwards to the console), which after a search is over at once, and then ends Ray
    (with :func:`end_monitor`). A Ray this process did not start gets Ray's own hook.
    """
    import ray
    from ray._private import worker

    if not ray.is_initialized():
        return
    node = getattr(worker, "_global_node", None)
    if node is None or node is not _OwnRay.node:
        worker.shutdown(_exiting_interpreter=True)
        return
    try:
        logs = node.get_logs_dir_path()
        last = max((e.stat().st_mtime for e in os.scandir(logs)
                    if e.name.startswith("worker-") and e.name.endswith((".out", ".err"))),
                   default=0.0)
        left = min(LOG_GRACE_S, LOG_GRACE_S - (time.time() - last))
    except OSError:
        left = LOG_GRACE_S
    if left > 0:
        time.sleep(left)
    _shutdown()


def _init(address: str | None, dashboard: bool, warm: str | None = None) -> None:
    import ray

    # Snapshots forced by checkpoint retention are the price of durability, not a problem.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    address = address or os.environ.get("RAY_ADDRESS")
    from cluster import prewarm

    # Workers keep TensorFlow's start-up notes to themselves (pipeline.quiet); errors still show.
    runtime_env: dict[str, Any] = {"worker_process_setup_hook": "cluster.prewarm.setup_worker",
                                   "env_vars": dict(TRIAL_PRIORITY)}
    if warm:  # trial workers import Ray Tune (and TensorFlow) as they start (cluster.prewarm)
        runtime_env["env_vars"][prewarm.WARM] = warm
    kwargs: dict[str, Any] = {"log_to_driver": True, "configure_logging": True, "logging_level": "WARNING",
                              "runtime_env": runtime_env}
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
        # A Ray started here for this process keeps its token to itself: Ray's note that
        # token authentication is on by default ("Set RAY_AUTH_MODE=disabled to opt out")
        # is not for the user of a script that never called ray.init.
        note = logging.getLogger("ray._private.authentication.authentication_token_setup")
        quiet = _TokenAuthByDefault()
        note.addFilter(quiet)
        try:
            if dashboard:
                ray.init(include_dashboard=True, **NO_IDLE_WORKERS, **kwargs)
            else:
                with _lean_head():
                    ray.init(include_dashboard=False, **NO_DASHBOARD, **NO_IDLE_WORKERS, **kwargs)
        finally:
            note.removeFilter(quiet)
        # in place of Ray's own exit hook (registered at its import; they run last-in first-out)
        from ray._private import worker

        _OwnRay.node = getattr(worker, "_global_node", None)
        atexit.unregister(worker.shutdown)
        atexit.unregister(_exit_ray)
        atexit.register(_exit_ray)


@contextmanager
def _lean_head() -> Iterator[None]:
    """A local Ray started without two head processes a script's own Ray has no use for.

    - The autoscaler monitor: it scales nothing on one machine (it only reports for
      ``ray status``, and a script's Ray keeps its token to itself).
    - The dashboard server: without the dashboard (``include_dashboard=False``) Ray still
      starts it, with only its usage-statistics module, and ``ray.init`` waits until it is up.

    Each is a Python process of ~0.4-0.8 s of CPU; ``ray.init`` took 1.6 s instead of 3.5 s
    on an idle 2-CPU machine (medians, ``benchmarks/ray_start.py``), and a front door's Ray,
    which starts while the script imports Keras, is up sooner, so its trial workers are too.
    Ray has no option for either: its ``Node`` methods that start them do nothing during the
    start. Where Ray's internals differ, Ray starts as usual.
    """
    try:
        from ray._private.node import Node
    except ImportError:
        yield
        return
    saved = {name: Node.__dict__.get(name) for name in ("start_monitor", "start_api_server")}
    if any(method is None for method in saved.values()):
        yield
        return
    Node.start_monitor = lambda self: None  # type: ignore[method-assign]
    Node.start_api_server = lambda self, **_: None  # type: ignore[method-assign]
    try:
        yield
    finally:
        for name, method in saved.items():
            setattr(Node, name, method)


class _TokenAuthByDefault(logging.Filter):
    """Drops Ray's note that a local Ray turned token authentication on by default (its
    note that authentication is off still shows)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Token authentication is enabled" not in record.getMessage()


class _NotMainThread(logging.Filter):
    """Drops Ray's note that a Ray started off the main thread sets no SIGTERM handler
    (the early start's processes end with the process anyway)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "SIGTERM handler is not set" not in record.getMessage()


# What a Tune run imports on the driver before its first trial starts, besides Ray Tune: its
# usage tagging of the run's callbacks (ray.air._internal.usage._count_callbacks) imports the
# logger integrations, and the MLflow one imports ``mlflow`` when it is installed (0.7 s on an
# idle 2-CPU machine, 2 s while trial workers import TensorFlow).
_TUNE_RUN_IMPORTS = ("ray.tune", "ray.tune.logger.aim", "ray.air.integrations.comet",
                     "ray.air.integrations.mlflow", "ray.air.integrations.wandb")


def _import_tune() -> None:
    """Import what the run needs next (:data:`_TUNE_RUN_IMPORTS`) while the user's script
    goes on, instead of after ``search()``/``optimize()`` was called."""
    for module in _TUNE_RUN_IMPORTS:
        try:
            importlib.import_module(module)
        except Exception:  # noqa: BLE001 - the run's own import reports it
            pass


def _no_start() -> None:
    return None


AT_IMPORT = "PIPELINE_RAY_AT_IMPORT"  # "0": the front doors start Ray only when a tuner/study is made


def _script_source() -> str | None:
    """The source of the script this process runs (``python script.py`` or ``-m``) when it
    leaves starting Ray to the front door: not a notebook or an interactive session, not
    pytest, not a multiprocessing child, not a script that calls ``ray.init`` itself (its own
    call would find Ray started); not switched off. None otherwise."""
    import multiprocessing

    path = getattr(sys.modules.get("__main__"), "__file__", None)
    if (os.environ.get(AT_IMPORT, "1") == "0" or path is None or "pytest" in sys.modules
            or multiprocessing.current_process().name != "MainProcess"):
        return None
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            source = f.read()
    except OSError:
        return None
    return None if "ray.init" in source else source


_KERAS_IMPORT = re.compile(r"^\s*(?:import|from)\s+(?:keras|tensorflow)\b", re.MULTILINE)


def imports_keras(source: str) -> bool:
    """Whether a script's source imports Keras or TensorFlow (its trials then train Keras
    models, so their workers may import TensorFlow ahead).

    >>> imports_keras("import optuna\\nfrom tensorflow import keras\\n")
    True
    >>> imports_keras("import optuna  # no keras here\\n")
    False
    """
    return _KERAS_IMPORT.search(source) is not None


class EarlyStart:
    """Ray started (or joined) in the background, ahead of the :func:`ray_session` that uses it.

    The front doors begin this as early as they can, so that Ray's processes start while
    the user's script imports Keras and prepares its data, instead of after ``search()`` or
    ``optimize()`` is called: when a script imports the front door (:meth:`at_import`), else
    when the tuner or study is created (:meth:`claim`). Nothing happens when Ray is already
    initialized. The starting thread stays alive until :meth:`stop` (Ray's child processes
    are tied to the thread that started them). Errors are raised where the session is used,
    not in the background.

    ``warm=(trials, cpu_per_trial)``: once Ray is up, the workers of the first trials are
    started (:mod:`cluster.prewarm`) and import Ray Tune as they start, and TensorFlow too
    with ``warm_env`` (default: True); and ``helpers`` workers for the actors the search
    starts beside its trials. Ray Tune is imported in the background (driver) too, all
    before the script calls ``search()``/``optimize()``.
    """

    # The start no tuner or study holds: begun by a front door's import, or kept running
    # after a search (:meth:`keep`), until the next tuner or study claims it. Process-wide
    # like Ray itself, which it starts.
    _unclaimed: "EarlyStart | None" = None

    def __init__(self, address: str | None = None, warm: tuple[int, float] | None = None,
                 *, warm_env: bool | None = None, helpers: int = 0):
        import ray

        self.address = address
        self.warm = warm
        self.helpers = helpers
        # what trial workers import as they start (cluster.prewarm.WARM): TensorFlow too for
        # Keras trials, else Ray Tune only
        tensorflow = warm is not None if warm_env is None else warm_env
        self._warm_env = None if warm is None else "tensorflow" if tensorflow else "tune"
        self.error: BaseException | None = None
        self._node_id: str | None = None  # of the Ray this start began (that Ray's own id)
        self._forgone = False
        self._ready, self._stop = threading.Event(), threading.Event()
        self._prestarted = threading.Lock()
        self._thread: threading.Thread | None = None
        # the trial actors a search leaves for the next one (a Ray of this start's own only)
        self.park = WorkerPark()
        if ray.is_initialized():
            self._ready.set()
            return
        self._thread = threading.Thread(target=self._run, name="ray-early-start", daemon=True)
        self._thread.start()

    @classmethod
    def at_import(cls, warm_env: bool | None, unless: re.Pattern[str] | None = None,
                  helpers: int = 0) -> None:
        """Begin Ray in the background as a script imports a front door (see :func:`_script_source`).

        The script's own imports (Keras, TensorFlow) then overlap Ray's start; the tuner or
        study made next takes this start over (:meth:`claim`). Trial workers start at once,
        one per CPU, and import Ray Tune; ``warm_env``: the front door's trials are Keras
        trials (KerasTuner's), so they import TensorFlow too; None: if the script imports
        Keras or TensorFlow (:func:`imports_keras`). ``unless``: nothing starts if the
        script's source matches it (a script that will not use Ray, e.g. an in-process study).
        ``helpers``: workers for the actors the front door starts beside its trials.
        """
        source = _script_source() if cls._unclaimed is None else None
        if source is None or (unless is not None and unless.search(source)):
            return
        import ray

        if not ray.is_initialized():
            keras = imports_keras(source) if warm_env is None else warm_env
            # as soon as Ray is up, a worker per CPU starts and imports Ray Tune, and for Keras
            # trials TensorFlow (a script may make its tuner or study just before searching:
            # too late to wait)
            cls._unclaimed = cls(None, (10**6, 1.0), warm_env=keras, helpers=helpers)

    @classmethod
    def claim(cls, address: str | None, warm: tuple[int, float] | None,
              warm_env: bool | None = None, helpers: int = 0) -> "EarlyStart":
        """The start for a tuner or study: the one its import began if it joins the same
        cluster (``address`` None or ``RAY_ADDRESS``), else a new one (ending the other)."""
        early, cls._unclaimed = cls._unclaimed, None
        if early is not None:
            early._end_watch()
        if early is not None and early.owned and early._ready.is_set() and early.error is None:
            import ray

            if not ray.is_initialized():  # the script shut Ray down since
                early.stop()
                early = None
            elif early._replaced():  # ... and started another: nothing of this start is left
                early._forget()
                early = None
        if early is None or not early.owned:
            return cls(address, warm, warm_env=warm_env, helpers=helpers)
        if address is not None and address != os.environ.get("RAY_ADDRESS"):
            early._ready.wait()  # a start under way is ended once it is up
            early.error = None
            early.stop()
            return cls(address, warm, warm_env=warm_env, helpers=helpers)
        early.warm, early.helpers = warm, helpers
        if early._ready.is_set() and early.error is None:
            early._prestart()  # Ray came up before the tuner or study was made
        return early

    @classmethod
    def kept(cls) -> "EarlyStart | None":
        """The start a front door kept after its search (:meth:`keep`), taken over by a session
        that came without one (a second ``optimize`` of a study, a second ``search`` of a
        tuner, a spec run after them): it then has the parked trial workers and keeps Ray for
        the next. None while no Ray of a start is up and kept."""
        import ray

        early = cls._unclaimed
        if early is None or not (early.owned and early._ready.is_set() and early.error is None
                                 and ray.is_initialized()):
            return None
        cls._unclaimed = None
        early._end_watch()
        if early._replaced():  # its Ray was shut down and another began
            early._forget()
            return None
        return early

    def _replaced(self) -> bool:
        """The Ray up now is not the one this start began (the script shut that one down and
        called ``ray.init``): ending it would end the script's own."""
        import ray

        return ray.get_runtime_context().get_node_id() != self._node_id

    def _forget(self) -> None:
        """Drop a start whose Ray is gone without touching the Ray up now."""
        self._end_watch()
        self._stop.set()  # its thread ends; only a forgone start shuts Ray down there
        self._thread = None
        self.park.forget()  # handles of the old Ray: nothing of it to end in this one

    @classmethod
    def forgo(cls) -> None:
        """No tuner or study of this process will use the start its import began (one that
        runs its trials in the script's process): it ends, once up if still starting, and
        starts no trial workers."""
        early, cls._unclaimed = cls._unclaimed, None
        if early is None or not early.owned:
            return
        early._end_watch()
        early.warm = None
        if early._ready.is_set():
            early.stop()
        else:
            early._forgone = True  # the starting thread ends Ray once it is up
            early._stop.set()

    def _prestart(self) -> None:
        warm = self.warm
        if warm is None or not self._prestarted.acquire(blocking=False):
            return  # nothing asked, or asked already
        from cluster.prewarm import prestart

        trials, cpu_per_trial = warm
        if len(self.park):  # the last search's actors, TensorFlow imported, wait for these trials
            trials = 0
        prestart(trials, cpu_per_trial, helpers=self.helpers)

    def _run(self) -> None:
        import ray

        quiet = _NotMainThread()
        logger = logging.getLogger("ray._private.worker")
        logger.addFilter(quiet)
        try:
            _init(self.address, dashboard=False, warm=self._warm_env)
            self._node_id = ray.get_runtime_context().get_node_id()
            self._prestart()
        except BaseException as exc:  # noqa: BLE001 - raised again in the user's thread
            self.error = exc
        finally:
            logger.removeFilter(quiet)
            self._ready.set()
        if self.error is None:  # nothing started otherwise: no processes to keep alive
            if not self._forgone:
                _import_tune()
                self._stop.wait()
            if self._forgone:  # not wanted after all (:meth:`forgo`)
                _shutdown()

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

    def keep(self) -> None:
        """The session that used this start is over: Ray stays up, as after ``ray.init``,
        for the next tuner or study of this process, which takes it over (:meth:`claim`) and
        has its trial workers started ahead again; Ray's exit hook ends it with the process.
        Without a start of its own (Ray was there before) nothing changes."""
        import ray

        if self._thread is None:
            return
        if not ray.is_initialized() or EarlyStart._unclaimed is not None:
            self.stop()
            return
        self._prestarted = threading.Lock()
        EarlyStart._unclaimed = self
        with EarlyStart._watch_lock:
            if not EarlyStart._exit_hooked:  # after Ray's own hook, so it runs before Ray ends
                atexit.register(EarlyStart._at_exit)
                EarlyStart._exit_hooked = True
            self._watch = threading.Event()
        threading.Thread(target=self._prestart_when_quiet, args=(self._watch,),
                         name="ray-prestart-when-quiet", daemon=True).start()

    # The script is quiet when it used under this share of a CPU for QUIET_POLLS polls in a row.
    QUIET_SHARE, QUIET_POLL_S, QUIET_POLLS = 0.15, 0.5, 3
    # Guards the watch's prestart against a search, a claim, a stop or the exit beginning.
    _watch_lock = threading.Lock()
    _sessions = 0  # ray_session()s under way in this process (a search, an optimize)
    _exiting = _exit_hooked = False
    _watch: threading.Event | None = None

    @classmethod
    def _at_exit(cls) -> None:
        with cls._watch_lock:
            cls._exiting = True

    def _end_watch(self) -> None:
        """No prestart by the watch from now on (one under way has finished)."""
        with EarlyStart._watch_lock:
            if self._watch is not None:
                self._watch.set()

    def _prestart_when_quiet(self, ended: threading.Event) -> None:
        """After a search, the next one's trial workers are started (with TensorFlow imported)
        once the script goes quiet: a notebook waiting for its next cell, a script waiting
        for input. Their start then no longer delays the next ``search()``/``optimize()``
        (~9 s on 2 CPUs). A script still working (evaluating a model, ending) is not made to
        share its CPUs with them; a search begun first starts its own workers (:meth:`claim`)."""
        import ray

        last, quiet = time.process_time(), 0
        while not ended.wait(self.QUIET_POLL_S):
            if EarlyStart._unclaimed is not self or not ray.is_initialized():
                return  # claimed by the next tuner or study (which asks for its workers), or gone
            now = time.process_time()
            # parked actors (until their park releases them) are the next search's workers
            busy = now - last >= self.QUIET_SHARE * self.QUIET_POLL_S or EarlyStart._sessions or len(self.park)
            quiet, last = 0 if busy else quiet + 1, now
            if quiet >= self.QUIET_POLLS:
                with EarlyStart._watch_lock:
                    if not (ended.is_set() or EarlyStart._exiting or EarlyStart._sessions
                            or EarlyStart._unclaimed is not self):
                        self._prestart()
                return

    def stop(self) -> None:
        self._end_watch()
        self.park.release()
        if self._thread is not None:
            _shutdown()
            self._stop.set()
            self._thread.join(timeout=30)
            self._thread = None


@contextmanager
def ray_session(address: str | None = None, *, dashboard: bool = False,
                early: EarlyStart | None = None) -> Iterator[None]:
    """Start Ray locally (lean: no dashboard unless asked) or join ``address``.

    Reuses an already initialized Ray (tests, notebooks) and leaves it running;
    otherwise shuts down what it started. ``early``: an :class:`EarlyStart` begun
    before (a front door's), waited for here; the Ray it started stays up for the
    process's next search (:meth:`EarlyStart.keep`), as Ray does after ``ray.init``.
    """
    with EarlyStart._watch_lock:  # no prestart beside a search (EarlyStart._prestart_when_quiet)
        EarlyStart._sessions += 1
    try:
        with _session(address, dashboard, early):
            yield
    finally:
        with EarlyStart._watch_lock:
            EarlyStart._sessions -= 1


@contextmanager
def _session(address: str | None, dashboard: bool, early: EarlyStart | None) -> Iterator[None]:
    import ray

    if early is None or not early.owned:
        early = EarlyStart.kept() or early  # a front door's Ray, kept after its last search
    if early is not None and early.owned:
        early.wait()  # a failed start raises here, and then owns nothing
        try:
            with early.park.active():  # the search's last actors stay for the next one's trials
                yield
        finally:
            early.keep()
        return
    if ray.is_initialized():
        yield
        return
    _init(address, dashboard)
    try:
        yield
    finally:
        _shutdown()
