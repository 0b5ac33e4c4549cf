"""How often this host slows the model itself down, and whether all its cores at once.

No server: `--processes` processes of one torch thread each (the layout of `augserve
bench infer`'s replicas) run its ResNet-20 on a batch of `--batch` images back to back
for `--seconds`, started together. A call is slow when it takes over `--slow` times its
process's median. Slow calls that overlap in time, across processes, form one event.

Prints, per process, the median, p99 and p99/median of a call, and then the events:
how many, how many slowed every process at once, the median time between their
starts, and the share of the run they cover. On a host that gives a VM its cores
steadily there are few slow calls and they fall at random; when every process slows
at the same moments, no batching or scheduling in a server can hide it, because a
closed-loop load has every request in flight during such an event.

Usage:
    python -m augserve.server.bench.host_slowdowns --processes 2 --batch 16 --seconds 15
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from augserve.server.bench import lifecycle
from augserve.server.bench.inprocess import side_by_side
from augserve.server.bench.model import write_repository


def events(slow: list[tuple[float, float, int]]) -> list[tuple[float, float, set[int]]]:
    """Merge (start, end, process) intervals that overlap into (start, end, processes)."""
    merged: list[tuple[float, float, set[int]]] = []
    for start, end, process in sorted(slow):
        if merged and start <= merged[-1][1]:
            first, last, processes = merged[-1]
            merged[-1] = (first, max(last, end), processes | {process})
        else:
            merged.append((start, end, {process}))
    return merged


def main() -> None:
    """Run the processes together and print the slow calls' statistics."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--slow", type=float, default=2.5, help="times the median")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        weights = write_repository(Path(tmp) / "repo", args.batch, threads=1)
        runs = side_by_side(weights, args.processes, 1, args.batch, args.seconds)
    slow = []
    for index, run in enumerate(runs["processes"]):
        starts, seconds = np.array(run["call_at"]), np.array(run["call_ms"]) / 1e3
        median = float(np.median(seconds))
        p99 = float(np.percentile(seconds, 99))
        is_slow = seconds > args.slow * median
        print(
            f"process {index}: {len(seconds)} calls, median {1e3 * median:.1f} ms, "
            f"p99 {1e3 * p99:.1f} ms, p99/median {p99 / median:.2f}, slow {int(is_slow.sum())}"
        )
        slow += [
            (start, start + s, index)
            for start, s in zip(starts[is_slow], seconds[is_slow], strict=True)
        ]
    merged = events(slow)
    if not merged:
        print("no slow calls")
        return
    together = sum(len(processes) == args.processes for _, _, processes in merged)
    starts = np.array([start for start, _, _ in merged])
    covered = sum(end - start for start, end, _ in merged) / args.seconds
    gap = f"{np.median(np.diff(starts)):.2f} s" if len(starts) > 1 else "n/a"
    print(
        f"events: {len(merged)}, slowing all {args.processes} processes at once: {together}; "
        f"median time between events {gap}; share of the run inside events {covered:.1%}"
    )


if __name__ == "__main__":
    with lifecycle.exit_on_sigterm():
        main()
