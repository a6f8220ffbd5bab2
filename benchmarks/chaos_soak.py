"""Chaos soak: a long search on a local multi-node cluster survives repeated faults.

Starts an S3 server on loopback (``tests/s3faults.py``) and a real local Ray cluster
(``cluster/local.py``: a head and ``--workers`` 1-CPU worker nodes), then runs a search
(``python -m pipeline run SPEC``, ``--trials`` trials of ``--epochs`` epochs, a checkpoint
every ``--checkpoint-every`` epochs, results on the S3 server) as a driver process of
its own. For ``--minutes`` minutes, every ``--every LO HI`` seconds (uniform, seeded by
``--seed``) it injects one fault, chosen by the seeded RNG:

* ``node``: SIGKILL every process of a worker node (raylet, its Ray workers and its
  ``ray start``), preferring one training a trial now, and start a new worker node in its
  place (``cluster.local.add_worker``);
* ``driver``: SIGKILL the driver (its whole process group) and start
  ``python -m pipeline run SPEC --resume`` against the same cluster;
* ``storage``: stop the S3 server for 5-15 s, then start it again (same data);
* ``process``: SIGKILL one trial's Ray worker process (a ``ray::ImplicitFunc`` actor
  in one of the cluster's worker-node sessions), preferring one training a trial now
  (reused actors idle between trials).

``--one-of-each`` injects exactly one fault of each kind, in a seeded order, whatever
``--minutes`` says (the short version ``tests/test_chaos.py`` runs). After the window no
more faults come; the search is left to finish.

Then, from the stored results alone (``pipeline.results.Results`` on the bucket: the
trials' status, their stored rows -- Tune's ``progress.csv`` -- and their checkpoints):

* every configured trial is there and ``TERMINATED``, and no more trials than configured;
* none ran twice to completion: its last epoch appears in exactly one stored row;
* each trial's history (``Results.histories``, rows lost by storage refilled from the
  checkpoint) holds every epoch 1..n, none missing;
* restarts are recorded where they happened: a stored row whose ``iterations_since_restore``
  is 1 is a restart (from the checkpoint of the epoch before, or from scratch) unless it
  is the trial's first epoch and first row; between restarts the epochs go up by one,
  reported by one process (``pid``) -- a change of process anywhere else is an
  unrecorded restart;
* **work lost per fault** (``E``): a restart belongs to the last fault injected before it;
  it lost the epochs the trial had reported before that fault beyond the checkpoint it
  restarted from (restart at epoch ``s``, ``p`` reported: ``max(0, p - s + 1)``). A trial
  may lose at most one checkpoint interval (``--checkpoint-every``) per restart. ``p`` is
  the one figure not read from storage: Tune replaces a restarted trial's stored rows
  with the copy it last synced, so just before each fault the soak reads the highest
  epoch of every trial from the drivers' own per-trial files (:meth:`Soak.reach`).
  Not counted: the part of the epoch in progress when the fault struck (less than one
  epoch, never reported); a restart whose rows a later restart of the same trial
  dropped is not seen;
* the best model loads (``Results.best_model()``).

A trial that fails any of these counts as lost (so does a missing best model). One line
per fault and a summary go to stderr; the last line on stdout is exactly::

    chaos: T trials, K faults (a node, b driver, c storage, d process), L lost, \
max lost epochs per fault E, wall W s

Exit status 0 only if nothing was lost (L is 0 and every check passed).

Run (from the repository root)::

    .venv/bin/python benchmarks/chaos_soak.py                 # 5 minutes, 60 trials
    .venv/bin/python benchmarks/chaos_soak.py --minutes 2 --one-of-each --every 2 4 \
        --trials 16 --epochs 6                                # the short version (tests/test_chaos.py)

Everything it starts (S3 server, cluster nodes, drivers) is stopped at the end, by pid,
even on failure; ``--keep DIR`` keeps the logs and cluster state folder there.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

KINDS = ("node", "driver", "storage", "process")
BUCKET = "chaos"
NAME = "soak"
# Fake credentials for the loopback S3 server; set before the cluster starts so nodes inherit them.
S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
          "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
_RAY_ENV = ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH",
            "RAY_DASHBOARD_ADDRESS")


def soak_spec(uri: str, endpoint: str, trials: int, epochs: int, every: int, concurrent: int,
              seed: int) -> dict:
    """The searched experiment: small digits MLPs, checkpointed, on the S3 server."""
    return {
        "name": NAME,
        "data": {"source": "digits", "limit": 360},
        "model": {"builder": "mlp"},
        "space": {
            "units": {"type": "int", "low": 8, "high": 32, "step": 8},
            "learning_rate": {"type": "float", "low": 1e-3, "high": 3e-2, "log": True},
        },
        "training": {"epochs": epochs, "batch_size": 32, "checkpoint_every": every},
        "objective": {"metric": "val_accuracy", "mode": "max"},
        "searcher": {"name": "tpe"},
        "scheduler": {"name": "fifo"},
        "resources": {"cpu": 1},
        "search": {"trials": trials, "max_concurrent": concurrent},
        "failure": {"max_failures": 50},
        "storage": {"path": uri, "endpoint_override": endpoint, "outage_tolerance_s": 120},
        "seed": seed,
    }


class Soak:
    """The S3 server, the cluster and the driver of one soak, and the faults it injects."""

    def __init__(self, args: argparse.Namespace, work: Path):
        from cluster import local
        from tests.s3faults import RestartableS3

        self.args = args
        self.work = work
        self.rng = random.Random(args.seed)
        self.t0 = time.monotonic()
        self.local = local
        # kind, unix time, what was done, each trial's highest reported epoch just before
        self.faults: list[tuple[str, float, str, dict[str, int]]] = []
        self.driver: subprocess.Popen | None = None
        self.drivers = 0
        self.cluster = None
        self.reach_at = 0.0
        self.busy: set[int] = set()  # pids training a trial, as of the last reach()
        self.s3 = RestartableS3()
        self.s3.start()
        from pipeline.storage import filesystem

        filesystem("s3://x", self.s3.endpoint)[0].create_dir(BUCKET)
        self.uri = f"s3://{BUCKET}/experiments"

    # -- bookkeeping ---------------------------------------------------------------

    def say(self, msg: str) -> None:
        print(f"[{time.monotonic() - self.t0:6.1f}s] {msg}", file=sys.stderr, flush=True)

    def start_cluster(self) -> None:
        self.cluster = self.local.start(workers=self.args.workers, cpus_per_worker=1,
                                        state_dir=self.work / "cluster", timeout_s=180)
        self.say(f"cluster up: head + {self.args.workers} worker nodes at {self.cluster.address}")

    def write_spec(self) -> Path:
        import yaml

        a = self.args
        raw = soak_spec(self.uri, self.s3.endpoint, a.trials, a.epochs, a.checkpoint_every,
                        a.workers, a.seed)
        path = self.work / "spec.yaml"
        path.write_text(yaml.safe_dump(raw))
        return path

    def start_driver(self, spec: Path, resume: bool) -> None:
        env = {k: v for k, v in os.environ.items() if k not in _RAY_ENV}
        env.update(self.cluster.env())
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
        self.drivers += 1
        log = open(self.work / f"driver-{self.drivers}.log", "w")  # noqa: SIM115 (kept by the child)
        cmd = [sys.executable, "-m", "pipeline", "run", str(spec), *(["--resume"] if resume else [])]
        self.driver = subprocess.Popen(cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.say(f"driver {self.drivers} started (pid {self.driver.pid}){' with --resume' if resume else ''}")

    def driver_log(self) -> str:
        return (self.work / f"driver-{self.drivers}.log").read_text(errors="replace")

    def _workers(self) -> list[tuple[int, int, int]]:
        """(index, leader pid, start time) of every worker node still running."""
        from cluster._procs import _session_members

        times = self.cluster.start_times[1:]
        return [(i, pid, times[i]) for i, pid in enumerate(self.cluster.worker_pids)
                if _session_members(pid, times[i])]

    def trial_processes(self) -> dict[int, list[int]]:
        """Per running worker node index, the pids of its trial actors (``ray::ImplicitFunc``)."""
        from cluster._procs import _session_members

        found: dict[int, list[int]] = {}
        for index, leader, start in self._workers():
            for pid in _session_members(leader, start):
                try:
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
                except OSError:
                    continue
                if cmd.startswith("ray::ImplicitFunc"):
                    found.setdefault(index, []).append(pid)
        return found

    def wait_for_trials(self, timeout: float) -> dict[int, list[int]]:
        """Trial actors once some run (empty if none came within ``timeout`` or the run ended)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.driver.poll() is None:
            found = self.trial_processes()
            if found:
                return found
            time.sleep(0.5)
        return {}

    # -- the faults ----------------------------------------------------------------

    def reach(self) -> dict[str, int]:
        """Per trial, the highest epoch it has reported so far, as the drivers logged it.

        Read from the drivers' own per-trial ``progress.csv`` files in the head's session
        folder (every driver's, resumed ones included), which Tune appends to as each
        result arrives. Tune's *stored* copy cannot tell this: when a trial restarts it
        replaces the trial's file with the copy last synced to storage, dropping the rows
        reported since (``Results.histories`` refills them from the checkpoint).
        """
        import csv

        self.reach_at = time.time()
        best: dict[str, int] = {}
        last: dict[str, tuple[float, int, str]] = {}  # the newest row: timestamp, epoch, pid
        root = Path(self.cluster.temp_dir or self.cluster.state_dir) / "h"
        for path in root.glob(f"session_*/artifacts/*/{NAME}/driver_artifacts/*/progress.csv"):
            try:
                with open(path, newline="") as fh:
                    for row in csv.DictReader(fh):
                        tid, epoch = row.get("trial_id"), row.get("epoch")
                        if tid and epoch and epoch.isdigit():
                            best[tid] = max(best.get(tid, 0), int(epoch))
                            when = float(row.get("timestamp") or 0)
                            if when >= last.get(tid, (-1.0,))[0]:
                                last[tid] = (when, int(epoch), row.get("pid", ""))
            except (OSError, csv.Error, ValueError):
                continue
        self.busy = {int(pid) for _, epoch, pid in last.values()
                     if epoch < self.args.epochs and pid.isdigit()}
        return best

    def _busy_first(self, running: dict[int, list[int]]) -> tuple[list[int], list[int]]:
        """Worker indices and trial pids to hit: those training a trial now (a reused
        actor also idles between trials), else all that host trial actors."""
        self.reach()
        nodes = sorted(i for i, ps in running.items() if self.busy & set(ps)) or sorted(running)
        pids = sorted(p for ps in running.values() for p in ps)
        return nodes, sorted(self.busy & set(pids)) or pids

    def fault(self, kind: str, spec: Path) -> tuple[str, dict[str, int]] | None:
        """Inject one fault of ``kind``: what was done and :meth:`reach` just before it,
        or None if there was nothing to hit (the search had ended)."""
        if kind == "node":
            running = self.wait_for_trials(60)
            alive = [i for i, _, _ in self._workers()]
            choices = self._busy_first(running)[0] or alive
            if not choices:
                return None
            index = self.rng.choice(choices)
            reach = self.reach()
            killed = self.local.kill_worker(self.cluster, index)
            new = self.local.add_worker(self.cluster, timeout_s=120)
            return (f"SIGKILLed worker node {index} ({len(killed)} processes, "
                    f"{len(running.get(index, []))} trial actors); started worker node {new}"), reach
        if kind == "driver":
            if not self.wait_for_trials(60):
                return None
            pid = self.driver.pid
            reach = self.reach()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            self.driver.wait()
            self.start_driver(spec, resume=True)
            return f"SIGKILLed driver (pid {pid}); resumed", reach
        if kind == "storage":
            down = self.rng.uniform(5, 15)
            reach = self.reach()
            self.s3.stop()
            time.sleep(down)
            self.s3.start()
            return f"S3 server stopped for {down:.1f} s, started again", reach
        if kind == "process":
            pids = self._busy_first(self.wait_for_trials(60))[1]
            if not pids:
                return None
            pid = self.rng.choice(pids)
            reach = self.reach()
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            return f"SIGKILLed trial worker process {pid}", reach
        raise ValueError(kind)

    # -- the run -------------------------------------------------------------------

    def run(self) -> list[str]:
        """Run the search under faults until it finishes; problems met on the way."""
        a = self.args
        spec = self.write_spec()
        self.start_cluster()
        self.start_driver(spec, resume=False)
        problems: list[str] = []
        if not self.wait_for_trials(300):
            problems.append("no trial started within 300 s:\n" + self.driver_log()[-3000:])
            return problems
        window_end = time.monotonic() + a.minutes * 60
        plan = list(KINDS) if a.one_of_each else None
        if plan:
            self.rng.shuffle(plan)
        next_at = time.monotonic() + self.rng.uniform(*a.every)
        unexpected = 0
        while True:
            rc = self.driver.poll()
            if rc == 0:
                break
            if rc is not None:
                unexpected += 1
                problems.append(f"driver {self.drivers} exited with {rc}:\n" + self.driver_log()[-3000:])
                self.say(f"driver {self.drivers} exited with {rc} (not a fault injected)")
                if unexpected > 3:
                    return problems
                self.start_driver(spec, resume=True)
            now = time.monotonic()
            due = (plan is None and now < window_end) or bool(plan)
            if due and now >= next_at:
                kind = plan.pop(0) if plan else self.rng.choice(KINDS)
                done = self.fault(kind, spec)
                if done is None:
                    self.say(f"fault {kind}: the search has ended, nothing to hit")
                    if plan is not None:
                        plan.insert(0, kind)
                else:
                    what, reach = done
                    self.faults.append((kind, self.reach_at, what, reach))
                    self.say(f"fault {len(self.faults)} ({kind}): {what}")
                next_at = time.monotonic() + self.rng.uniform(*a.every)
            if now > window_end + a.finish_timeout:
                problems.append(f"the search did not finish within {a.finish_timeout:.0f} s "
                                "after the fault window")
                return problems
            time.sleep(0.5)
        if plan:
            problems.append(f"the search ended before faults {plan} were injected")
        self.say(f"search finished ({self.drivers} driver(s))")
        return problems

    def close(self) -> None:
        """Stop everything this soak started, by pid, whatever happened."""
        if self.driver is not None and self.driver.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.driver.pid, signal.SIGKILL)
            self.driver.wait()
        if self.cluster is not None:
            self.local.stop(self.cluster.state_dir, timeout_s=30)
        if self.s3.up:
            self.s3.stop()


def restarts_of(rows: list[dict]) -> tuple[list[tuple[int, float]], list[str]]:
    """A trial's restarts in its stored rows (oldest first), and problems found.

    A row whose ``iterations_since_restore`` is 1 is a restart when it is not the trial's
    first epoch, or not its first row: the trial went on from the checkpoint of the epoch
    before (or from scratch). Between restarts the epochs must go up by one, reported by
    one process. Returns one ``(epoch restarted at, unix time)`` per restart.
    """
    restarts, problems = [], []
    prev = None
    for row in rows:
        epoch = int(row["epoch"])
        isr = row.get("iterations_since_restore")
        fresh = isr == isr and isr is not None and int(isr) == 1  # NaN != NaN
        if fresh and (epoch > 1 or prev is not None):
            restarts.append((epoch, float(row.get("timestamp") or 0)))
        elif prev is not None:
            if epoch != int(prev["epoch"]) + 1:
                problems.append(f"epoch {epoch} follows epoch {int(prev['epoch'])} with no restart")
            elif row.get("pid") != prev.get("pid"):
                problems.append(f"epoch {epoch} came from another process "
                                f"({prev.get('pid')} -> {row.get('pid')}) with no restart recorded")
        prev = row
    return restarts, problems


def check(uri: str, endpoint: str, trials: int, epochs: int, every: int,
          faults: list[tuple[str, float, str, dict[str, int]]], say) -> tuple[int, int, list[str]]:
    """Check the stored results; returns (trials lost, max lost epochs per fault, problems).

    A restart belongs to the last fault injected before it; the epochs it lost are those
    the trial had reported before that fault (the fault's ``reach``) beyond the checkpoint
    it restarted from.
    """
    from pipeline.results import Results
    from pipeline.trainable import RESTORED_AT_END

    res = Results.open(f"{uri}/{NAME}", endpoint_override=endpoint)
    df = res.dataframe()
    raw = res._analysis.trial_dataframes  # the rows as stored, before any refill
    histories = res.histories
    problems: list[str] = []
    bad: set[str] = set()
    if len(df) < trials:
        problems.append(f"{trials - len(df)} configured trials missing ({len(df)} stored)")
    if len(df) > trials:
        problems.append(f"{len(df) - trials} trials more than configured ({len(df)} stored)")
    per_fault = [[] for _ in faults]
    unattributed = []
    for _, trial in df.iterrows():
        tid = trial["trial_id"]
        mine: list[str] = []
        if trial["status"] != "TERMINATED":
            mine.append(f"status {trial['status']} ({trial.get('error')})")
        hist = histories.get(tid)
        seen = set(hist["epoch"].dropna().astype(int)) if hist is not None and len(hist) else set()
        if seen != set(range(1, epochs + 1)):
            missing = sorted(set(range(1, epochs + 1)) - seen)
            mine.append(f"history epochs missing: {missing}")
        stored = raw.get(tid)
        # a trial restored with all its epochs done reports its last one again, marked so
        rows = [r for r in (stored.to_dict("records") if stored is not None else [])
                if r.get(RESTORED_AT_END) is not True]
        finals = sum(int(r["epoch"]) == epochs for r in rows)
        if finals > 1:
            mine.append(f"ran to completion {finals} times")
        restarts, found = restarts_of(rows)
        mine += found
        for epoch, when in restarts:
            i = max((k for k, f in enumerate(faults) if f[1] < when), default=None)
            if i is None:
                unattributed.append((tid, epoch))
                mine.append(f"restarted at epoch {epoch} before any fault")
                continue
            lost = max(0, faults[i][3].get(tid, 0) - (epoch - 1))
            per_fault[i].append(lost)
            if lost > every:
                mine.append(f"restart at epoch {epoch} after fault {i + 1} ran {lost} epochs "
                            f"again (> checkpoint interval {every})")
        if mine:
            bad.add(tid)
            problems += [f"trial {tid}: {m}" for m in mine]
    for i, (kind, _, _, _) in enumerate(faults):
        say(f"fault {i + 1} ({kind}): {len(per_fault[i])} trial restart(s), epochs run again: "
            f"{sorted(per_fault[i], reverse=True)}")
    lost = len(bad) + max(0, trials - len(df))
    try:
        model = res.best_model()
        say(f"best model loads: trial {res.best_trial.trial_id}, {res.metric} {res.best_value:.4f}, "
            f"{model.count_params()} parameters")
    except Exception as exc:  # noqa: BLE001 - any failure to load is the finding
        problems.append(f"the best model does not load: {type(exc).__name__}: {exc}")
        lost += 1
    worst = max((x for xs in per_fault for x in xs), default=0)
    return lost, worst, problems


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=5, help="how long faults are injected (default 5)")
    p.add_argument("--trials", type=int, default=60, help="trials in the search (default 60)")
    p.add_argument("--epochs", type=int, default=20, help="epochs per trial (default 20)")
    p.add_argument("--checkpoint-every", type=int, default=2, help="epochs between checkpoints (default 2)")
    p.add_argument("--workers", type=int, default=2, help="worker nodes, 1 CPU each (default 2)")
    p.add_argument("--every", type=float, nargs=2, default=(20, 40), metavar=("LO", "HI"),
                   help="seconds between faults, uniform in [LO, HI] (default 20 40)")
    p.add_argument("--one-of-each", action="store_true",
                   help="exactly one fault of each kind, in a seeded order")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--finish-timeout", type=float, default=900,
                   help="seconds the search may take to finish after the fault window (default 900)")
    p.add_argument("--keep", type=Path, help="keep logs and the cluster's state folder here")
    args = p.parse_args(argv)
    if args.trials < 1 or args.epochs < 1 or args.checkpoint_every < 1 or args.workers < 1:
        p.error("--trials, --epochs, --checkpoint-every and --workers must be >= 1")
    if not 0 < args.every[0] <= args.every[1]:
        p.error("--every LO HI needs 0 < LO <= HI")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    for key, value in S3_ENV.items():
        os.environ.setdefault(key, value)
    work = Path(args.keep).resolve() if args.keep else Path(tempfile.mkdtemp(prefix="chaos-"))
    work.mkdir(parents=True, exist_ok=True)
    soak = Soak(args, work)
    try:
        problems = soak.run()
        lost, worst, found = 0, 0, []
        if not problems:  # the search finished: judge it from what was stored
            lost, worst, found = check(soak.uri, soak.s3.endpoint, args.trials, args.epochs,
                                       args.checkpoint_every, soak.faults, soak.say)
        else:
            lost = args.trials  # unfinished: nothing can be vouched for
        problems += found
    finally:
        soak.close()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    for problem in problems:
        print(f"problem: {problem}", file=sys.stderr)
    counts = {k: sum(kind == k for kind, *_ in soak.faults) for k in KINDS}
    wall = time.monotonic() - started
    print(f"chaos: {args.trials} trials, {len(soak.faults)} faults ({counts['node']} node, "
          f"{counts['driver']} driver, {counts['storage']} storage, {counts['process']} process), "
          f"{lost} lost, max lost epochs per fault {worst}, wall {wall:.0f} s", flush=True)
    return 0 if lost == 0 and not problems else 1


if __name__ == "__main__":
    sys.exit(main())
