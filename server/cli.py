"""The `augserve` command line: `serve`, `bench NAME`, `compress`, `transfer`, `token new`."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from augserve.server.auth import cli as token_cli
from augserve.server.bench import BENCHMARKS
from augserve.server.config import add_serve_arguments
from augserve.server.jobs import cli as jobs_cli


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser; a benchmark's own flags are parsed by `bench_parser`."""
    parser = argparse.ArgumentParser(prog="augserve", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    add_serve_arguments(commands.add_parser("serve", help="run the gRPC server"))
    bench = commands.add_parser("bench", help="measure augserve beside a named baseline")
    bench.add_argument("bench", choices=sorted(BENCHMARKS), help="which benchmark")
    bench.add_argument("bench_args", nargs=argparse.REMAINDER, help="the benchmark's flags")
    jobs_cli.add_commands(commands)
    token_cli.add_commands(commands)
    return parser


def bench_parser(name: str) -> tuple[argparse.ArgumentParser, ModuleType]:
    """The parser of `augserve bench NAME` (with `--json`) and the benchmark's module."""
    module = importlib.import_module(BENCHMARKS[name])
    parser = argparse.ArgumentParser(prog=f"augserve bench {name}", description=module.__doc__)
    parser.add_argument("--json", type=Path, help="also write the report as JSON to this file")
    module.add_arguments(parser)
    return parser, module


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `augserve` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        from augserve.server.app import serve_forever

        return serve_forever(args)
    if args.command in jobs_cli.COMMANDS:
        return jobs_cli.main(args)
    if args.command in token_cli.COMMANDS:
        return token_cli.main(args)
    from augserve.server.bench.lifecycle import exit_on_sigterm

    parser, module = bench_parser(args.bench)
    bench_args = parser.parse_args(args.bench_args)
    # SIGTERM unwinds like Ctrl-C, so every server and Ray the bench started is stopped.
    with exit_on_sigterm():
        report = module.run(bench_args)
    print(report.render())
    if bench_args.json:
        report.write_json(bench_args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
