"""Benchmark contestants, one per process: ``python -m benchmarks.contestants JOB.json RESULT.json``.

Every contestant solves the same problem: the same rows (``pipeline.data.load_dataset``
with the problem's ``DataSpec`` and seed, exactly what the pipeline's runner does), the
same model (``build_model`` below mirrors ``pipeline.models`` layer for layer), the same
search space, optimizer (Adam) and batch size. It writes a result JSON:

* ``events``: ``[[t, val_accuracy], ...]`` for every epoch any trial finished, ``t`` in
  seconds since the orchestrator spawned the process (env ``BENCH_T0``), so start-up
  (interpreter, imports, Ray) counts for everyone;
* ``trials``, ``epochs`` (epochs trained in all), ``search_s`` (in-process time of the
  search call), ``iters`` (Ray-based contestants: per-result records with
  ``time_this_iter_s``, worker ``pid`` and, for the leak scenario, the worker's RSS).

Heavy imports (TensorFlow, Keras, Ray, Optuna) stay inside functions: Ray workers import
this module to find the trainables, and a contestant pays only for what it uses.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

T0 = float(os.environ.get("BENCH_T0") or time.time())
EVENTS: list[list[float]] = []  # [t since T0, val_accuracy], this process

PROBLEMS: dict[str, dict[str, Any]] = {
    # sklearn digits (1797 images 8x8, /16), 20 % validation, no test split.
    "digits": {
        "data": {"source": "digits", "validation_fraction": 0.2, "test_fraction": 0.0},
        "space": {
            "units": {"type": "int", "low": 32, "high": 512, "step": 32},
            "learning_rate": {"type": "float", "low": 1.0e-4, "high": 1.0e-1, "log": True},
        },
        "batch_size": 32,
        "target": 0.95,
    },
    # mnist1d (generated offline, 4000 signals of length 40), MLP or 1-D CNN.
    "mnist1d": {
        "data": {"source": "mnist1d", "num_samples": 4000,
                 "validation_fraction": 0.2, "test_fraction": 0.0},
        "space": {
            "builder": {"type": "choice", "values": ["mlp", "cnn"]},
            "units": {"type": "int", "low": 64, "high": 256, "step": 64, "when": {"builder": ["mlp"]}},
            "filters": {"type": "choice", "values": [16, 32], "when": {"builder": ["cnn"]}},
            "learning_rate": {"type": "float", "low": 3.0e-4, "high": 1.0e-2, "log": True},
        },
        "batch_size": 32,
        "target": 0.8,
    },
}

RAY_INIT = {"include_dashboard": False, "logging_level": "WARNING",
            "log_to_driver": True, "configure_logging": True}  # what pipeline's ray_session uses


def now() -> float:
    return time.time() - T0


def record(value: float) -> None:
    EVENTS.append([round(now(), 3), float(value)])


# --------------------------------------------------------------------------- problem


def fixed_configs(problem: str, n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` configs pre-sampled with a seeded RNG; every parameter gets a value (inactive ones too)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        cfg: dict[str, Any] = {}
        for name, p in PROBLEMS[problem]["space"].items():
            if p["type"] == "int":
                step = p.get("step", 1)
                cfg[name] = int(p["low"] + step * int(rng.integers(0, (p["high"] - p["low"]) // step + 1)))
            elif p["type"] == "float":
                lo, hi = (math.log(p["low"]), math.log(p["high"])) if p.get("log") else (p["low"], p["high"])
                v = float(rng.uniform(lo, hi))
                cfg[name] = float(f"{(math.exp(v) if p.get('log') else v):.6g}")
            else:
                cfg[name] = p["values"][int(rng.integers(0, len(p["values"])))]
        out.append(cfg)
    return out


def load_arrays(problem: str, seed: int) -> dict[str, Any]:
    """The rows every contestant uses: the pipeline's own loader and split, test fraction 0."""
    from pipeline.data import load_dataset
    from pipeline.spec import DataSpec

    ds = load_dataset(DataSpec(**PROBLEMS[problem]["data"]), seed)
    return {"x_train": ds.x_train, "y_train": ds.y_train, "x_val": ds.x_val, "y_val": ds.y_val,
            "input_shape": tuple(ds.input_shape), "num_classes": int(ds.num_classes)}


def build_model(hp: dict[str, Any], input_shape: tuple[int, ...], num_classes: int):
    """The pipeline's ``mlp`` / ``cnn`` builders (defaults: 1 layer; 2 convs, dense 64), compiled with Adam."""
    import keras

    inputs = keras.Input(shape=input_shape)
    if hp.get("builder", "mlp") == "mlp":
        x = keras.layers.Flatten()(inputs)
        x = keras.layers.Dense(int(hp.get("units", 64)))(x)
        x = keras.layers.Activation("relu")(x)
    else:
        x = keras.layers.Reshape((input_shape[0], 1))(inputs)
        for i in range(1, 3):
            x = keras.layers.Conv1D(int(hp.get("filters", 32)) * 2 ** (i - 1), 3, padding="same")(x)
            x = keras.layers.Activation("relu")(x)
            if x.shape[1] >= 4:
                x = keras.layers.MaxPooling1D(2)(x)
        x = keras.layers.Flatten()(x)
        x = keras.layers.Dense(64)(x)
        x = keras.layers.Activation("relu")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(float(hp["learning_rate"])),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def _recorder():
    import keras

    class Recorder(keras.callbacks.Callback):
        """Timestamps every epoch's val_accuracy (module-level list: survives KerasTuner's deepcopy)."""

        def on_epoch_end(self, epoch, logs=None):
            record((logs or {})["val_accuracy"])

    return Recorder()


def _fit(model, data, job, callbacks, epochs=None):
    return model.fit(data["x_train"], data["y_train"], validation_data=(data["x_val"], data["y_val"]),
                     batch_size=job["batch_size"], epochs=epochs or job["epochs"], verbose=0,
                     callbacks=callbacks)


def rss_mb(pid: int | None) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return None


# --------------------------------------------------------------------------- plain Keras


def keras_loop(job):
    """A plain sequential loop: build, fit, next (TensorFlow's default threads)."""
    import keras

    data = load_arrays(job["problem"], job["seed"])
    start = now()
    for cfg in job["configs"]:
        keras.backend.clear_session()
        keras.utils.set_random_seed(job["seed"])
        _fit(build_model(cfg, data["input_shape"], data["num_classes"]), data, job, [_recorder()])
    return {"search_s": now() - start, "trials": len(job["configs"]),
            "epochs": len(job["configs"]) * job["epochs"]}


def shard(job):
    """One of the two floor processes: one TF thread, its share of the configs."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    return keras_loop(job)


def two_proc(job):
    """The practical floor: two plain processes, 1 TF thread each, half the configs each."""
    here = Path(job["tmp"])
    procs = []
    for i in range(2):
        sub = {**job, "contestant": "shard", "configs": job["configs"][i::2]}
        jf, rf = here / f"shard{i}.json", here / f"shard{i}.result.json"
        jf.write_text(json.dumps(sub))
        env = {**os.environ, "OMP_NUM_THREADS": "1"}  # as Ray sets it for a 1-CPU worker
        procs.append((subprocess.Popen([sys.executable, "-m", "benchmarks.contestants", str(jf), str(rf)],
                                       env=env), rf))
    out = {"trials": 0, "epochs": 0, "search_s": 0.0}
    for p, rf in procs:
        if p.wait() != 0:
            raise RuntimeError(f"shard exited with {p.returncode}")
        r = json.loads(rf.read_text())
        EVENTS.extend(r["events"])  # same clock (BENCH_T0 inherited)
        out["trials"] += r["trials"]
        out["epochs"] += r["epochs"]
        out["search_s"] = max(out["search_s"], r["search_s"])
    EVENTS.sort()
    return out


# --------------------------------------------------------------------------- KerasTuner


def _kt_values(hp, space: dict[str, Any]) -> dict[str, Any]:
    values = {}
    for name, p in space.items():
        def make(name=name, p=p):
            if p["type"] == "int":
                return hp.Int(name, p["low"], p["high"], step=p.get("step", 1))
            if p["type"] == "float":
                return hp.Float(name, p["low"], p["high"], sampling="log" if p.get("log") else "linear")
            return hp.Choice(name, p["values"])

        if p.get("when"):
            ((parent, allowed),) = p["when"].items()
            with hp.conditional_scope(parent, allowed):
                v = make()
        else:
            v = make()
        if v is not None:
            values[name] = v
    return values


def _kt_build(job, data):
    import keras

    space = PROBLEMS[job["problem"]]["space"]

    def build(hp):
        keras.utils.set_random_seed(job["seed"])
        return build_model(_kt_values(hp, space), data["input_shape"], data["num_classes"])

    return build


def kt_fixed(job):
    """KerasTuner's RandomSearch machinery (its Tuner + RandomSearchOracle) fed the fixed configs."""
    import keras_tuner as kt
    from keras_tuner.src.engine.trial import TrialStatus

    class FixedOracle(kt.oracles.RandomSearchOracle):
        def __init__(self, configs, **kwargs):
            super().__init__(max_trials=len(configs), **kwargs)
            self._fixed = [dict(c) for c in configs]

        def populate_space(self, trial_id):
            if not self._fixed:
                return {"status": TrialStatus.STOPPED, "values": None}
            return {"status": TrialStatus.RUNNING, "values": self._fixed.pop(0)}

    data = load_arrays(job["problem"], job["seed"])
    tuner = kt.Tuner(
        oracle=FixedOracle(job["configs"], objective=kt.Objective("val_accuracy", "max"), seed=job["seed"]),
        hypermodel=_kt_build(job, data), directory=job["tmp"], project_name="kt", overwrite=True)
    start = now()
    tuner.search(data["x_train"], data["y_train"], validation_data=(data["x_val"], data["y_val"]),
                 epochs=job["epochs"], batch_size=job["batch_size"], verbose=0, callbacks=[_recorder()])
    return {"search_s": now() - start, "trials": len(tuner.oracle.trials), "epochs": len(EVENTS)}


def kt_hyperband(job):
    """KerasTuner Hyperband (max_epochs, factor 3, one iteration: KerasTuner decides the trial count)."""
    import keras_tuner as kt

    data = load_arrays(job["problem"], job["seed"])
    tuner = kt.Hyperband(_kt_build(job, data), objective="val_accuracy", max_epochs=job["epochs"],
                         factor=3, seed=job["seed"], directory=job["tmp"], project_name="kthb",
                         overwrite=True)
    start = now()
    tuner.search(data["x_train"], data["y_train"], validation_data=(data["x_val"], data["y_val"]),
                 batch_size=job["batch_size"], verbose=0, callbacks=[_recorder()])
    return {"search_s": now() - start, "trials": len(tuner.oracle.trials), "epochs": len(EVENTS)}


# --------------------------------------------------------------------------- Optuna in-process


def _optuna_suggest(trial, space: dict[str, Any]) -> dict[str, Any]:
    """The problem's space sampled through an Optuna trial (conditional entries when active)."""
    hp: dict[str, Any] = {}
    for name, p in space.items():
        if p.get("when") and not all(hp.get(k) in v for k, v in p["when"].items()):
            continue
        if p["type"] == "int":
            hp[name] = trial.suggest_int(name, p["low"], p["high"], step=p.get("step", 1))
        elif p["type"] == "float":
            hp[name] = trial.suggest_float(name, p["low"], p["high"], log=bool(p.get("log")))
        else:
            hp[name] = trial.suggest_categorical(name, p["values"])
    return hp


def optuna_hb(job):
    """Optuna TPE + HyperbandPruner in one process, val_accuracy reported every epoch."""
    import keras
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    data = load_arrays(job["problem"], job["seed"])
    space = PROBLEMS[job["problem"]]["space"]

    def suggest(trial):
        return _optuna_suggest(trial, space)

    def objective(trial):
        hp = suggest(trial)
        keras.backend.clear_session()
        keras.utils.set_random_seed(job["seed"])
        model = build_model(hp, data["input_shape"], data["num_classes"])
        state = {"best": 0.0, "pruned": False}

        class Report(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                v = float(logs["val_accuracy"])
                record(v)
                state["best"] = max(state["best"], v)
                trial.report(v, epoch)
                if trial.should_prune():
                    state["pruned"] = True
                    self.model.stop_training = True

        _fit(model, data, job, [Report()])
        if state["pruned"]:
            raise optuna.TrialPruned()
        return state["best"]

    study = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.TPESampler(seed=job["seed"]),
        pruner=optuna.pruners.HyperbandPruner(min_resource=1, max_resource=job["epochs"], reduction_factor=3))
    start = now()
    study.optimize(objective, n_trials=job["trials"])
    return {"search_s": now() - start, "trials": len(study.trials), "epochs": len(EVENTS)}


# --------------------------------------------------------------------------- Ray Tune


def _tune_recorder(rss: bool = False):
    from ray.tune import Callback

    class TuneRecorder(Callback):
        """Driver side: when each result arrives, its val_accuracy, iteration time, pid (and RSS)."""

        def __init__(self):
            self.iters: list[dict[str, Any]] = []

        def on_trial_result(self, iteration, trials, trial, result, **info):
            v = result.get("val_accuracy")
            if isinstance(v, (int, float)) and math.isfinite(v):
                record(v)
            rec = {"trial": trial.trial_id, "it": result.get("training_iteration"),
                   "dt": result.get("time_this_iter_s"), "pid": result.get("pid"), "t": round(now(), 3)}
            if rss:
                rec["rss_mb"] = rss_mb(result.get("pid"))
            self.iters.append(rec)

    return TuneRecorder()


def _ray_domains(space: dict[str, Any]) -> dict[str, Any]:
    from ray import tune

    out = {}
    for name, p in space.items():
        if p["type"] == "int":
            out[name] = tune.qrandint(p["low"], p["high"], p.get("step", 1))
        elif p["type"] == "float":
            out[name] = (tune.loguniform if p.get("log") else tune.uniform)(p["low"], p["high"])
        else:
            out[name] = tune.choice(p["values"])
    return out


def ray_keras_trainable(config, data=None, job=None):
    """A plain Ray Tune function trainable (what a Ray Tune user writes); no checkpoints."""
    import keras
    from ray import tune

    keras.backend.clear_session()
    keras.utils.set_random_seed(job["seed"])
    model = build_model(config, data["input_shape"], data["num_classes"])

    class Report(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            tune.report({"val_accuracy": float(logs["val_accuracy"]), "epoch": epoch + 1})

    if not job.get("purge"):
        _fit(model, data, job, [Report()])
        return
    # The leak fix, demonstrated (scenario D): every traced train step registers a
    # "CustomGradient-N" entry in TF's global gradient registry (Keras' optimizer all-reduce
    # goes through tf.custom_gradient) whose closure pins the whole FuncGraph; nothing ever
    # removes it (tensorflow/tensorflow#97697). Drop this trial's entries when it ends.
    from tensorflow.python.framework import ops as tf_ops

    registry = tf_ops._gradient_registry._registry
    before = set(registry)
    try:
        _fit(model, data, job, [Report()])
    finally:
        for name in [k for k in registry if k not in before and k.startswith("CustomGradient-")]:
            del registry[name]


def trivial_trainable(config):
    """Bookkeeping only: one result, no work."""
    from ray import tune

    tune.report({"val_accuracy": float(config["x"])})


def _tuner_run(job, trainable, param_space, tune_config_kwargs, rss=False, preinit=False):
    import ray
    from ray import tune

    rec = _tune_recorder(rss)
    start = now()  # with preinit, Ray is already up: Tune alone is timed
    if not preinit:
        ray.init(**RAY_INIT)
    tuner = tune.Tuner(
        trainable, param_space=param_space,
        tune_config=tune.TuneConfig(metric="val_accuracy", mode="max", **tune_config_kwargs),
        run_config=tune.RunConfig(name="ray", storage_path=job["tmp"], callbacks=[rec]))
    tuner.fit()
    search_s = now() - start
    if not preinit:
        ray.shutdown()
    return {"search_s": search_s, "trials": len({r["trial"] for r in rec.iters}),
            "epochs": len(rec.iters), "iters": rec.iters}


def ray_fixed(job):
    """Plain Ray Tune, the fixed configs via points_to_evaluate; reuse_actors per job (Ray's default: False)."""
    from ray import tune
    from ray.tune.search import BasicVariantGenerator

    data = load_arrays(job["problem"], job["seed"])
    small = {k: job[k] for k in ("seed", "epochs", "batch_size", "purge") if k in job}
    return _tuner_run(
        job, tune.with_parameters(ray_keras_trainable, data=data, job=small),
        _ray_domains(PROBLEMS[job["problem"]]["space"]),
        {"search_alg": BasicVariantGenerator(points_to_evaluate=job["configs"]),
         "num_samples": len(job["configs"]), "reuse_actors": job.get("reuse", False),
         **({"max_concurrent_trials": job["max_concurrent"]} if job.get("max_concurrent") else {})},
        rss=job.get("rss", False))


def ray_optuna_asha(job):
    """Ray Tune OptunaSearch (TPE) + ASHAScheduler, defaults apart from max_t = epochs."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    data = load_arrays(job["problem"], job["seed"])
    small = {k: job[k] for k in ("seed", "epochs", "batch_size")}
    return _tuner_run(
        job, tune.with_parameters(ray_keras_trainable, data=data, job=small),
        _ray_domains(PROBLEMS[job["problem"]]["space"]),
        {"search_alg": OptunaSearch(seed=job["seed"]), "scheduler": ASHAScheduler(max_t=job["epochs"]),
         "num_samples": job["trials"]})


def ray_trivial(job):
    """Plain Ray Tune over trivial trials (Ray started before the clock)."""
    import ray
    from ray import tune

    ray.init(**RAY_INIT)
    try:
        return _tuner_run(job, trivial_trainable, {"x": tune.uniform(0, 1)},
                          {"num_samples": job["trials"], "reuse_actors": job.get("reuse", False)},
                          preinit=True)
    finally:
        ray.shutdown()


# --------------------------------------------------------------------------- the pipeline


def _pipeline_spec(job, **sections) -> dict[str, Any]:
    prob = PROBLEMS[job["problem"]]
    spec = {
        "name": f"bench-{job['scenario']}-{job['contestant']}",
        "data": dict(prob["data"]),
        "model": {"builder": "mlp"},
        "space": prob["space"],
        "training": {"epochs": job["epochs"], "batch_size": job["batch_size"], "optimizer": "adam"},
        "objective": {"metric": "val_accuracy", "mode": "max"},
        "resources": {"cpu": 1},
        "search": {"max_concurrent": 2},
        "storage": str(Path(job["tmp"]) / "results"),
        "seed": job["seed"],
    }
    for key, value in sections.items():
        spec[key] = {**spec[key], **value} if isinstance(spec.get(key), dict) and key != "space" else value
    return spec


def _run_pipeline(spec, rss=False, preinit=False, **kwargs):
    """``pipeline.run`` with a recorder hooked into its progress callback (no pipeline edits)."""
    import pipeline
    import pipeline.progress as progress

    rec = _tune_recorder(rss)
    base = progress.Progress

    class RecordingProgress(base):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            rec.on_trial_result(iteration, trials, trial, result, **info)
            return super().on_trial_result(iteration, trials, trial, result, **info)

    progress.Progress = RecordingProgress
    start = now()
    try:
        pipeline.run(spec, **kwargs)
    finally:
        progress.Progress = base
    out = {"search_s": now() - start, "trials": len({r["trial"] for r in rec.iters}),
           "epochs": len(rec.iters), "iters": rec.iters}
    if not rec.iters:
        out["warning"] = "recorder saw no results: pipeline.runner no longer uses pipeline.progress.Progress?"
    return out


def pipeline_fixed(job):
    """The pipeline: searcher manual (points_to_evaluate = the fixed configs), fifo."""
    return _run_pipeline(_pipeline_spec(
        job, searcher={"name": "manual", "points_to_evaluate": job["configs"]}, scheduler={"name": "fifo"}))


def pipeline_tpe_asha(job):
    """The pipeline: searcher tpe, scheduler asha (its defaults), ``trials`` trials."""
    return _run_pipeline(_pipeline_spec(
        job, searcher={"name": "tpe"}, scheduler={"name": "asha"}, search={"trials": job["trials"]}))


def pipeline_trivial(job):
    """pipeline.run(trainable=trivial) over a one-parameter space (Ray started before the clock)."""
    import ray

    spec = _pipeline_spec(job, space={"x": {"type": "float", "low": 0.0, "high": 1.0}},
                          searcher={"name": "random"}, search={"trials": job["trials"]})
    ray.init(**RAY_INIT)  # pipeline's ray_session reuses an initialized Ray
    try:
        return _run_pipeline(spec, trainable=trivial_trainable)
    finally:
        ray.shutdown()


def pipeline_leak(job):
    """The fixed configs as one-epoch Keras trials, one at a time (one reused worker); worker RSS per result."""
    spec = _pipeline_spec(job, searcher={"name": "manual", "points_to_evaluate": job["configs"]},
                          search={"max_concurrent": 1})
    return _run_pipeline(spec, rss=True)


def ray_leak(job):
    """Reference for D: plain Ray Tune, reuse_actors, clear_session per trial, one at a time."""
    return ray_fixed({**job, "reuse": True, "rss": True, "max_concurrent": 1})


def _note_rss(path: str) -> None:
    """Append this process's pid and VmRSS (run inside a trial's worker, at the trial's start)."""
    pid = os.getpid()
    with open(path, "a") as f:
        f.write(json.dumps({"pid": pid, "rss_mb": rss_mb(pid), "t": time.time()}) + "\n")


def _rss_rows(path: str) -> list[dict]:
    p = Path(path)
    return [json.loads(line) for line in p.read_text().splitlines()] if p.exists() else []


def kt_front_leak(job):
    """D through the KerasTuner front door: RandomSearch, one trial at a time, 1 epoch each.

    The worker notes its RSS as each trial builds its model (configs are KerasTuner-style
    random draws from the same space, not the fixed list: the front door samples them).
    """
    from pipeline.compat import keras_tuner as kt

    data = load_arrays(job["problem"], job["seed"])
    space = PROBLEMS[job["problem"]]["space"]
    log = str(Path(job["tmp"]) / "rss.jsonl")
    shape, classes = data["input_shape"], data["num_classes"]

    def build(hp):
        _note_rss(log)
        return build_model(_kt_values(hp, space), shape, classes)

    tuner = kt.RandomSearch(build, objective="val_accuracy", max_trials=len(job["configs"]),
                            seed=job["seed"], directory=job["tmp"], project_name="ktleak",
                            overwrite=True, max_concurrent_trials=1)
    start = now()
    tuner.search(data["x_train"], data["y_train"], validation_data=(data["x_val"], data["y_val"]),
                 epochs=job["epochs"], batch_size=job["batch_size"], verbose=0)
    return {"search_s": now() - start, "trials": len(_rss_rows(log)), "iters": _rss_rows(log)}


def optuna_front_leak(job):
    """D through the Optuna front door: the fixed configs enqueued, ``n_jobs=1``, 1 epoch each."""
    import keras

    from pipeline.compat import optuna

    data = load_arrays(job["problem"], job["seed"])
    space = PROBLEMS[job["problem"]]["space"]
    log = str(Path(job["tmp"]) / "rss.jsonl")

    def objective(trial):
        _note_rss(log)
        hp = _optuna_suggest(trial, space)
        keras.backend.clear_session()
        model = build_model(hp, data["input_shape"], data["num_classes"])
        hist = _fit(model, data, job, [])
        return float(hist.history["val_accuracy"][-1])

    study = optuna.create_study(direction="maximize")  # results under the scratch folder (cwd)
    for cfg in job["configs"]:
        study.enqueue_trial({k: v for k, v in cfg.items() if k in space})
    start = now()
    study.optimize(objective, n_trials=len(job["configs"]), n_jobs=1)
    return {"search_s": now() - start, "trials": len(study.trials), "iters": _rss_rows(log)}


CONTESTANTS = {f.__name__: f for f in (
    keras_loop, shard, two_proc, kt_fixed, kt_hyperband, optuna_hb, ray_fixed, ray_optuna_asha,
    ray_trivial, pipeline_fixed, pipeline_tpe_asha, pipeline_trivial, pipeline_leak, ray_leak,
    kt_front_leak, optuna_front_leak)}


def main(job_path: str, result_path: str) -> None:
    job = json.loads(Path(job_path).read_text())
    os.chdir(job["tmp"])  # stray files (Ray, KerasTuner) land in the scratch folder
    out = CONTESTANTS[job["contestant"]](job)
    out["events"] = EVENTS
    out["done_t"] = round(now(), 3)
    Path(result_path).write_text(json.dumps(out))


if __name__ == "__main__":
    main(*sys.argv[1:3])
