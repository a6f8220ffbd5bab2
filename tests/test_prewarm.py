"""Ray started as a script imports a front door, and trial workers started (TensorFlow
imported) before ``search()``: cluster.connect.EarlyStart, cluster.prewarm."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_copied_tune_environment_is_tunes():
    """A worker serves an actor only with the actor's exact environment: our copy of what Tune
    adds must be Tune's (an upgrade of Ray that changes it fails here, not silently)."""
    from ray.tune.execution.class_cache import DEFAULT_ENV_VARS, ENV_VARS_TO_PROPAGATE

    from cluster.prewarm import TUNE_ENV, TUNE_PROPAGATED

    assert TUNE_ENV == DEFAULT_ENV_VARS
    assert TUNE_PROPAGATED == frozenset(ENV_VARS_TO_PROPAGATE)


def _run_script(folder: Path, text: str) -> subprocess.CompletedProcess:
    """``text`` run as a user's ``python script.py`` in ``folder`` (no cluster address set)."""
    script = folder / "script.py"
    script.write_text(text)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run([sys.executable, str(script)], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


# in the scripts below: when the process calling it started (its /proc entry)
_STARTED = """
def started(pid="self"):  # when that process started, in seconds since the epoch
    ticks = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[19])
    boot = next(float(l.split()[1]) for l in open("/proc/stat") if l.startswith("btime"))
    return boot + ticks / os.sysconf("SC_CLK_TCK")
"""

_SCRIPT = """
import os, sys, time
import numpy as np
import ray
from pipeline.compat import keras_tuner as kt
import keras
""" + _STARTED + """

def build(hp):
    with open(os.path.abspath("trials.txt"), "a") as f:
        f.write(f"{os.getpid()} {started()}\\n")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(hp.Choice("u", [4, 8])),
                              keras.layers.Dense(2, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model

deadline = time.time() + 120
while not ray.is_initialized() and time.time() < deadline:
    time.sleep(0.05)  # Ray comes up while the script goes on
print("up before the tuner:", ray.is_initialized(), flush=True)
tuner = kt.RandomSearch(build, objective="val_accuracy", max_trials=2, seed=0,
                        directory="kt", project_name="warm")
time.sleep(2)  # the script prepares its data
x = np.random.default_rng(0).random((64, 4)).astype("float32")
y = (x[:, 0] > 0.5).astype("int64")
sys.path.insert(0, os.path.join(os.path.dirname(ray.__file__), "thirdparty_files"))
import psutil  # Ray's copy

def idle_for_no_trial(p):  # a Ray worker process, but not one for Tune's trial actors
    try:
        argv = p.cmdline()
        worker = (argv and argv[0].startswith("ray::") and "Agent" not in argv[0]
                  or any(a.endswith("workers/default_worker.py") for a in argv))
        return bool(worker) and p.environ().get("PL_DISABLE_FORK") != "1"
    except psutil.Error:  # ended meanwhile
        return False

print("idle workers for no trial:",
      sum(map(idle_for_no_trial, psutil.Process().children(recursive=True))), flush=True)

def ray_scripts():  # the Python programs of Ray's own processes (head and node)
    names = set()
    for p in psutil.Process().children(recursive=True):
        try:
            names.update(os.path.basename(a) for a in p.cmdline() if a.endswith(".py"))
        except psutil.Error:
            pass
    return " ".join(sorted(names))

print("ray's processes:", ray_scripts(), flush=True)
print("search at", time.time(), os.getpid(), flush=True)
tuner.search(x, y, epochs=1, validation_split=0.25, verbose=0)
"""


@pytest.mark.slow  # a whole script that starts its own Ray, 10-20 s
def test_front_door_trials_run_in_workers_started_before_search(tmp_path):
    """A user's script as a whole process: Ray starts as the script imports the KerasTuner
    door, and the first trials run in worker processes that started before ``search()`` was
    called, instead of processes Ray starts when Tune asks for them; no other worker
    competes with them (Ray's idle workers for a driver's tasks); nothing of it reaches
    the console."""
    proc = _run_script(tmp_path, _SCRIPT)
    assert "up before the tuner: True" in proc.stdout  # the import started it
    # and only the trials' workers: none of the idle ones Ray starts for a driver's tasks
    assert "idle workers for no trial: 0" in proc.stdout, proc.stdout
    # a lean head (cluster.connect._lean_head): neither the autoscaler monitor nor the
    # dashboard server; the log monitor, which brings the workers' lines to the console, is there
    scripts = proc.stdout.split("ray's processes:", 1)[1].splitlines()[0].split()
    assert "log_monitor.py" in scripts and "dashboard.py" not in scripts, scripts
    assert "monitor.py" not in scripts, scripts
    called, driver = proc.stdout.split("search at", 1)[1].split()[:2]
    trials = [line.split() for line in (tmp_path / "trials.txt").read_text().splitlines()]
    workers = {(pid, float(start)) for pid, start in trials if pid != driver}
    assert len(workers) == 2, trials  # the two trials ran at once, one per CPU
    assert all(start < float(called) for _, start in workers), (called, workers)
    assert "goaway" not in proc.stderr.lower() and "prestart" not in proc.stderr.lower()


_OTHER_CLUSTER = """
import threading, time
import ray
from pipeline.compat import keras_tuner as kt
from cluster.connect import ClusterConnectError
import keras
import numpy as np

deadline = time.time() + 120
while not ray.is_initialized() and time.time() < deadline:
    time.sleep(0.05)
print("started at import:", ray.is_initialized(), flush=True)

def build(hp):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(hp.Choice("u", [4, 8])),
                              keras.layers.Dense(2, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model

tuner = kt.RandomSearch(build, objective="val_accuracy", max_trials=1, directory="kt",
                        address="127.0.0.1:1")  # nothing listens there
print("local Ray ended for the other cluster:", not ray.is_initialized(), flush=True)
x = np.zeros((8, 4), "float32"); y = np.zeros(8, "int64")
try:
    tuner.search(x, y, epochs=1, validation_split=0.25)
    print("searched")
except ClusterConnectError as exc:
    print("refused:", exc)
print("threads:", [t.name for t in threading.enumerate() if t.name == "ray-early-start"])
"""


@pytest.mark.slow  # a whole script that starts its own Ray, 10-20 s
def test_a_tuner_for_another_cluster_ends_the_start_its_import_began(tmp_path):
    """The import's start joins RAY_ADDRESS or starts a local Ray; a tuner given another
    ``address`` ends it before joining its own cluster (here: one that is not there)."""
    proc = _run_script(tmp_path, _OTHER_CLUSTER)
    out = proc.stdout
    assert "started at import: True" in out
    assert "local Ray ended for the other cluster: True" in out
    assert "refused: cannot reach the Ray cluster at 127.0.0.1:1" in out and "searched" not in out
    assert "threads: []" in out


@pytest.mark.slow  # a whole script that starts its own Ray, 10-20 s
def test_a_script_that_starts_ray_itself_is_left_to_do_so(tmp_path):
    """Importing a front door starts no Ray in a script that calls ``ray.init`` itself: its
    own call (here with 1 CPU) starts the Ray it asked for, not "Ray is already running"."""
    proc = _run_script(tmp_path, (
        "import time\n"
        "import ray\n"
        "from pipeline.compat import keras_tuner as kt\n"
        "time.sleep(3)  # long enough for a start begun at import to be under way\n"
        "ray.init(num_cpus=1, include_dashboard=False)\n"
        "print('cpus:', ray.cluster_resources()['CPU'])\n"))
    assert "cpus: 1.0" in proc.stdout


_OPTUNA = """
import os, sys, time
import ray
from pipeline.compat import optuna
KERAS
""" + _STARTED + """

def study_actor():  # the process of this run's study actor (_StudyHolder), by its title
    raylet = os.environ["RAY_RAYLET_PID"]
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if (open(f"/proc/{pid}/cmdline").read().startswith("ray::_StudyHolder")
                    and f"RAY_RAYLET_PID={raylet}\\0" in open(f"/proc/{pid}/environ").read()):
                return pid
        except OSError:
            pass

def since_boot(pid):  # when that process started, in seconds since boot, to 10 ms
    ticks = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[19])
    return ticks / os.sysconf("SC_CLK_TCK")

def objective(trial):
    x = trial.suggest_float("x", 0.0, 1.0)
    time.sleep(1)
    with open(os.path.abspath("trials.txt"), "a") as f:
        f.write(f"{os.getpid()} {started()} {os.environ.get('PIPELINE_WARM_TRIAL_WORKERS')} {os.nice(0)} "
                f"{since_boot(study_actor())}\\n")
    return x

study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
deadline = time.time() + 120
while not ray.is_initialized() and time.time() < deadline:
    time.sleep(0.05)
time.sleep(3)  # the script prepares its data
def imported():  # all of it: a module is in sys.modules from the start of its import
    return hasattr(sys.modules.get("ray.air.integrations.mlflow"), "MLflowLoggerCallback")

while not imported() and time.time() < deadline:
    time.sleep(0.05)
print("imported ahead:", imported(), flush=True)
print("optimize at", time.time(), time.clock_gettime(time.CLOCK_BOOTTIME), flush=True)
study.optimize(objective, n_trials=2)
print("best", study.best_value)
"""


@pytest.mark.slow  # a whole script that starts its own Ray, 10-20 s
@pytest.mark.parametrize("keras", [True, False], ids=["keras", "no-keras"])
def test_optuna_door_trials_run_in_workers_started_before_optimize(tmp_path, keras):
    """An Optuna script: the Ray its import starts starts the first trials' workers too,
    before ``optimize()`` is called, so each ``optimize`` of a cheap objective does not wait
    for new processes (about 2-3 s on 2 CPUs). They import Ray Tune as they start, and
    TensorFlow when the script imports Keras (cluster.connect.imports_keras), so a Keras
    objective's first trial does not wait for it either (cluster.prewarm.setup_worker). The
    trials run at the script's priority, not at Ray's nice +15 for its workers."""
    proc = _run_script(tmp_path, _OPTUNA.replace("KERAS", "import keras" if keras else ""))
    assert "best " in proc.stdout
    called, called_since_boot = map(float, proc.stdout.split("optimize at", 1)[1].split()[:2])
    rows = [line.split() for line in (tmp_path / "trials.txt").read_text().splitlines()]
    assert len(rows) == 2, rows  # in one worker or two: Tune may hand the second to the first
    assert all(float(start) < called for _, start, *_ in rows), (called, rows)
    assert {warm for _, _, warm, *_ in rows} == {"tensorflow" if keras else "tune"}, rows
    # at the script's priority, not Ray's nice +15 for workers (cluster.connect.TRIAL_PRIORITY)
    assert {nice for *_, nice, _ in rows} == {str(os.nice(0))}, rows
    # the study actor, which each trial asks first, took a worker started ahead too
    # (cluster.prewarm.prestart's helpers), not one started ~0.9 s after the call
    assert all(float(holder) < called_since_boot for *_, holder in rows), (called_since_boot, rows)
    # and what a Tune run imports on the driver came in before the call
    # (cluster.connect._TUNE_RUN_IMPORTS: with mlflow installed, 0.7-2 s after it otherwise)
    assert "imported ahead: True" in proc.stdout


_ENDS = """
import json, os, sys, time
import ray
START

deadline = time.time() + 120
while not ray.is_initialized() and time.time() < deadline:
    time.sleep(0.05)
time.sleep(3)  # the first trials' workers start meanwhile
sys.path.insert(0, os.path.join(os.path.dirname(ray.__file__), "thirdparty_files"))
import psutil  # Ray's copy
from ray._private import worker
ours = {t: [i.process for i in infos] for t, infos in worker._global_node.all_processes.items()}
print("pids", json.dumps([p.pid for p in psutil.Process().children(recursive=True)]), flush=True)
print("has a monitor:", "monitor" in ours, flush=True)
if EXPLICIT:
    from cluster.connect import end_monitor
    end_monitor()
    print("monitor", [p.returncode for p in ours["monitor"]], "the rest alive",
          all(p.poll() is None for t, ps in ours.items() if t != "monitor" for p in ps), flush=True)
"""


@pytest.mark.slow  # a whole script that starts its own Ray, 10-20 s
@pytest.mark.parametrize("explicit", [True, False], ids=["end_monitor", "at-exit"])
def test_a_front_doors_ray_ends_with_the_script_without_waiting_for_its_monitor(tmp_path, explicit):
    """Ray gives each of its processes up to 1 s to exit on SIGTERM, and its autoscaler
    monitor takes all of it: ``end_monitor`` ends a monitor at once (SIGKILL) and leaves the
    rest to Ray's shutdown. The front door's Ray has no monitor (cluster.connect._lean_head)
    and ends before Ray's own exit hook. Nothing of either Ray outlives the script."""
    import json
    import time

    def alive(pid: int) -> bool:  # a zombie has ended
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False

    # Ray started as Ray starts it (its autoscaler monitor included), or the front door's
    # lean start (no monitor; a script that calls ray.init itself would not get it)
    start = ('ray.init(include_dashboard=False, dashboard_port=0, logging_level="WARNING")'
             if explicit else "from pipeline.compat import optuna")
    proc = _run_script(tmp_path, _ENDS.replace("EXPLICIT", str(explicit)).replace("START", start))
    pids = json.loads(proc.stdout.split("pids ", 1)[1].splitlines()[0])
    assert len(pids) >= 5, proc.stdout  # gcs, raylet, (monitor,) log monitor, agents, workers
    assert f"has a monitor: {explicit}" in proc.stdout
    if explicit:
        assert "monitor [-9] the rest alive True" in proc.stdout
    deadline = time.time() + 20
    while time.time() < deadline and any(map(alive, pids)):
        time.sleep(0.2)
    left = [p for p in pids if alive(p)]
    assert not left, [Path(f"/proc/{p}/cmdline").read_bytes() for p in left]
    assert "Exception ignored" not in proc.stderr and "Traceback" not in proc.stderr


_LAST_LINES = """
import ray
from pipeline.compat import optuna

def objective(trial):
    x = trial.suggest_float("x", 0.0, 1.0)
    print(f"trial {trial.number} says goodbye", flush=True)
    return x

study = optuna.create_study()
study.optimize(objective, n_trials=2, n_jobs=1)

@ray.remote
def last_words():  # the script's own task on the front door's Ray: it prints just after
    import threading  # it returns, as the script ends
    threading.Timer(0.15, lambda: print("the task's last line", flush=True)).start()
    return 1

ray.get(last_words.remote())
# the script ends here: what the workers printed last must still reach the console
"""


@pytest.mark.slow  # a whole script that starts its own Ray, 10-20 s
def test_a_script_ending_at_once_still_shows_its_workers_last_lines(tmp_path):
    """Ray's exit hook sleeps 0.5 s before ending a script's Ray, so that the workers' last
    lines reach the console; the front door's Ray ends with its own hook
    (cluster.connect._exit_ray), which gives each line that grace from when it was
    written, not from the exit. A script that ends as its last task returns must still
    show that task's line (and the trials' lines); no error at exit."""
    proc = _run_script(tmp_path, _LAST_LINES)
    out = proc.stdout + proc.stderr
    assert "the task's last line" in out, out[-3000:]
    for n in range(2):
        assert f"trial {n} says goodbye" in out, out[-3000:]
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr, proc.stderr[-3000:]


_FINALIZERS = """
import weakref
from cluster.prewarm import setup_worker
setup_worker()  # what every worker of a run does first (pipeline.quiet.install)

class Held:
    pass

def exiting(ref):  # Ray's SIGTERM handler raising SystemExit inside a weakref callback
    raise SystemExit(1)

def failing(ref):
    raise ValueError("a real error")

a, b = Held(), Held()
refs = [weakref.ref(a, exiting), weakref.ref(b, failing)]
del a, b
print("done", flush=True)
"""


def test_a_workers_exit_signal_caught_in_a_finalizer_stays_off_the_console(tmp_path):
    """A worker ended by Ray (SIGTERM -> SystemExit) while a weakref callback runs printed
    "Exception ignored in: ... SystemExit: 1" with a traceback, copied to the user's console
    after a search; other exceptions Python cannot raise are still shown."""
    proc = _run_script(tmp_path, _FINALIZERS)
    assert "done" in proc.stdout
    assert "SystemExit" not in proc.stderr, proc.stderr
    assert "ValueError: a real error" in proc.stderr and "Exception ignored in" in proc.stderr


# a KerasTuner door's build function for the scripts below: each build leaves its process's
# pid and start in NAME.txt; and the data they search
_BUILDER = """
def builder(name):
    def build(hp):
        with open(os.path.abspath(name + ".txt"), "a") as f:
            f.write(f"{os.getpid()} {started()}\\n")
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(hp.Choice("u", [4, 8])),
                                  keras.layers.Dense(2, activation="softmax")])
        model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
        return model
    return build

x = np.random.default_rng(0).random((64, 4)).astype("float32")
y = (x[:, 0] > 0.5).astype("int64")
"""

_NEXT_SEARCH = """
import os, time
# the quiet-time start of new workers, once a search's own are no longer kept (10 s by
# default: test_back_to_back_searches_run_in_the_first_searchs_workers)
os.environ["PIPELINE_KEEP_WORKERS_S"] = "0"
import numpy as np
from pipeline.compat import keras_tuner as kt
import keras
""" + _STARTED + _BUILDER + """

def search(name):
    at = time.time()
    print(name, "at", at, flush=True)
    tuner = kt.RandomSearch(builder(name), objective="val_accuracy", max_trials=2, seed=0,
                            directory="kt", project_name=name)
    tuner.search(x, y, epochs=1, validation_split=0.25, verbose=0)
    print(name, "took", round(time.time() - at, 2), flush=True)

print("driver", os.getpid(), flush=True)
search("first")
returned = time.time()
end = returned + 4
while time.time() < end:  # the script works on (evaluates a model, say)
    sum(i * i for i in range(10000))
import ray, sys
sys.path.insert(0, os.path.join(os.path.dirname(ray.__file__), "thirdparty_files"))
import psutil  # Ray's copy
# a process's start is read with whole-second boot time: up to 1 s early, never late
print("workers started while busy:", sum(returned < p.create_time() < end
                                           for p in psutil.Process().children(recursive=True)), flush=True)
search("after_busy")
time.sleep(9)  # a notebook waiting for its next cell
search("after_quiet")
"""


@pytest.mark.slow  # a whole script with timed pauses between three searches, ~40 s
def test_the_next_search_finds_its_workers_started_once_the_script_went_quiet(tmp_path):
    """After a search, the next one's trial workers start (TensorFlow imported) once the
    script goes quiet, so a later ``search()`` does not wait ~9 s for them; while the script
    still works, none start beside it (they start when the next search asks)."""
    proc = _run_script(tmp_path, _NEXT_SEARCH)
    called = {line.split()[0]: float(line.split()[2])
              for line in proc.stdout.splitlines() if " at " in line}

    driver = proc.stdout.split("driver ", 1)[1].split()[0]  # builds once to read the space

    def workers(name):
        return {(pid, float(start)) for pid, start in
                (line.split() for line in (tmp_path / f"{name}.txt").read_text().splitlines())
                if pid != driver}

    busy, quiet = workers("after_busy"), workers("after_quiet")
    assert busy and quiet and not busy & quiet, (busy, quiet)
    assert "workers started while busy: 0" in proc.stdout, proc.stdout
    # process starts read from /proc are up to 1 s early (the boot time is whole seconds)
    assert all(start > called["after_busy"] - 1.5 for _, start in busy), (called, busy)
    assert all(start < called["after_quiet"] - 4 for _, start in quiet), (called, quiet)



_BACK_TO_BACK = """
import os, time
import numpy as np
from pipeline.compat import keras_tuner as kt
from pipeline.compat import optuna
import keras
""" + _STARTED + _BUILDER + """
print("driver", os.getpid(), flush=True)  # it builds once too, to read the space
for search in range(2):
    tuner = kt.RandomSearch(builder(f"trials-{search}"), objective="val_accuracy", max_trials=2,
                            seed=search, directory="kt", project_name=f"p{search}")
    tuner.search(x, y, epochs=1, validation_split=0.25, verbose=0)

def objective(trial):
    with open(os.path.abspath(f"trials-{2 + trial.number // 3}.txt"), "a") as f:
        f.write(f"{os.getpid()} {started()}\\n")
    return trial.suggest_float("x", 0.0, 1.0)

study = optuna.create_study(direction="maximize")
for _ in range(2):  # the same study, twice
    study.optimize(objective, n_trials=3)
print("trials", len(study.trials), flush=True)
"""


@pytest.mark.slow  # a whole script of four searches, ~20 s (tests/test_worker_park.py: the parts)
def test_back_to_back_searches_run_in_the_first_searchs_workers(tmp_path):
    """Searches one after another in a script (two KerasTuner-door tuners, then one Optuna
    study optimizing twice): each search after the first runs its trials in worker
    processes of the search before (pipeline.worker_park), instead of new ones that import
    TensorFlow again (~7 s each on 2 CPUs)."""
    proc = _run_script(tmp_path, _BACK_TO_BACK)
    assert "trials 6" in proc.stdout
    driver = proc.stdout.split("driver ", 1)[1].split()[0]
    pids = [{line.split()[0] for line in (tmp_path / f"trials-{i}.txt").read_text().splitlines()} - {driver}
            for i in range(4)]
    assert all(pids), pids
    for before, after in zip(pids, pids[1:]):
        assert after & before, pids  # a worker of the search before took this search's trials
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
