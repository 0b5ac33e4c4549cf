"""The `augserve` command line: serve, bench and the model tools."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path

from augserve.server.bench import BENCHMARKS


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, one sub-command per capability."""
    parser = argparse.ArgumentParser(prog="augserve", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    from augserve.server.config import add_serve_arguments

    serve = commands.add_parser("serve", help="run the gRPC server")
    add_serve_arguments(serve)

    bench = commands.add_parser("bench", help="measure augserve beside a baseline")
    benches = bench.add_subparsers(dest="bench", required=True)
    for name, module_name in BENCHMARKS.items():
        module = importlib.import_module(module_name)
        sub = benches.add_parser(name, help=(module.__doc__ or "").strip().splitlines()[0])
        sub.add_argument("--json", type=Path, help="also write the report as JSON to this file")
        module.add_arguments(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `augserve` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        from augserve.server.app import serve_forever

        return serve_forever(args)
    module = importlib.import_module(BENCHMARKS[args.bench])
    report = module.run(args)
    print(report.render())
    if args.json:
        report.write_json(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
