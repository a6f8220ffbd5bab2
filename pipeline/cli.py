"""``python -m pipeline``: validate, run, results, best.

Bad input (a spec error, a missing experiment) prints one clear message per
problem and exits with status 2, without a traceback and without writing.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from cluster.connect import ClusterConnectError
from pipeline.redact import redact
from pipeline.spec import SpecError, load_spec
from pipeline.storage import StorageUnavailable

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse exits with 2 too; keep its message short
        self.print_usage(sys.stderr)
        self.exit(EXIT_BAD_INPUT, f"error: {message}\n")


def _validate(args) -> int:
    spec = load_spec(args.spec)
    print(f"{args.spec}: OK ({spec.name}: {spec.num_trials} trials, searcher {spec.searcher.name}, "
          f"scheduler {spec.scheduler.name})")
    return 0


def _run(args) -> int:
    from cluster.connect import check_transport
    from pipeline.runner import run

    check_transport(args.address, args.insecure)  # before anything connects
    spec = load_spec(args.spec)
    _warn_for_loaded_results(spec, args.resume)
    start = time.monotonic()
    results = run(spec, address=args.address, resume=args.resume)
    print(f"\n{results.summary()} in {time.monotonic() - start:.1f}s")
    print(results.format_leaderboard(args.top))
    return 0


def _refuse_existing(path: str | None, option: str, force: bool) -> None:
    """An output that exists (a file, a folder, a link) is only replaced with --force."""
    if path is None:
        return
    if os.path.islink(path):
        raise FileExistsError(f"{option}: {path} is a symbolic link; refusing to write through it")
    if os.path.lexists(path) and not force:
        raise FileExistsError(f"{option}: {path} exists; pass --force to overwrite it")


def _warn_if_not_yours(path: str, field: str = "path") -> None:
    """Warn before loading stored results (pickles: code) from a folder another user controls.

    Refuses credentials in the URI first (they would be echoed in messages).
    """
    from pipeline.redact import uri_credentials
    from pipeline.storage import filesystem

    if uri_credentials(path):
        raise SpecError([f"{field}: put credentials in the environment or a Secret, not in the URI"])
    if "://" in path and not path.startswith("file://"):
        return  # a bucket: its access rules are the store's
    local = filesystem(path)[1]
    uid = os.getuid()
    here = local
    while True:
        try:
            st = os.stat(here)
        except OSError:
            st = None
        if st is not None:
            # a world-writable parent with the sticky bit (/tmp) lets no one else rename ours
            others_write = st.st_mode & 0o022 and not (here != local and st.st_mode & 0o1000)
            if st.st_uid not in (uid, 0) or others_write:
                who = f"uid {st.st_uid}" if st.st_uid not in (uid, 0) else "other users (writable)"
                print(f"warning: {here} is controlled by {who}, not only you: stored results "
                      "are loaded with pickle and can run code; open only results you trust",
                      file=sys.stderr)
                return
        parent = os.path.dirname(here)
        if parent == here:
            return
        here = parent


def _warn_for_loaded_results(spec, resume: bool) -> None:
    """`run` loads stored results too: the experiment (--resume), warm start, restore_from."""
    from pipeline.storage import filesystem

    paths = []
    storage = spec.storage.path
    if resume and ("://" not in storage or storage.startswith("file://")):  # local disk only
        paths.append(("storage.path", os.path.join(filesystem(storage)[1], spec.name)))
    warm = getattr(spec.searcher, "warm_start", None)
    paths += [(f, p) for f, p in (("searcher.warm_start.path", getattr(warm, "path", None)),
                                  ("searcher.restore_from", getattr(spec.searcher, "restore_from", None)))
              if p]
    for field, path in paths:
        _warn_if_not_yours(path, field)


def _results(args) -> int:
    from pipeline.results import Results

    _refuse_existing(args.export, "--export", args.force)
    _warn_if_not_yours(args.path)
    res = Results.open(args.path, args.endpoint_override)
    print(res.summary())
    print(res.format_leaderboard(args.top))
    if args.export:
        path = res.export(args.export, overwrite=args.force)
        print(f"exported {res.num_trials} trials to {path}")
    return 0


def _best(args) -> int:
    from pipeline.results import Results

    _warn_if_not_yours(args.path)
    res = Results.open(args.path, args.endpoint_override)
    print(f"best trial: {res.best_trial.trial_id}")
    print(f"best {res.metric} (validation): {res.best_value:.4f}")
    print("best config:")
    for k, v in res.best_config.items():
        print(f"  {k}: {v}")
    if not args.no_eval:
        for k, v in res.evaluate_best().items():
            print(f"{k} (held-out test split): {v:.4f}")
    return 0


def _report(args) -> int:
    from pathlib import Path

    from pipeline.report import write_report
    from pipeline.results import Results

    _refuse_existing(args.output, "-o", args.force)
    _warn_if_not_yours(args.path)
    res = Results.open(args.path, args.endpoint_override)
    out = Path(args.output or f"{res.where.name}-report")
    _refuse_existing(str(out), "-o", args.force)
    index = write_report(res, out)
    print(f"report: {index}")
    return 0


def _cluster_up(args) -> int:
    from pathlib import Path

    from cluster import local

    c = local.start(workers=args.workers, cpus_per_worker=args.cpus_per_worker,
                    state_dir=Path(args.state_dir))
    print(f"Ray cluster up: head (0 CPUs) + {args.workers} workers x {args.cpus_per_worker} CPUs")
    print(f"  address:    {c.address}")
    print(f"  dashboard:  {c.dashboard_url}  (loopback only; Jobs API for `submit`)")
    print(f"  token file: {c.token_path}  (token authentication is on)")
    print("  storage:    a local folder works (every node runs on this machine), as does s3://")
    print(f"  use it:     eval \"$(python -m pipeline cluster env --state-dir {args.state_dir})\", or")
    for k, v in c.env().items():
        print(f"    export {k}={v}")
    print(f"  stop it:    python -m pipeline cluster down --state-dir {args.state_dir}")
    return 0


def _cluster_env(args) -> int:
    import shlex
    from pathlib import Path

    from cluster import local

    c = local.load(Path(args.state_dir))
    if c is None:
        raise RuntimeError(f"no local cluster recorded in {args.state_dir}; "
                           "start one with: python -m pipeline cluster up")
    for k, v in c.env().items():
        print(f"export {k}={shlex.quote(v)}")
    return 0


def _cluster_down(args) -> int:
    from pathlib import Path

    from cluster import local

    n = local.stop(Path(args.state_dir))
    print(f"stopped {n} node(s)" if n else "no local cluster was running there")
    return 0


def _k8s_render(args) -> int:
    from pathlib import Path

    from cluster.k8s_render import render_experiment

    out = Path(args.output) if args.output else None
    if out is not None and out.exists() and not args.force:  # checked first: nothing is written
        raise ValueError(f"--output: {out} exists; pass --force to replace it")
    if out is not None and not out.parent.is_dir():
        raise ValueError(f"--output: folder {out.parent} does not exist")
    rendered = render_experiment(
        args.spec, name=args.name, namespace=args.namespace, image=args.image, storage=args.storage,
        pvc=args.pvc, secret=args.secret, cpus_per_worker=args.cpus_per_worker,
        gpus_per_worker=args.gpus_per_worker)
    text = rendered.text()
    notes = []
    if rendered.prerequisites:
        notes.append("before applying, these must exist (k8s render cannot create them):")
        notes += [f"  {p.kind} {p.name} ({p.why}):\n    {p.command}" for p in rendered.prerequisites]
    if out is None:
        print(text, end="")
        for line in notes:
            print(line, file=sys.stderr)
        return 0
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, out)
    kinds = ", ".join(f"{o['kind']} {o['metadata']['name']}" for o in rendered.objects)
    where = f" in namespace {rendered.namespace}" if rendered.namespace else ""
    print(f"wrote {out}: {kinds}{where}")
    for line in notes:
        print(line)
    print(f"apply with: kubectl apply -f {out}")
    return 0


def _submit(args) -> int:
    from cluster import jobs

    load_spec(args.spec)  # validate here, before anything is shipped
    address, origin = jobs.resolve_address(args.address, args.insecure)  # once, for everything
    print(f"cluster: {address} (from {origin})", file=sys.stderr)
    job_id = jobs.submit(args.spec, address, insecure=args.insecure, resume=not args.no_resume,
                         include=args.include, max_upload_mb=args.max_upload_mb)
    print(job_id)
    return jobs.follow(job_id, address, args.insecure) if args.follow else 0


def _jobs(args) -> int:
    from cluster import jobs

    address, _ = jobs.resolve_address(args.address, args.insecure)
    c = jobs.client(address, args.insecure)
    if args.action == "status":
        print(str(c.get_job_status(args.job_id)).split(".")[-1])
    elif args.action == "logs":
        if args.follow:
            return jobs.follow(args.job_id, address, args.insecure)
        print(c.get_job_logs(args.job_id), end="")
    else:
        print("stopped" if c.stop_job(args.job_id) else "not running")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m pipeline", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser(
        "validate", help="check a spec; start nothing, write nothing (imports the modules it names)",
        description="Check a spec; start nothing, write nothing. A spec is code: validate "
                    "imports the modules it names (model.builder 'module:function', "
                    "training.callbacks), which runs their top-level code. Validate only specs "
                    "you would run.")
    p.add_argument("spec")
    p.set_defaults(func=_validate)

    p = sub.add_parser("run", help="run an experiment spec")
    p.add_argument("spec")
    p.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS or a local Ray)")
    p.add_argument("--insecure", action="store_true",
                   help="allow joining a non-loopback cluster without TLS (the token travels in clear)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted experiment (start afresh if there is none)")
    p.add_argument("--top", type=int, default=10, help="leaderboard rows")
    p.set_defaults(func=_run)

    for name, func, text in [("results", _results, "print the leaderboard of stored results"),
                             ("best", _best, "best config; evaluate the best model on the test split")]:
        p = sub.add_parser(name, help=text)
        p.add_argument("path", help="experiment folder or URI (storage path / experiment name)")
        p.add_argument("--endpoint-override", help="S3-compatible endpoint, e.g. http://127.0.0.1:9000")
        if name == "results":
            p.add_argument("--top", type=int, default=10)
            p.add_argument("--export", metavar="FILE", help="write all trials to .parquet, .csv or .json")
            p.add_argument("--force", action="store_true", help="overwrite an existing --export file")
        else:
            p.add_argument("--no-eval", action="store_true", help="skip the test-split evaluation")
        p.set_defaults(func=func)

    p = sub.add_parser("report", help="write a self-contained HTML report (and PNGs)")
    p.add_argument("path", help="experiment folder or URI")
    p.add_argument("-o", "--output", help="folder to write (default: NAME-report)")
    p.add_argument("--force", action="store_true", help="write into an existing -o folder")
    p.add_argument("--endpoint-override", help="S3-compatible endpoint")
    p.set_defaults(func=_report)

    cl = sub.add_parser("cluster", help="a real multi-node Ray cluster on this machine")
    clsub = cl.add_subparsers(dest="cluster_command", required=True, parser_class=_Parser)
    p = clsub.add_parser("up", help="start a head (0 CPUs) and N workers, token auth on")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--cpus-per-worker", type=int, default=1)
    p.add_argument("--state-dir", default=".ray-local-cluster")
    p.set_defaults(func=_cluster_up)
    p = clsub.add_parser("env", help="print the export lines for the cluster `up` started")
    p.add_argument("--state-dir", default=".ray-local-cluster")
    p.set_defaults(func=_cluster_env)
    p = clsub.add_parser("down", help="stop exactly the cluster `up` started")
    p.add_argument("--state-dir", default=".ray-local-cluster")
    p.set_defaults(func=_cluster_down)

    def _address(p):
        p.add_argument("--address", help=(
            "the cluster's dashboard / Jobs API URL (default: RAY_DASHBOARD_ADDRESS, "
            "RAY_API_SERVER_ADDRESS or an http(s) RAY_ADDRESS, else the running cluster "
            "`cluster up` recorded; never a fixed port)"))
        p.add_argument("--insecure", action="store_true", help="allow plain http to a non-loopback host")

    p = sub.add_parser("submit", help="run a spec on a Ray cluster as a job")
    p.add_argument("spec")
    _address(p)
    p.add_argument("--follow", action="store_true", help="stream logs; exit with the job's status")
    p.add_argument("--no-resume", action="store_true", help="do not pass --resume to the job's run")
    p.add_argument("--include", action="append", default=[], metavar="PATH",
                   help="also ship this file or folder of the project (repeatable); by default "
                        "only the packages, the spec and the files and modules it names go")
    p.add_argument("--max-upload-mb", type=float, default=50.0,
                   help="refuse to ship more than this (default: 50)")
    p.set_defaults(func=_submit)
    p = sub.add_parser("jobs", help="status, logs or stop of a submitted job")
    p.add_argument("action", choices=["status", "logs", "stop"])
    p.add_argument("job_id")
    _address(p)
    p.add_argument("--follow", action="store_true")
    p.set_defaults(func=_jobs)

    k8 = sub.add_parser("k8s", help="Kubernetes (KubeRay) manifests")
    k8sub = k8.add_subparsers(dest="k8s_command", required=True, parser_class=_Parser)
    p = k8sub.add_parser("render", help="write everything a spec's RayJob needs in one namespace")
    p.add_argument("spec")
    p.add_argument("--name", help="name of the RayJob and its objects (default: from the spec's name)")
    p.add_argument("--image", help="default: ghcr.io/example/keras-ray-tune:0.1.0 (-gpu for GPU trials)")
    p.add_argument("--namespace", help="set on every object (default: kubectl's current namespace)")
    p.add_argument("--storage", metavar="URI", help="replace the spec's storage.path (s3://, gs://)")
    p.add_argument("--pvc", metavar="CLAIM", help="keep a local storage folder on this PersistentVolumeClaim")
    p.add_argument("--secret", help="Secret with the storage credentials (default: NAME-storage)")
    p.add_argument("--cpus-per-worker", type=int, default=4)
    p.add_argument("--gpus-per-worker", type=int, default=1)
    p.add_argument("-o", "--output", help="file to write (default: stdout)")
    p.add_argument("--force", action="store_true", help="replace an existing --output file")
    p.set_defaults(func=_k8s_render)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except SpecError as exc:
        for line in exc.lines:
            print(redact(f"error: {line}"), file=sys.stderr)
        return EXIT_BAD_INPUT
    except ClusterConnectError as exc:
        print(redact(f"error: {exc}"), file=sys.stderr)
        return EXIT_BAD_INPUT
    except StorageUnavailable as exc:  # mid-run: not bad input, and the state stays resumable
        print(redact(f"error: {exc}"), file=sys.stderr)
        return EXIT_FAILED
    except Exception as exc:  # noqa: BLE001 - user-facing commands end with one line, not a traceback
        expected = (FileNotFoundError, FileExistsError, LookupError, ValueError, RuntimeError,
                    ConnectionError)
        if args.command in ("validate", "run") or not (
                isinstance(exc, expected) or type(exc).__name__ == "AuthenticationError"):
            raise
        print(redact(f"error: {type(exc).__name__}: {exc}" if type(exc).__name__ ==
                     "AuthenticationError" else f"error: {exc}"), file=sys.stderr)
        return EXIT_BAD_INPUT
