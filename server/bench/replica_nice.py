"""Replicas at niceness 10 against 0, interleaved in one server (`instance_group.nice`).

One `augserve serve` runs `augserve bench infer`'s ResNet-20 (2 replicas x 1 thread,
5 ms fill delay). Between short h2load slices the replicas' threads are reniced,
alternating which setting goes first in each pair, so that every pair sees the same
drift in the machine's speed. Prints each setting's median requests/s, p50 and p99,
and the paired differences. Lowering a niceness again takes root (CAP_SYS_NICE).

Usage:
    python -m augserve.server.bench.replica_nice --concurrency 32 --seconds 5 --pairs 10
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np

from augserve.server.bench import lifecycle
from augserve.server.bench.infer import serve_command
from augserve.server.bench.load import run_loadgen
from augserve.server.bench.model import write_repository
from augserve.server.bench.server_stats import is_replica


def renice(pids: list[int], niceness: int) -> None:
    """Set every thread of each process in `pids` to `niceness`."""
    for pid in pids:
        for task in os.listdir(f"/proc/{pid}/task"):
            try:
                os.setpriority(os.PRIO_PROCESS, int(task), niceness)
            except ProcessLookupError:  # a thread that has just exited
                continue


def main() -> None:
    """Run the pairs and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5.0, help="per slice")
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--nice", type=int, default=10, help="the setting set against 0")
    args = parser.parse_args()
    settings = (0, args.nice)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        write_repository(work / "repo", 32, threads=1, replicas=2, fill_delay_us=5000)
        serve = serve_command(work / "repo", work / "port")
        with lifecycle.serving(serve, work / "port", work / "log") as (port, server):
            replicas = [child.pid for child in server.descendants() if is_replica(child)]
            run_loadgen("h2load", port, args.concurrency, 2, 1, work / "warm.json")
            results: dict[int, list[tuple[float, float, float]]] = {s: [] for s in settings}
            for index in range(args.pairs):
                for niceness in settings if index % 2 == 0 else settings[::-1]:
                    renice(replicas, niceness)
                    summary = run_loadgen(
                        "h2load", port, args.concurrency, args.seconds, 1, work / "slice.json"
                    )
                    results[niceness].append(
                        (summary["requests_per_s"], summary["p50_ms"], summary["p99_ms"])
                    )
    for niceness, rows in results.items():
        table = np.array(rows)
        print(
            f"nice {niceness:2d}: median {np.median(table[:, 0]):7.1f} req/s, "
            f"p50 {np.median(table[:, 1]):6.2f} ms, p99 {np.median(table[:, 2]):6.1f} ms"
        )
    difference = np.array(results[args.nice]) - np.array(results[0])
    faster = int((difference[:, 0] > 0).sum())
    print(f"pairs faster at nice {args.nice}: {faster} of {args.pairs}; req/s differences:")
    print(" ".join(f"{value:+.0f}" for value in difference[:, 0]))


if __name__ == "__main__":
    with lifecycle.exit_on_sigterm():
        main()
