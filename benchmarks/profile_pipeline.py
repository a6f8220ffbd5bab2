"""Profile one pipeline run of scenario A (or C) with py-spy and say where the CPU time goes.

    .venv/bin/python benchmarks/profile_pipeline.py [--quick] [--scenario A|C] [--trials N] [--epochs E]

Runs the same process ``compare.py`` runs for ``A.pipeline`` (``C.pipeline``) under
``py-spy record --subprocesses`` (driver, Ray workers and Ray's Python daemons are all
sampled; only on-CPU samples are kept), stores the raw collapsed stacks in
``benchmarks/out/profile/pipeline_<A|C>.raw.txt`` and prints CPU seconds by process role
(driver / trial worker / Ray daemons) and by activity (imports, TF tracing, fit steps,
checkpoint saving, Tune bookkeeping, ...), plus the hottest functions of each role.
py-spy pauses a process to sample it, which slows the run (~1.5x here): read the shares, not the absolute seconds.
py-spy: ``.venv/bin/pip install py-spy``.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.compare import CONFIG_SEED, child_env  # noqa: E402
from benchmarks.contestants import PROBLEMS, fixed_configs  # noqa: E402

# (category, substrings). Frames are normalized to ``path:Class.function`` (site-packages
# stripped). A sample goes to the first category one of whose substrings occurs in any
# frame of its stack (``leaf:`` substrings: in the innermost frame only). Order matters:
# an import inside fit() is an import.
RULES = [
    ("imports", ["_find_and_load"]),
    ("waits (lock/queue/select; idle misread as CPU under load)",
     ["leaf:threading.py:Condition.wait", "leaf:selectors.py", "leaf:queue.py", "leaf:threading.py:Event.wait",
      "leaf:ray/_private/worker.py:Worker.main_loop"]),
    ("ray.init / shutdown", ["ray/_private/worker.py:init", "worker.py:shutdown", "ray/_private/node.py",
                             "ray/_private/services.py"]),
    ("checkpoint: model.save", ["saving_lib.py", "saving_api.py", "Model.save"]),
    ("checkpoint: persist / tmp dirs", ["persist_current_checkpoint", "StorageContext", "pyarrow/fs.py",
                                        "Checkpoint.from_directory", "shutil.py", "tempfile.py"]),
    ("TF tracing (tf.function build)", ["func_graph.py", "autograph", "polymorphic_function/tracing",
                                        "Function._initialize", "_maybe_define", "trace_type",
                                        "ConcreteFunction.__init__", "from_func_graph", "TracingCompiler"]),
    ("tf.data iterator creation (per epoch)", ["make_iterator", "OwnedIterator.__init__", "DatasetV2.__iter__",
                                               "data_adapters/"]),
    ("fit: train/val steps", ["TensorFlowTrainer.fit", "TensorFlowTrainer.evaluate", "quick_execute"]),
    ("model build + compile", ["build_model", "compile_model", "Trainer.compile", "Functional.__init__",
                               "Layer.__call__", "Operation.__call__"]),
    ("keras.clear_session / seed", ["clear_session", "set_random_seed"]),
    ("tune.report / session", ["trainable_fn_utils.py:report", "_TrainSession.report",
                               "_report_training_result", "FunctionTrainable.step", "_TrainSession.get_next"]),
    ("searcher / scheduler", ["ray/tune/search/", "ray/tune/schedulers/", "searchers/"]),
    ("experiment state / result logging", ["experiment_state.py", "ray/tune/logger/", "json_logger"]),
    ("Tune callbacks / progress", ["pipeline/progress.py", "TuneRecorder", "RecordingProgress", "ray/tune/callback.py",
                                   "progress_reporter", "ray/tune/experimental/output"]),
    ("Tune controller / actor mgmt", ["tune_controller.py", "ray/air/execution/", "ray/tune/execution/",
                                      "ray/tune/experiment/trial.py"]),
    ("spec / space / data (pipeline)", ["pipeline/spec.py", "pipeline/space.py", "pipeline/data.py",
                                        "pydantic", "sklearn"]),
    ("Ray core (get/put, serialization, rpc)", ["ray/_private/serialization", "ray/_raylet", "cloudpickle",
                                                "ray/_private/worker.py", "ray/actor.py", "ray/util/"]),
    ("TensorFlow / Keras (other)", ["tensorflow/", "keras/"]),
]

FRAME_RE = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def role(cmdline: str) -> str:
    if "benchmarks.contestants" in cmdline:
        return "driver"
    if cmdline.startswith("ray::") or "default_worker.py" in cmdline:
        return "trial worker"
    return "Ray daemons"


def normalize(frame: str) -> str:
    """``func (path:line)`` -> ``path:func`` with site-packages stripped, for matching."""
    m = FRAME_RE.match(frame.strip())
    if not m:
        return frame
    path = m.group("file")
    path = path.split("site-packages/")[-1].split(str(ROOT) + "/")[-1]
    return f"{path}:{m.group('func')}"


PROCESS_RE = re.compile(r'process (\d+):"')


def parse(raw: Path):
    """Yield (pid, role, [frames root->leaf], count) from py-spy's raw (collapsed) output.

    With ``--subprocesses`` a line holds the process ancestry, then the frames:
    ``process P0:"cmd";process P1:"cmd";...;frame;frame;... COUNT``; the sampled
    process is the last one named.
    """
    for line in raw.read_text(errors="replace").splitlines():
        last = None
        for last in PROCESS_RE.finditer(line):
            pass
        if last is None:
            continue  # the rest of a multi-line command line
        end = line.find('";', last.end())
        stack, _, count = line[end + 2:].rpartition(" ") if end >= 0 else ("", "", "")
        if not count.isdigit() or not stack:
            continue
        yield last.group(1), role(line[last.end():end]), [normalize(f) for f in stack.split(";")], int(count)


def categorize(frames: list[str]) -> str:
    joined, leaf = "\n".join(frames), frames[-1] if frames else ""
    for name, needles in RULES:
        for n in needles:
            if (n[5:] in leaf) if n.startswith("leaf:") else (n in joined):
                return name
    return "other"


def summarize(raw: Path, rate: float) -> dict:
    by_role: Counter = Counter()
    by_cat: dict[str, Counter] = defaultdict(Counter)
    leaves: dict[str, Counter] = defaultdict(Counter)
    pids: dict[str, set] = defaultdict(set)
    for pid, r, frames, count in parse(raw):
        by_role[r] += count
        by_cat[r][categorize(frames)] += count
        leaves[r][frames[-1]] += count
        pids[r].add(pid)
    return {"rate": rate, "roles": {r: {"cpu_s": n / rate, "processes": len(pids[r]),
                                        "categories": {c: k / rate for c, k in by_cat[r].most_common()},
                                        "hottest": [(f, k / rate) for f, k in leaves[r].most_common(12)]}
                                    for r, n in by_role.most_common()}}


def print_summary(s: dict, wall: float) -> None:
    total = sum(r["cpu_s"] for r in s["roles"].values())
    print(f"\nwall {wall:.1f} s; CPU sampled" if wall == wall else "\nCPU sampled", end="")
    print(f" {total:.1f} s (on-CPU samples only, all processes)")
    for r, d in s["roles"].items():
        print(f"\n{r}: {d['cpu_s']:.1f} CPU s in {d['processes']} process(es)")
        for c, sec in d["categories"].items():
            if sec >= 0.05:
                print(f"  {sec:7.2f} s {100 * sec / max(d['cpu_s'], 1e-9):5.1f}%  {c}")
        print("  hottest leaf frames:")
        for f, sec in d["hottest"][:8]:
            print(f"  {sec:7.2f} s  {f[:110]}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="A: 8 trials x 5 epochs instead of 20 x 10; C: 100 trials")
    ap.add_argument("--scenario", choices=["A", "C"], default="A")
    ap.add_argument("--trials", type=int)
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "profile"))
    ap.add_argument("--nonblocking", action="store_true",
                    help="py-spy --nonblocking (less slow-down, but here it loses most trial-worker samples)")
    ap.add_argument("--summarize", metavar="RAW", help="only summarize an existing raw file")
    args = ap.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if args.summarize:
        print_summary(summarize(Path(args.summarize), args.rate), float("nan"))
        return 0
    pyspy = shutil.which("py-spy", path=f"{Path(sys.executable).parent}:{__import__('os').environ.get('PATH', '')}")
    if not pyspy:
        print("py-spy not found: .venv/bin/pip install py-spy", file=sys.stderr)
        return 2
    if args.scenario == "A":
        trials = args.trials or (8 if args.quick else 20)
        epochs = args.epochs or (5 if args.quick else 10)
        contestant = "pipeline_fixed"
    else:
        trials, epochs, contestant = args.trials or (100 if args.quick else 500), 1, "pipeline_trivial"
    tmp = out / "tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    job = {"scenario": args.scenario, "contestant": contestant, "problem": "digits", "trials": trials,
           "epochs": epochs, "batch_size": PROBLEMS["digits"]["batch_size"], "seed": 0,
           "configs": fixed_configs("digits", trials, CONFIG_SEED), "tmp": str(tmp)}
    (tmp / "job.json").write_text(json.dumps(job))
    raw = out / f"pipeline_{args.scenario}.raw.txt"
    ray_tmp = Path(f"/tmp/rbench-prof-{__import__('os').getpid()}")
    t0 = time.time()
    cmd = [pyspy, "record", "--subprocesses", "--rate", str(args.rate), "--format", "raw", "-o", str(raw),
           *(["--nonblocking"] if args.nonblocking else []),
           "--", sys.executable, "-m", "benchmarks.contestants", str(tmp / "job.json"), str(tmp / "result.json")]
    print(f"profiling {args.scenario}.pipeline ({trials} trials x {epochs} epochs) under py-spy ...", flush=True)
    log_path = out / f"pipeline_{args.scenario}.log"
    with open(log_path, "w") as log:
        rc = subprocess.run(cmd, cwd=ROOT, env=child_env(ray_tmp, t0), stdout=log,
                            stderr=subprocess.STDOUT).returncode
    wall = time.time() - t0
    shutil.rmtree(ray_tmp, ignore_errors=True)
    if rc != 0 or not raw.exists():
        print(f"py-spy/contestant failed (exit {rc}); see {log_path}", file=sys.stderr)
        return 1
    m = re.search(r"Samples: (\d+) Errors: (\d+)", log_path.read_text(errors="replace"))
    if m and int(m.group(2)) > int(m.group(1)):
        print(f"warning: py-spy could not read {m.group(2)} samples (it read {m.group(1)}); the trial "
              "workers are probably missing from the profile: run it again", file=sys.stderr)
    result = json.loads((tmp / "result.json").read_text())
    s = summarize(raw, args.rate)
    s.update({"wall_s": wall, "trials": trials, "epochs": epochs, "search_s": result.get("search_s")})
    summary_path = out / f"pipeline_{args.scenario}.summary.json"
    summary_path.write_text(json.dumps(s, indent=1))
    print_summary(s, wall)
    print(f"\nraw stacks: {raw} (e.g. flamegraph.pl or speedscope.app); summary: {summary_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
