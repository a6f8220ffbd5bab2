"""Trial workers kept from one Tune run to the next in the same script.

Ray Tune ends a run's trial actors when the run ends, and Ray never gives an ended actor's
process to another actor, so each ``search()``/``optimize()`` of a script started new
worker processes that imported Ray Tune and TensorFlow again: about 7 s on 2 CPUs before
the first trial of every search after the first, where KerasTuner and Optuna, in process,
pay nothing. A :class:`WorkerPark` keeps them instead. Where Tune would end the actor of a
finished trial because its run has no trial left for it, the actor is *parked*: taken out
of the run with its placement group (its CPUs and GPUs stay reserved), not stopped. When a
trial of a later run (or of the same run: a paused trial resuming) asks for an actor with
the same resources, a parked one is handed to it: the run takes it over with its
placement group, and it gets the new run's trial function before Tune resets it for the
trial, as Tune does with the actors it reuses within a run.

Only the front doors' own Ray uses a park (:class:`cluster.connect.EarlyStart`), whose
trials are all functions made trainable the same way
(:func:`pipeline.checkpoints.stored_checkpoints_only`): so that a parked actor can run the
next run's function, all it needs is that function. Everything else keeps Tune's
behaviour:

* Nothing is parked without an active park (:meth:`WorkerPark.active`): a cluster that
  others use, a Ray the script started itself, ``python -m pipeline run``. (A spec run
  that a script makes on a front door's Ray after a search does take part.)
* Only an idle actor is parked: that of a trial that ended on its own or by its scheduler,
  once the search has no trial left to start. One still training (a run stopped by its time
  budget, a stopper, an interrupt) is ended as before.
* Trials with GPUs are not parked: TensorFlow in the worker holds the GPU's memory, which
  the script's own models (``get_best_models``) need right after the search.
* A trial that needs resources no parked actor has releases the whole park first, so a
  parked actor never holds what a new actor waits for; so does a trial of a Tune run
  without a park (the script's own ``tune.Tuner``) in the same process.
* A parked actor that died is ended and its trial gets a new one, as before.
* A park not used for ``keep_s`` seconds releases its actors: the script's own Ray work
  after its last search does not wait for their CPUs longer than that. The default is 10 s,
  or ``PIPELINE_KEEP_WORKERS_S`` from the environment; 0 parks nothing.
* A parked actor keeps the Tune environment variables of the run that started it; a run
  whose variables differ (``RAY_CHDIR_TO_TRIAL_DIR``, AWS credentials) does not take it.

Example (no Ray needed to make one; an empty park releases nothing):
    >>> park = WorkerPark(keep_s=1.0)
    >>> len(park), park.release()
    (0, 0)
    >>> current() is None
    True
    >>> with park.active():
    ...     current() is park
    True
"""

from __future__ import annotations

import contextvars
import logging
import os
import threading
import types
import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

from pipeline._patch import wrap_once

log = logging.getLogger(__name__)

_CURRENT: contextvars.ContextVar["WorkerPark | None"] = contextvars.ContextVar("worker_park", default=None)
ADOPT_TIMEOUT_S = 10.0  # a parked actor answers at once; one that does not is ended
KEEP_ENV = "PIPELINE_KEEP_WORKERS_S"
# Every park of this process, as Ray is the process's: a Tune run without one releases them
# (their actors hold resources its trials may need). Weak: a park no session holds is gone.
_PARKS: "weakref.WeakSet[WorkerPark]" = weakref.WeakSet()


def _keep_from_env() -> float:
    raw = os.environ.get(KEEP_ENV, "10")
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{KEEP_ENV} must be a number of seconds (0: keep no trial workers "
                         f"after a search), not {raw!r}") from None


def current() -> "WorkerPark | None":
    """The park of the Tune run under way in this thread, if its session has one."""
    return _CURRENT.get()


def _tune_env() -> dict[str, str | None]:
    """The environment variables Tune gives a trial actor as it is created (they stay with it)."""
    from cluster.prewarm import TUNE_PROPAGATED

    return {k: os.environ.get(k) for k in sorted(TUNE_PROPAGATED | {"RAY_CHDIR_TO_TRIAL_DIR"})}


@dataclass
class _Parked:
    ray_actor: Any
    acquired: Any  # Tune's PlacementGroupAcquiredResources: the actor's placement group
    request: Any  # the trial's PlacementGroupFactory (a ResourceRequest)
    env: dict[str, str | None]


class WorkerPark:
    """The parked trial actors of one Ray session (see the module's docstring)."""

    def __init__(self, keep_s: float | None = None):
        self.keep_s = _keep_from_env() if keep_s is None else keep_s
        self._lock = threading.Lock()
        self._parked: list[_Parked] = []
        self._timer: threading.Timer | None = None
        self.adopted = 0  # actors handed to a trial since the park was made (tests, benchmarks)
        _PARKS.add(self)

    def __len__(self) -> int:
        with self._lock:
            return len(self._parked)

    @contextmanager
    def active(self) -> Iterator["WorkerPark"]:
        """Park and adopt in the Tune runs of this block; released ``keep_s`` after it unless
        the next block begins first."""
        self._cancel_timer()
        token = _CURRENT.set(self if self.keep_s > 0 else None)
        try:
            yield self
        finally:
            _CURRENT.reset(token)
            self._arm_timer()

    def put(self, ray_actor: Any, acquired: Any, request: Any) -> None:
        with self._lock:
            self._parked.append(_Parked(ray_actor, acquired, request, _tune_env()))

    def take(self, request: Any, trainable_cls: Any) -> "_Parked | None":
        """A parked actor for ``request``, given ``trainable_cls``'s trial function; None if
        none fits (then the caller releases the rest: they hold resources a new actor needs)."""
        import ray

        env = _tune_env()
        while True:
            with self._lock:
                match = next((p for p in self._parked if p.request == request and p.env == env), None)
                if match is None:
                    return None
                self._parked.remove(match)
            try:
                ray.get(match.ray_actor.__ray_call__.remote(_adopt, trainable_cls), timeout=ADOPT_TIMEOUT_S)
            except Exception:  # noqa: BLE001 - dead or stuck: ended, and the next one is tried
                log.debug("a parked trial actor did not answer; ending it", exc_info=True)
                _end(match)
                continue
            self.adopted += 1
            return match

    def release(self) -> int:
        """End every parked actor and free its resources; how many there were."""
        self._cancel_timer()
        with self._lock:
            parked, self._parked = self._parked, []
        for p in parked:
            _end(p)
        return len(parked)

    def forget(self) -> None:
        """Drop every entry without ending it: their Ray is gone (another one is up now)."""
        self._cancel_timer()
        with self._lock:
            self._parked = []

    def _arm_timer(self) -> None:
        self._cancel_timer()
        with self._lock:
            if not self._parked:
                return
            self._timer = threading.Timer(self.keep_s, self.release)
            self._timer.daemon = True
            self._timer.name = "worker-park-release"
            self._timer.start()

    def _cancel_timer(self) -> None:
        with self._lock:
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()


def _adopt(trainable: Any, trainable_cls: Any) -> None:
    """In the parked actor: run ``trainable_cls``'s trial function from its next reset on."""
    trainable._trainable_func = types.MethodType(trainable_cls._trainable_func, trainable)
    trainable._name = getattr(trainable_cls, "_name", trainable._name)


def _end(parked: _Parked) -> None:
    import ray
    from ray.util.placement_group import remove_placement_group

    if not ray.is_initialized():
        return
    try:
        ray.kill(parked.ray_actor, no_restart=True)
    except Exception:  # noqa: BLE001 - gone already
        log.debug("ending a parked trial actor failed", exc_info=True)
    try:
        remove_placement_group(parked.acquired.placement_group)
    except Exception:  # noqa: BLE001 - gone with its Ray already
        log.debug("removing a parked actor's placement group failed", exc_info=True)


def _swappable(trainable_cls: Any, request: Any) -> bool:
    """A trial whose actor may be parked or adopted: one bundle without GPUs, and a function
    trainable made by :func:`pipeline.checkpoints.stored_checkpoints_only` (the same class
    shape every run)."""
    bundles = request.bundles
    return (bool(getattr(trainable_cls, "swappable_function", False)) and len(bundles) == 1
            and not bundles[0].get("GPU", 0))


# --- Ray Tune (2.60) TuneController hooks, inert without an active park ---------------------


def install(controller: Any) -> None:
    """Hook ``TuneController`` (the class) once: park where Tune would end a reusable actor,
    adopt where Tune looks for a cached one."""
    wrap_once(controller, "_schedule_trial_stop", _note_busy_actors)
    wrap_once(controller, "_maybe_cache_trial_actor", _park_instead_of_ending)
    wrap_once(controller, "_maybe_reuse_cached_actor", _adopt_before_new_actor)


def _note_busy_actors(original: Any) -> Any:
    """Which actors have a task under way as Tune stops their trial (a running trial stopped
    with its run): Tune forgets the task, but the actor still runs it, so it is not parked."""

    def _schedule_trial_stop(self: Any, trial: Any, exception: Any = None) -> None:
        tracked = self._trial_to_actor.get(trial)
        if tracked is not None:  # for _park, below: a busy actor is ended, not parked
            manager = self._actor_manager  # its futures of the actor, resolved ones included
            pending = manager._actor_task_events._tracked_futures  # the unresolved ones
            tracked.pipeline_busy = any(
                f in pending for f in manager._tracked_actors_to_task_futures.get(tracked, ()))
        original(self, trial, exception)

    return _schedule_trial_stop


def _park_instead_of_ending(original: Any) -> Any:
    def _maybe_cache_trial_actor(self: Any, trial: Any) -> bool:
        if original(self, trial):
            return True
        park = current()
        if (park is None or not self._reuse_actors or not self._search_alg.is_finished()
                or self._staged_trials):
            return False  # Tune ends it: a trial of this run may still want it
        try:
            return _park(self, trial, park)
        except Exception:  # noqa: BLE001 - Tune ends the actor, as without a park
            log.debug("parking a trial actor failed", exc_info=True)
            return False

    return _maybe_cache_trial_actor


def _park(tune_controller: Any, trial: Any, park: WorkerPark) -> bool:
    manager = tune_controller._actor_manager
    tracked = tune_controller._trial_to_actor.get(trial)
    request = trial.placement_group_factory
    if (tracked is None or not manager.is_actor_started(tracked) or manager.is_actor_failed(tracked)
            or tracked not in tune_controller._started_actors
            or getattr(tracked, "pipeline_busy", False)
            or not _swappable(trial.get_trainable_cls(), request)):
        return False
    ray_actor, acquired = manager._live_actors_to_ray_actors_resources.pop(tracked)
    manager._live_resource_cache = None
    manager._cleanup_actor_futures(tracked)
    resources = manager._resource_manager  # its clear() would remove the placement group
    resources._acquired_pgs.discard(acquired.placement_group)
    resources._pg_to_request.pop(acquired.placement_group, None)
    tune_controller._trial_to_actor.pop(trial)
    tune_controller._actor_to_trial.pop(tracked)
    tune_controller._started_actors.discard(tracked)
    trial.set_ray_actor(None)
    park.put(ray_actor, acquired, acquired.resource_request)
    log.debug("parked the actor of trial %s", trial)
    return True


def _adopt_before_new_actor(original: Any) -> Any:
    def _maybe_reuse_cached_actor(self: Any, trial: Any) -> bool:
        park = current()
        request = trial.placement_group_factory
        if park is None:  # a run of its own: what parks hold may be what its trials wait for
            for other in list(_PARKS):
                if len(other):
                    other.release()
        elif (len(park) and trial not in self._resetting_trials
              and not self._actor_cache.has_cached_object(request)):
            try:
                _lend(self, trial, park)
            except Exception:  # noqa: BLE001 - the trial gets a new actor, as without a park
                log.debug("adopting a parked trial actor failed", exc_info=True)
                park.release()
        return original(self, trial)

    return _maybe_reuse_cached_actor


def _lend(tune_controller: Any, trial: Any, park: WorkerPark) -> None:
    """Hand a parked actor to this run's cache for ``trial`` (Tune then resets it for the
    trial), or release the park when none fits."""
    import uuid

    from ray.air.execution._internal import TrackedActor

    request = trial.placement_group_factory
    trainable_cls = trial.get_trainable_cls()
    parked = park.take(request, trainable_cls) if _swappable(trainable_cls, request) else None
    if parked is None:
        park.release()  # what it holds may be what the new actor waits for
        return
    manager = tune_controller._actor_manager
    resources = manager._resource_manager
    pg = parked.acquired.placement_group
    try:
        tracked = TrackedActor(uuid.uuid4().int, on_start=tune_controller._actor_started,
                               on_stop=tune_controller._actor_stopped,
                               on_error=tune_controller._actor_failed)
        resources._acquired_pgs.add(pg)
        resources._pg_to_request[pg] = parked.request
        manager._live_actors_to_ray_actors_resources[tracked] = (parked.ray_actor, parked.acquired)
        manager._live_resource_cache = None
    except Exception:
        _end(parked)  # out of the park and in no run: nobody else would end it
        raise
    if not tune_controller._actor_cache.cache_object(request, tracked):
        tune_controller._remove_actor(tracked_actor=tracked)  # Tune ends it, as any actor it let go
    else:
        log.debug("adopted a parked actor for trial %s", trial)
