"""Speed of the pipeline against peers on the same problem; see benchmarks/README.md.

    .venv/bin/python benchmarks/compare.py [--quick] [--reps N] [--only A,B,C.pipeline]
                                           [--out benchmarks/out/results.json]

Every run of every contestant is its own process (fresh TensorFlow and Ray), started by
this script, which times it from spawn to exit (``wall``). Repetitions are interleaved:
each repetition runs every contestant of the scenario once, in an order rotated from one
repetition to the next, so slow drifts of the machine hit everyone alike. Figures are the
median over repetitions.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.contestants import PROBLEMS, fixed_configs  # noqa: E402  (light: no TF, no Ray)

CONFIG_SEED = 2024  # the fixed configs of scenarios A, D, E1
PIPELINE = "pipeline"


def scenarios(quick: bool) -> dict[str, dict]:
    """Scenario -> problem, sizes and contestants ``(key, label, contestant function, job extras)``."""
    fixed = 4 if quick else 20
    epochs = 2 if quick else 10
    small = 4 if quick else 12
    return {
        "A": {
            "title": "fixed search: the same {n} configs x {e} epochs",
            "problem": "digits", "trials": fixed, "epochs": epochs, "configs": fixed,
            "contestants": [
                ("two_proc", "two processes, 1 TF thread (floor)", "two_proc", {}),
                (PIPELINE, "pipeline (manual, 2 concurrent)", "pipeline_fixed", {}),
                ("kt_random", "KerasTuner RandomSearch (fixed)", "kt_fixed", {}),
                ("keras_loop", "plain sequential Keras loop", "keras_loop", {}),
                ("ray_defaults", "Ray Tune defaults (reuse off)", "ray_fixed", {"reuse": False}),
                ("ray_reuse", "Ray Tune reuse_actors=True", "ray_fixed", {"reuse": True}),
            ],
        },
        "B": {
            "title": "early stopping: {n} trials, at most {e} epochs",
            "problem": "digits", "trials": fixed, "epochs": epochs,
            "contestants": [
                ("kt_hyperband", "KerasTuner Hyperband (factor 3)", "kt_hyperband", {}),
                (PIPELINE, "pipeline (tpe + asha)", "pipeline_tpe_asha", {}),
                ("optuna", "Optuna TPE + HyperbandPruner", "optuna_hb", {}),
                ("ray_optuna_asha", "Ray Tune OptunaSearch + ASHA", "ray_optuna_asha", {}),
            ],
        },
        "C": {
            "title": "bookkeeping: {n} trivial trials (one report each)",
            "problem": "digits", "trials": 40 if quick else 500, "epochs": 1,
            "contestants": [
                ("ray_reuse", "Ray Tune reuse_actors=True", "ray_trivial", {"reuse": True}),
                (PIPELINE, "pipeline.run(trainable=trivial)", "pipeline_trivial", {}),
                ("ray_defaults", "Ray Tune defaults (reuse off)", "ray_trivial",
                 {"reuse": False, "trials": 10 if quick else 100}),
            ],
        },
        "D": {
            "title": "leak: worker RSS over {n} one-epoch Keras trials, one at a time",
            "problem": "digits", "trials": 8 if quick else 100, "epochs": 1, "configs": 8 if quick else 100,
            "reps": 1,
            "contestants": [
                (PIPELINE, "pipeline (one reused worker)", "pipeline_leak", {}),
                ("kt_front", "pipeline's KerasTuner front door", "kt_front_leak", {}),
                ("optuna_front", "pipeline's Optuna front door (n_jobs=1)", "optuna_front_leak", {}),
                ("ray_reuse", "Ray Tune reuse_actors (reference)", "ray_leak", {}),
                ("ray_reuse_purge", "Ray Tune reuse + registry purge (fix)", "ray_leak", {"purge": True}),
            ],
        },
        "E1": {
            "title": "mnist1d fixed search: the same {n} MLP/CNN configs x {e} epochs",
            "problem": "mnist1d", "trials": small, "epochs": epochs, "configs": small,
            "contestants": [
                ("two_proc", "two processes, 1 TF thread (floor)", "two_proc", {}),
                (PIPELINE, "pipeline (manual, 2 concurrent)", "pipeline_fixed", {}),
                ("kt_random", "KerasTuner RandomSearch (fixed)", "kt_fixed", {}),
                ("ray_defaults", "Ray Tune defaults (reuse off)", "ray_fixed", {"reuse": False}),
            ],
        },
        "E2": {
            "title": "mnist1d early stopping: {n} trials, at most {e} epochs",
            "problem": "mnist1d", "trials": small, "epochs": epochs,
            "contestants": [
                ("kt_hyperband", "KerasTuner Hyperband (factor 3)", "kt_hyperband", {}),
                (PIPELINE, "pipeline (tpe + asha)", "pipeline_tpe_asha", {}),
                ("optuna", "Optuna TPE + HyperbandPruner", "optuna_hb", {}),
            ],
        },
    }


# --------------------------------------------------------------------------- machine


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "-"


def machine() -> dict:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 1024 ** 2:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass

    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                                  timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return "?"

    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(), "nproc": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu": model, "memory": mem, "loadavg_start": os.getloadavg(),
        "python": platform.python_version(), "os": platform.platform(),
        "versions": {d: _version(d) for d in ("tensorflow", "keras", "ray", "optuna", "keras-tuner",
                                                "scikit-learn", "numpy", "mnist1d")},
        "git": git("rev-parse", "--short", "HEAD"),
        "git_dirty": bool(git("status", "--porcelain", "--", "pipeline", "searchers", "cluster")),
    }


# --------------------------------------------------------------------------- running


def child_env(ray_tmp: Path, t0: float) -> dict[str, str]:
    """Environment of a contestant process: the repo importable (also by Ray workers), TF quiet."""
    env = dict(os.environ)
    env.update({"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
                "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1",
                # A private Ray temp dir: ray.init() then never joins a cluster someone
                # started with `ray start` on this machine, and cleanup is ours.
                "RAY_TMPDIR": str(ray_tmp), "BENCH_T0": repr(t0)})
    env.pop("RAY_ADDRESS", None)
    return env


def run_one(out_dir: Path, scen_key: str, scen: dict, key: str, fn: str, extras: dict, rep: int,
            configs: list | None, ray_tmp: Path, timeout: float, keep: bool) -> dict:
    name = f"{scen_key}-{key}-r{rep}"
    tmp = out_dir / "tmp" / name
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    job = {"scenario": scen_key, "contestant": fn, "problem": scen["problem"], "trials": scen["trials"],
           "epochs": scen["epochs"], "batch_size": PROBLEMS[scen["problem"]]["batch_size"], "seed": 0,
           "configs": configs, "tmp": str(tmp), **extras}
    job_file, result_file = tmp / "job.json", out_dir / "runs" / f"{name}.json"
    job_file.write_text(json.dumps(job))
    result_file.parent.mkdir(parents=True, exist_ok=True)
    result_file.unlink(missing_ok=True)
    log_file = out_dir / "logs" / f"{name}.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()[0]
    with open(log_file, "w") as log:
        t0 = time.time()
        env = child_env(ray_tmp, t0)
        proc = subprocess.Popen([sys.executable, "-m", "benchmarks.contestants", str(job_file),
                                 str(result_file)], cwd=ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            rc = "timeout"
        wall = time.time() - t0
    run = {"scenario": scen_key, "key": key, "rep": rep, "contestant": fn, "wall_s": round(wall, 3),
           "loadavg_before": round(load, 2), "rc": rc, "log": str(log_file.relative_to(out_dir))}
    if rc == 0 and result_file.exists():
        run.update(json.loads(result_file.read_text()))
    else:
        tail = log_file.read_text(errors="replace").splitlines()[-15:]
        run["error"] = f"exit {rc}: " + " | ".join(tail)
    if not keep:
        shutil.rmtree(tmp, ignore_errors=True)
    return run


# --------------------------------------------------------------------------- summaries


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarize_run(run: dict, target: float) -> dict:
    events = run.get("events") or []
    best = max((v for _, v in events), default=None)
    ttt = next((t for t, v in sorted(events) if v >= target), math.inf) if "error" not in run else None
    return {"best": best, "ttt": ttt}


def breakdown(iters: list[dict], epochs: int) -> dict | None:
    """Per-trial timeline from Tune's ``time_this_iter_s``: cold/warm first epoch, steady, last."""
    if not iters:
        return None
    trials: dict[str, list[dict]] = {}
    for r in iters:
        trials.setdefault(r["trial"], []).append(r)
    seen_pids, cold, warm, steady, last = set(), [], [], [], []
    for rows in sorted(trials.values(), key=lambda rows: min(r["t"] for r in rows)):
        rows.sort(key=lambda r: r["it"] or 0)
        first = rows[0]
        (warm if first["pid"] in seen_pids else cold).append(first["dt"])
        seen_pids.add(first["pid"])
        steady += [r["dt"] for r in rows[1:-1]]
        if len(rows) == epochs and epochs >= 2:
            last.append(rows[-1]["dt"])
    return {"workers": len(seen_pids), "cold_first": _median(cold), "n_cold": len(cold),
            "warm_first": _median(warm), "steady": _median(steady), "last": _median(last)}


def leak_summary(iters: list[dict]) -> dict | None:
    """RSS of the worker that ran the most trials (Tune may alternate between two cached actors)."""
    rows = [r for r in iters if r.get("rss_mb") is not None]
    if not rows:
        return None
    by_pid: dict = {}
    for r in sorted(rows, key=lambda r: r["t"]):
        by_pid.setdefault(r["pid"], []).append(r["rss_mb"])
    rss = max(by_pid.values(), key=len)
    n = len(rss)
    half = rss[n // 2:]
    slope = None
    if len(half) >= 3:  # least squares MB per trial over the second half
        xs = list(range(len(half)))
        mx, my = statistics.fmean(xs), statistics.fmean(half)
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, half)) / sum((x - mx) ** 2 for x in xs)
    return {"trials": len(rows), "pids": len(by_pid), "trials_on_worker": n, "first_mb": rss[0],
            "tenth_mb": rss[min(9, n - 1)], "last_mb": rss[-1], "max_mb": max(rss),
            "growth_mb": rss[-1] - rss[0], "slope_mb_per_trial_2nd_half": slope}


def summarize(scen_key: str, scen: dict, runs: list[dict]) -> dict:
    target = PROBLEMS[scen["problem"]]["target"]
    out = {}
    for key, label, fn, extras in scen["contestants"]:
        mine = [r for r in runs if r["scenario"] == scen_key and r["key"] == key]
        ok = [r for r in mine if "error" not in r]
        per = [summarize_run(r, target) for r in ok]
        trials_req = extras.get("trials", scen["trials"])
        s = {
            "label": label, "reps": len(ok), "failed": len(mine) - len(ok),
            "wall_s": _median([r["wall_s"] for r in ok]),
            "search_s": _median([r.get("search_s") for r in ok]),
            "best": _median([p["best"] for p in per]),
            "ttt_s": _median([p["ttt"] for p in per]),
            "trials": _median([r.get("trials") for r in ok]),
            "epochs": _median([r.get("epochs") for r in ok]),
            "trials_requested": trials_req,
        }
        if s["search_s"] is not None and trials_req:
            s["per_trial_ms"] = 1000 * s["search_s"] / trials_req
        # Throughput once running: first to last result, without set-up and teardown.
        s["steady_ms"] = _median([1000 * (ts[-1] - ts[0]) / (len(ts) - 1)
                                  for ts in (sorted(i["t"] for i in r.get("iters") or []) for r in ok)
                                  if len(ts) > 1])
        if ok and ok[-1].get("iters") and all("trial" in r for r in ok[-1]["iters"]):
            s["breakdown"] = breakdown(ok[-1]["iters"], scen["epochs"])
        if ok and ok[-1].get("iters"):
            if scen_key == "D":  # front doors' rows: RSS noted by the trial itself, no timeline
                s["leak"] = leak_summary(ok[-1]["iters"])
        if ok and ok[-1].get("warning"):
            s["warning"] = ok[-1]["warning"]
        out[key] = s
    return out


def run_line(scen_key: str, scen: dict, run: dict) -> str:
    """One line per finished run, while the benchmark goes on."""
    if "error" in run:
        return "FAILED: " + run["error"][-400:]
    line = f"{run['wall_s']:.1f}s wall, {run.get('trials')} trials"
    if scen_key == "C":
        return line + f", Tune {run.get('search_s', 0):.1f}s"
    if scen_key == "D":
        lk = leak_summary(run.get("iters") or [])
        return line + (f", RSS {lk['first_mb']:.0f} -> {lk['last_mb']:.0f} MB" if lk else ", no RSS samples")
    s = summarize_run(run, PROBLEMS[scen["problem"]]["target"])
    unit = "" if s["ttt"] in (None, math.inf) else "s"
    return line + (f", best {_fmt(s['best'], '.4f')}, t>=target {_fmt(s['ttt'])}{unit}, "
                   f"load {run['loadavg_before']}")


def _fmt(v, spec=".1f", none="-"):
    if v is None:
        return none
    if isinstance(v, float) and math.isinf(v):
        return "never"
    return format(v, spec)


def _ratio(a, b):
    if a is None or b is None or b == 0 or (isinstance(a, float) and math.isinf(a)) \
            or (isinstance(b, float) and math.isinf(b)):
        return None
    return a / b


def print_table(scen_key: str, scen: dict, summ: dict, reps: int) -> None:
    target = PROBLEMS[scen["problem"]]["target"]
    pipe = summ.get(PIPELINE, {})
    print(f"\n== {scen_key}. {scen['title']} ({scen['problem']}; median of {reps} rep(s))")
    if scen_key == "C":
        print(f"{'contestant':36} {'trials':>6} {'wall s':>8} {'Tune s':>8} {'ms/trial':>9} {'pipe/this':>9}"
              f" {'steady ms':>9} {'pipe/this':>9}")
        for key, s in summ.items():
            r = _ratio(pipe.get("per_trial_ms"), s.get("per_trial_ms"))
            r2 = _ratio(pipe.get("steady_ms"), s.get("steady_ms"))
            print(f"{s['label'][:36]:36} {_fmt(s['trials_requested'], 'd'):>6} {_fmt(s['wall_s']):>8} "
                  f"{_fmt(s['search_s']):>8} {_fmt(s.get('per_trial_ms')):>9} {_fmt(r, '.2f'):>9}"
                  f" {_fmt(s.get('steady_ms')):>9} {_fmt(r2, '.2f'):>9}")
        if "ray_defaults" in summ:
            d = summ["ray_defaults"]
            if d.get("per_trial_ms") is not None:
                print(f"  (Ray Tune defaults ran {d['trials_requested']} trials, scaled per trial: "
                      f"{scen['trials']} trials would take ~{d['per_trial_ms'] * scen['trials'] / 1000:.0f} s)")
        print("  Tune s: Tuner.fit / pipeline.run with Ray already started; ms/trial = Tune s / trials (the target);\n"
              "  steady ms: first to last result / (trials - 1), i.e. without set-up and teardown")
        return
    if scen_key == "D":
        for key, s in summ.items():
            lk = s.get("leak")
            if not lk:
                print(f"{s['label']:36} no RSS samples" + (f" ({s.get('warning')})" if s.get("warning") else ""))
                continue
            print(f"{s['label'][:36]:36} trials {lk['trials']}, workers {lk['pids']} (busiest ran "
                  f"{lk['trials_on_worker']}): RSS first "
                  f"{lk['first_mb']:.0f} MB, 10th {lk['tenth_mb']:.0f}, last {lk['last_mb']:.0f}, "
                  f"max {lk['max_mb']:.0f}, growth {lk['growth_mb']:+.0f} MB"
                  + (f", {lk['slope_mb_per_trial_2nd_half']:+.2f} MB/trial (2nd half)"
                     if lk["slope_mb_per_trial_2nd_half"] is not None else ""))
        return
    print(f"{'contestant':36} {'trials':>6} {'epochs':>6} {'wall s':>8} {'best val':>8} "
          f"{'t>=' + format(target, '.2f') + ' s':>9} {'pipe/this':>9} {'ttt ratio':>9}")
    for key, s in summ.items():
        if not s["reps"]:
            print(f"{s['label'][:36]:36} FAILED ({s['failed']} run(s); see logs)")
            continue
        print(f"{s['label'][:36]:36} {_fmt(s['trials'], '.0f'):>6} {_fmt(s['epochs'], '.0f'):>6} "
              f"{_fmt(s['wall_s']):>8} {_fmt(s['best'], '.4f'):>8} {_fmt(s['ttt_s']):>9} "
              f"{_fmt(_ratio(pipe.get('wall_s'), s['wall_s']), '.2f'):>9} "
              f"{_fmt(_ratio(pipe.get('ttt_s'), s['ttt_s']), '.2f'):>9}")
    rows = [(s["label"], s["breakdown"]) for s in summ.values() if s.get("breakdown")]
    if rows:
        print("  per-trial timeline, median s (Tune's time_this_iter_s): cold = a worker's first trial "
              "(imports + build + trace + epoch 1),\n  warm = later trials' epoch 1 (build + trace), "
              "steady = epochs 2..n-1, last = final epoch (pipeline: + checkpoint)")
        for label, b in rows:
            print(f"  {label[:36]:36} workers {b['workers']:>3}  cold {_fmt(b['cold_first'], '.2f')} "
                  f"(x{b['n_cold']})  warm {_fmt(b['warm_first'], '.2f')}  steady {_fmt(b['steady'], '.3f')}"
                  f"  last {_fmt(b['last'], '.3f')}")
    for s in summ.values():
        if s.get("warning"):
            print(f"  warning ({s['label']}): {s['warning']}")


def check_targets(summ: dict[str, dict]) -> list[dict]:
    out = []

    def add(name, value, limit, cmp, note=""):
        ok = None if value is None else (value <= limit if cmp == "<=" else value >= limit)
        out.append({"target": name, "value": value, "limit": limit, "cmp": cmp, "pass": ok, "note": note})

    a = summ.get("A")
    if a and PIPELINE in a:
        p = a[PIPELINE]["wall_s"]
        for key, limit in (("two_proc", 1.1), ("kt_random", 0.7), ("ray_defaults", 0.4)):
            if key in a:
                add(f"1: A wall pipeline / {a[key]['label']}", _ratio(p, a[key]["wall_s"]), limit, "<=")
    b = summ.get("B")
    if b and PIPELINE in b:
        pb = b[PIPELINE]["best"]
        for key in ("kt_hyperband", "optuna"):
            if key in b and pb is not None and b[key]["best"] is not None:
                add(f"2: B best val acc pipeline - {b[key]['label']}", pb - b[key]["best"], 0.0, ">=")
        if "kt_hyperband" in b:
            add(f"2: B wall pipeline / {b['kt_hyperband']['label']}",
                _ratio(b[PIPELINE]["wall_s"], b["kt_hyperband"]["wall_s"]), 0.5, "<=")
    c = summ.get("C")
    if c and PIPELINE in c:
        p = c[PIPELINE].get("per_trial_ms")
        for key, limit in (("ray_reuse", 1.2), ("ray_defaults", 0.1)):
            if key in c:
                add(f"3: C per-trial pipeline / {c[key]['label']}", _ratio(p, c[key].get("per_trial_ms")),
                    limit, "<=")
    d = summ.get("D")
    if d and PIPELINE in d and d[PIPELINE].get("leak"):
        lk = d[PIPELINE]["leak"]
        add(f"4: D worker RSS growth over {lk['trials']} trials (MB)", lk["growth_mb"], 50.0, "<=")
    return out


def print_targets(targets: list[dict], quick: bool) -> None:
    print("\n== Targets" + (" (--quick: sizes too small for the targets to mean anything)" if quick else ""))
    for t in targets:
        verdict = {True: "PASS", False: "FAIL", None: "n/a"}[t["pass"]]
        print(f"  {verdict:4}  {t['target']}: {_fmt(t['value'], '.3f')} (want {t['cmp']} {t['limit']})")


# --------------------------------------------------------------------------- main


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny sizes, 1 repetition: checks the script works")
    ap.add_argument("--reps", type=int, default=None, help="repetitions (default 3; --quick: 1); D runs once")
    ap.add_argument("--only", default=None,
                    help="comma list of scenarios (A,B,C,D,E = E1+E2) or SCENARIO.contestant keys")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "results.json"))
    ap.add_argument("--timeout", type=float, default=None, help="seconds per run (default 1800; --quick 600)")
    ap.add_argument("--keep", action="store_true", help="keep each run's scratch folder (results, KerasTuner)")
    ap.add_argument("--trials", type=int, default=None,
                    help="override the trial count of the selected scenarios (diagnosis; not comparable)")
    ap.add_argument("--list", action="store_true", help="list scenarios and contestant keys, run nothing")
    args = ap.parse_args(argv)
    reps = args.reps or (1 if args.quick else 3)
    timeout = args.timeout or (600 if args.quick else 1800)
    all_scen = scenarios(args.quick)
    if args.list:
        for k, s in all_scen.items():
            print(f"{k}: {s['title'].format(n=s['trials'], e=s['epochs'])} [{s['problem']}]")
            for key, label, fn, _ in s["contestants"]:
                print(f"   {k}.{key:16} {label} ({fn})")
        return 0

    selected: dict[str, set | None] = {}
    if args.only:
        for item in (x.strip() for x in args.only.split(",") if x.strip()):
            scen, _, key = item.partition(".")
            names = ["E1", "E2"] if scen == "E" else [scen]
            for n in names:
                if n not in all_scen:
                    ap.error(f"--only: unknown scenario '{scen}' (known: A B C D E E1 E2)")
                if key:
                    if key not in {c[0] for c in all_scen[n]["contestants"]}:
                        ap.error(f"--only: scenario {n} has no contestant '{key}' (see --list)")
                    if selected.get(n, set()) is not None:
                        selected.setdefault(n, set()).add(key)
                else:
                    selected[n] = None
    else:
        selected = {k: None for k in all_scen}

    out_path = Path(args.out).resolve()
    out_dir = out_path.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    ray_tmp = Path(f"/tmp/rbench-{os.getpid()}")  # short: Ray's socket paths must stay < 108 chars
    info = machine()
    print(f"machine: {info['host']} | nproc {info['nproc']} (usable {info['usable_cpus']}) | {info['cpu']} | "
          f"{info['memory']} | load {' '.join(f'{x:.2f}' for x in info['loadavg_start'])}")
    print(f"python {info['python']} | " + " ".join(f"{k} {v}" for k, v in info["versions"].items())
          + f" | git {info['git']}{' (pipeline code modified)' if info['git_dirty'] else ''}")
    print(f"mode: {'quick' if args.quick else 'full'}, reps {reps}, scenarios "
          f"{', '.join(k + ('' if v is None else '(' + ','.join(sorted(v)) + ')') for k, v in selected.items())}")

    report = {"machine": info, "args": vars(args), "reps": reps, "runs": [], "summary": {}, "targets": []}
    started = time.time()
    try:
        for scen_key, keys in selected.items():
            scen = dict(all_scen[scen_key])
            if args.trials:
                scen["trials"] = args.trials
                scen["configs"] = args.trials if scen.get("configs") else None
            scen["title"] = scen["title"].format(n=scen["trials"], e=scen["epochs"])
            all_scen[scen_key] = scen
            scen["contestants"] = [c for c in scen["contestants"] if keys is None or c[0] in keys]
            configs = fixed_configs(scen["problem"], scen["configs"], CONFIG_SEED) if scen.get("configs") else None
            n_reps = scen.get("reps", reps)
            order = scen["contestants"]
            for rep in range(n_reps):
                k = rep % len(order)
                for key, label, fn, extras in order[k:] + order[:k]:
                    print(f"[{time.time() - started:6.0f}s] {scen_key} rep {rep + 1}/{n_reps}: {label} ...",
                          end=" ", flush=True)
                    run = run_one(out_dir, scen_key, scen, key, fn, extras, rep, configs, ray_tmp,
                                  timeout, args.keep)
                    print(run_line(scen_key, scen, run), flush=True)
                    report["runs"].append(run)
                    out_path.write_text(json.dumps(report, indent=1))
            report["summary"][scen_key] = summarize(scen_key, scen, report["runs"])
            report["summary"][scen_key]["_meta"] = {"title": scen["title"], "problem": scen["problem"],
                                                    "reps": n_reps}
            out_path.write_text(json.dumps(report, indent=1))
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)

    summaries = {k: {kk: vv for kk, vv in v.items() if kk != "_meta"} for k, v in report["summary"].items()}
    for scen_key, summ in summaries.items():
        scen = all_scen[scen_key]
        print_table(scen_key, scen, summ, report["summary"][scen_key]["_meta"]["reps"])
    report["targets"] = check_targets(summaries)
    print_targets(report["targets"], args.quick)
    report["machine"]["loadavg_end"] = os.getloadavg()
    report["total_s"] = round(time.time() - started, 1)
    out_path.write_text(json.dumps(report, indent=1))
    print(f"\n{len(report['runs'])} runs in {report['total_s']:.0f}s; raw results: {out_path}")
    return 1 if any("error" in r for r in report["runs"]) else 0


if __name__ == "__main__":
    sys.exit(main())
