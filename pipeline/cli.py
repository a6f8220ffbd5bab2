"""``python -m pipeline``: validate, run, results, best.

Bad input (a spec error, a missing experiment) prints one clear message per
problem and exits with status 2, without a traceback and without writing.
"""

from __future__ import annotations

import argparse
import sys
import time

from pipeline.spec import SpecError, load_spec

EXIT_BAD_INPUT = 2


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
    from pipeline.runner import run

    spec = load_spec(args.spec)
    start = time.monotonic()
    results = run(spec, address=args.address, resume=args.resume)
    print(f"\n{results.summary()} in {time.monotonic() - start:.1f}s")
    print(results.format_leaderboard(args.top))
    return 0


def _results(args) -> int:
    from pipeline.results import Results

    res = Results.open(args.path, args.endpoint_override)
    print(res.summary())
    print(res.format_leaderboard(args.top))
    if args.export:
        print(f"exported {res.num_trials} trials to {res.export(args.export)}")
    return 0


def _best(args) -> int:
    from pipeline.results import Results

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


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m pipeline", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("validate", help="check a spec; start nothing, write nothing")
    p.add_argument("spec")
    p.set_defaults(func=_validate)

    p = sub.add_parser("run", help="run an experiment spec")
    p.add_argument("spec")
    p.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS or a local Ray)")
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
        else:
            p.add_argument("--no-eval", action="store_true", help="skip the test-split evaluation")
        p.set_defaults(func=func)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except SpecError as exc:
        for line in exc.lines:
            print(f"error: {line}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (FileNotFoundError, LookupError, ValueError) as exc:
        if args.command in ("validate", "run"):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
