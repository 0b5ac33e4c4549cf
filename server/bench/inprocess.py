"""The model's in-process ceiling: ResNet-20 timed in fresh processes, with no server.

The workers are this module's functions, each run in a process of its own with
`python -m augserve.server.bench.inprocess`:
- `measure` (`in_process`): time one batch size for some seconds, print JSON;
- `batch1` (`batch1_worker`): stay warm and time batch-1 calls on demand.

Every figure comes from fresh processes, and the best is kept, so that the ceiling is
never understated.

Usage:
    python -m augserve.server.bench.inprocess measure --weights model.pth --threads 2 \
        --batch-size 16 --seconds 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from augserve.server.bench import lifecycle
from augserve.server.bench.model import INPUT_SHAPE, load_resnet20

WORKER = [sys.executable, "-m", "augserve.server.bench.inprocess"]


def timed_calls(module: Any, batch: Any, seconds: float) -> list[tuple[float, float]]:
    """Call `module(batch)` for `seconds` (at least 20 times).

    Returns:
        each call's wall-clock start (`time.time()`) and seconds.
    """
    calls = []
    end = time.perf_counter() + seconds
    while (start := time.perf_counter()) < end or len(calls) < 20:
        wall = time.time()
        module(batch)
        calls.append((wall, time.perf_counter() - start))
    return calls


def _random_batch(batch_size: int) -> Any:
    import torch

    rng = np.random.default_rng(0)
    return torch.from_numpy(rng.standard_normal((batch_size, *INPUT_SHAPE), dtype=np.float32))


def in_process(
    weights: Path, threads: int, batch_size: int, seconds: float, start_at: float | None = None
) -> dict[str, Any]:
    """The model in this process at `batch_size`.

    With `start_at` (a `time.time()`), the timed run begins then, so that processes
    started together measure together.

    Returns:
        rps (images/s), batch_ms, cpu_ms_per_image (this process's CPU time, all
        threads), and for each call, call_at (its wall-clock start) and call_ms.
    """
    import torch

    torch.set_num_threads(threads)
    module = load_resnet20(weights)
    batch = _random_batch(batch_size)
    with torch.inference_mode():
        for _ in range(5):
            module(batch)
        if start_at is not None:
            time.sleep(max(0.0, start_at - time.time()))
        cpu_start = time.process_time()
        calls = timed_calls(module, batch, seconds)
    times = [seconds for _, seconds in calls]
    return {
        "rps": len(times) * batch_size / sum(times),
        "batch_ms": 1e3 * sum(times) / len(times),
        "cpu_ms_per_image": 1e3 * (time.process_time() - cpu_start) / (len(times) * batch_size),
        "call_at": [round(wall, 4) for wall, _ in calls],
        "call_ms": [round(1e3 * t, 3) for t in times],
    }


def batch1_worker(weights: Path, threads: int) -> None:
    """The in-process batch-1 reference, on demand (run by `batch1_reference`).

    Prints "ready" once warm; then, for each number of seconds read from stdin, times
    batch-1 calls for half that long on one thread and half on `threads` (the replicas'
    budget), and prints the lower of the two medians in ms.
    """
    import torch

    module = load_resnet20(weights)
    batch = _random_batch(1)
    counts = sorted({1, threads})
    with torch.inference_mode():
        for count in counts:
            torch.set_num_threads(count)
            for _ in range(50):
                module(batch)
        print("ready", flush=True)
        for line in sys.stdin:
            medians = []
            for count in counts:
                torch.set_num_threads(count)
                times = [s for _, s in timed_calls(module, batch, float(line) / len(counts))]
                medians.append(1e3 * float(np.median(times)))
            print(json.dumps({"b1_ms": min(medians)}), flush=True)


@contextmanager
def batch1_reference(weights: Path, threads: int) -> Iterator[Callable[[float], float]]:
    """A warm process with the model; yields `measure(seconds)` -> its batch-1 latency (ms).

    The process idles between measurements, so that served phases can be interleaved with
    in-process ones without paying its start-up each time.
    """
    command = [*WORKER, "batch1", "--weights", str(weights), "--threads", str(threads)]
    group = lifecycle.ProcessGroup(
        command, lifecycle.child_env("ACTIVE"),  # as a single-thread replica runs
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert group.process.stdin is not None and group.process.stdout is not None
    stdin, stdout = group.process.stdin, group.process.stdout

    def reply() -> str:
        line = stdout.readline()
        if not line:
            raise RuntimeError("the in-process batch-1 reference process died")
        return line

    def measure(seconds: float) -> float:
        stdin.write(f"{seconds}\n")
        stdin.flush()
        return json.loads(reply())["b1_ms"]

    with group:
        reply()  # "ready"
        yield measure
        stdin.close()  # its end of input: the process returns
        group.process.wait(60)


def _measure_command(
    weights: Path, threads: int, batch_size: int, seconds: float, start_at: float | None = None
) -> list[str]:
    command = [*WORKER, "measure", "--weights", str(weights), "--threads", str(threads),
               "--batch-size", str(batch_size), "--seconds", str(seconds)]  # fmt: skip
    return command if start_at is None else [*command, "--start-at", str(start_at)]


def _last_json(stdout: str) -> dict[str, Any]:
    return json.loads(stdout.strip().splitlines()[-1])


def side_by_side(
    weights: Path, processes: int, threads: int, batch_size: int, seconds: float
) -> dict[str, Any]:
    """`processes` fresh processes of `threads` threads, timed together (the replicas' layout).

    Returns `in_process`'s figures with rps summed over the processes, batch_ms and
    cpu_ms_per_image averaged, every process's call_ms, and `processes`: each process's
    own `in_process` result.

    Raises:
        RuntimeError: a measurement failed.
    """
    start_at = time.time() + 5.0  # after every process has imported torch and warmed up
    command = _measure_command(weights, threads, batch_size, seconds, start_at)
    policy = "ACTIVE" if threads == 1 else "PASSIVE"  # as `default_replica_env` sets them
    groups = [
        lifecycle.ProcessGroup(command, lifecycle.child_env(policy), stdout=subprocess.PIPE,
                               text=True)
        for _ in range(processes)
    ]  # fmt: skip
    try:
        outputs = [group.process.communicate(timeout=20 * seconds + 120)[0] for group in groups]
    finally:
        for group in groups:
            group.stop()
    if any(group.process.returncode for group in groups):
        raise RuntimeError("an in-process measurement failed")
    runs = [_last_json(output) for output in outputs]
    return {
        "rps": sum(r["rps"] for r in runs),
        "batch_ms": statistics.mean(r["batch_ms"] for r in runs),
        "cpu_ms_per_image": statistics.mean(r["cpu_ms_per_image"] for r in runs),
        "call_ms": [ms for r in runs for ms in r["call_ms"]],
        "processes": runs,
    }


def best_in_process(
    weights: Path,
    threads: int,
    replicas: int,
    batch_size: int,
    seconds: float,
    policies: tuple[str | None, ...] = ("PASSIVE", None),
) -> dict[str, Any]:
    """The model's best in-process figures with the replicas' thread budget.

    One fresh process with all `threads * replicas` threads under each OpenMP wait policy,
    and, with several replicas, `replicas` processes of `threads` threads side by side.
    Besides `best_of`'s figures, `replica_layout_call_ms` holds each call's milliseconds
    in the replicas' own layout (the side-by-side processes; the first run for one replica).
    """
    command = _measure_command(weights, threads * replicas, batch_size, seconds)
    runs = [
        _last_json(lifecycle.run(command, 20 * seconds + 120, lifecycle.child_env(policy)).stdout)
        for policy in policies
    ]
    if replicas > 1:
        runs.append(side_by_side(weights, replicas, threads, batch_size, seconds))
    layout = runs[-1] if replicas > 1 else runs[0]
    return {**best_of(runs), "replica_layout_call_ms": layout["call_ms"]}


def best_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The best of several `in_process` results: the fastest, and the lowest CPU."""
    best = max(runs, key=lambda r: r["rps"])
    return {**best, "cpu_ms_per_image": min(r["cpu_ms_per_image"] for r in runs)}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the workers (`measure` or `batch1`); returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    workers = parser.add_subparsers(dest="worker", required=True)
    measure = workers.add_parser("measure", help="time one batch size, print JSON")
    batch1 = workers.add_parser("batch1", help="time batch-1 calls for each line of stdin")
    for worker in (measure, batch1):
        worker.add_argument("--weights", type=Path, required=True, help="resnet20 state_dict")
        worker.add_argument("--threads", type=int, required=True, help="torch threads")
    measure.add_argument("--batch-size", type=int, required=True, help="images per call")
    measure.add_argument("--seconds", type=float, required=True, help="timed seconds")
    measure.add_argument("--start-at", type=float, help="time.time() to begin timing at")
    args = parser.parse_args(argv)
    if args.worker == "batch1":
        batch1_worker(args.weights, args.threads)
    else:
        result = in_process(args.weights, args.threads, args.batch_size, args.seconds,
                            args.start_at)  # fmt: skip
        print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
