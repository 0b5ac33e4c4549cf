"""`augserve bench infer`: ResNet-20 served over loopback against its in-process ceiling.

One run, phases in order (each server runs alone, so they never compete):
1. `augserve serve` in a subprocess (fresh embedded Ray) on a temporary repository
   holding a CIFAR ResNet-20 (random weights, fp32) in `--replicas` replicas of
   `--threads` torch threads each (default 2 x 1: single-thread replicas never
   wait at OpenMP barriers for a thread the front end preempted). With several
   replicas a free one may wait up to `--fill-delay-us`, while another is busy,
   for max_batch_size / replicas rows, so that the load does not split into small
   batches; an idle server dispatches at once.
2. `--rounds` pairs (default 3), each of a loaded phase and a ceiling, so that each
   pair sees the same drift in this VM's speed (it swings by ~20% from minute to
   minute):
   a. the load generator (its own process, one prebuilt raw fp32 request of one
      image: `bench.h2load`, nghttp2's C client, by default where it is installed, else
      the Python `bench.loadgen`; `--loadgen`) at `--concurrency` clients for
      `--duration / --rounds` seconds; ModelStatistics before and after give the
      executed batch sizes and the compute time per batch;
   b. in-process, while the server idles: the same model with the replicas' thread
      budget at that round's mean batch size, the best of one process with all the
      threads (under two OpenMP wait policies) and the replicas' own layout (one
      process per replica, timed together).
   `served_vs_inprocess_c32` is the median over rounds of served / ceiling; p99 is
   the worst round's.
3. `C1_SLICES_PER_ROUND * --rounds` slices at 1 client, each followed by the
   in-process batch-1 latency over as long (a warm process that idles in between:
   the median on one thread and on the replicas' thread budget, the lower of the
   two); `c1_p50_added_ms` is the median over slices of the slice's p50 minus the
   reference measured right after it. Then SIGTERM to the server, which must exit 0.
4. With `--baseline ray-serve`: the same model behind Ray Serve's gRPC proxy with
   `@serve.batch(32, 0.002)` (`bench.rayserve_baseline`, its own process and Ray)
   in the same replicas and threads, driven by the same load generator at
   `--concurrency` clients.

Both servers run with `OMP_WAIT_POLICY=PASSIVE` unless the caller set it: with
the gRPC front end and the load generator sharing the cores, OpenMP's default
spin-wait makes a 2-thread replica burn its time slices at barriers (about 10x
slower in our measurements). Replicas of either server take the policy of
`model_config.default_replica_env` (ACTIVE for one thread, PASSIVE for more).
Every in-process figure comes from fresh processes, and the best is kept, so the
ceiling is never understated.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import numpy as np

from augserve.server.bench import h2load
from augserve.server.bench.loadgen import build_payload
from augserve.server.bench.report import BenchReport

MODEL = "resnet20"
C1_SLICES_PER_ROUND = 2  # one-client slices per --rounds (each paired with a reference)
TARGETS: dict[str, tuple[str, float]] = {
    "served_vs_inprocess_c32": (">=", 0.7),
    "served_vs_rayserve_c32": (">=", 3.0),
    "p99_over_batch_compute_c32": ("<=", 4.0),
    "c1_p50_added_ms": ("<=", 1.5),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `augserve bench infer`."""
    parser.add_argument("--duration", type=float, default=15.0, help="measured seconds per phase")
    parser.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds per phase")
    parser.add_argument("--concurrency", type=int, default=32, help="clients of the loaded phase")
    parser.add_argument(
        "--baseline", choices=("none", "ray-serve"), default="ray-serve", help="peer to compare"
    )
    parser.add_argument("--max-batch-size", type=int, default=32, help="the model's batch limit")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per replica")
    parser.add_argument("--replicas", type=int, default=2, help="replicas of the model")
    parser.add_argument(
        "--fill-delay-us",
        type=int,
        default=5000,
        help="with several replicas: how long a free replica may wait, while another is busy, "
        "for max_batch_size / replicas rows (dynamic_batching.delay_only_while_busy)",
    )
    parser.add_argument(
        "--rounds", type=int, default=3,
        help="loaded phases at --concurrency, each followed by an in-process ceiling measurement",
    )
    parser.add_argument(
        "--quick", action="store_true", help="short phases (2 s, 0.5 s warm-up): a smoke test"
    )
    parser.add_argument(
        "--loadgen", choices=("auto", "h2load", "python"), default="auto",
        help="the load generator: nghttp2's h2load in C (~0.02 ms of CPU per request; auto "
        "picks it when installed) or the Python grpc.aio one (~0.2 ms)",
    )  # fmt: skip
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for both servers (e.g. a Ray setting to try)",
    )


def write_repository(
    root: Path, max_batch_size: int, threads: int, replicas: int = 1, fill_delay_us: int = 0
) -> Path:
    """Write a one-model repository (ResNet-20, state_dict, seed 0); returns the weights file."""
    import torch

    from augserve.server.zoo import resnet20

    torch.manual_seed(0)
    version = root / MODEL / "1"
    version.mkdir(parents=True)
    weights = version / "model.pth"
    torch.save(resnet20(num_classes=10).eval().state_dict(), weights)
    config = {
        "platform": "state_dict",
        "architecture": "augserve.server.zoo:resnet20",
        "architecture_kwargs": {"num_classes": 10},
        "max_batch_size": max_batch_size,
        "input": [{"name": "input", "datatype": "FP32", "dims": [3, 32, 32]}],
        "output": [{"name": "logits", "datatype": "FP32", "dims": [10]}],
        "instance_group": {"count": replicas, "kind": "cpu", "num_threads": threads},
        "dynamic_batching": {
            "max_queue_delay_microseconds": fill_delay_us,
            "preferred_batch_size": [max(1, max_batch_size // replicas)],
            "delay_only_while_busy": True,
        },
        # Every size the batcher can form: the first batch of a new size builds its oneDNN
        # primitives (4-6 ms more here), which the first rounds would otherwise pay.
        "warmup": {"batch_sizes": list(range(1, max_batch_size + 1))},
    }
    (root / MODEL / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return weights


def _child_env(omp_wait_policy: str | None = "PASSIVE") -> dict[str, str]:
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)  # a fresh Ray, never one that happens to be running
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if omp_wait_policy and "OMP_WAIT_POLICY" not in os.environ:
        env["OMP_WAIT_POLICY"] = omp_wait_policy
    return env


@contextmanager
def server_process(
    command: list[str], ready_file: Path, log: Path, extra_env: dict[str, str],
    timeout_s: float = 240.0,
) -> Iterator[tuple[int, int]]:  # fmt: skip
    """Run `command` until the block ends; yields (the port it writes to `ready_file`, its pid).

    On exit the process gets SIGTERM; it must exit 0 within 60 s (else RuntimeError).
    """
    with log.open("w") as out:
        env = {**_child_env(), **extra_env}
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + timeout_s
        while not (ready_file.exists() and ready_file.read_text().strip()):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{command[2]} did not become ready; log:\n{log.read_text()}")
            time.sleep(0.1)
        yield int(ready_file.read_text()), process.pid
    except BaseException:
        _stop_tree(process)
        raise
    process.send_signal(signal.SIGTERM)
    try:
        code = process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()
        raise RuntimeError(f"{command[2]} ignored SIGTERM for 60 s") from None
    if code != 0:
        raise RuntimeError(f"{command[2]} exited {code} on SIGTERM; log:\n{log.read_text()}")


def _wait_or_kill(process: subprocess.Popen, timeout_s: float) -> None:
    """Wait up to `timeout_s` for `process` to exit, then kill it."""
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _stop_tree(process: subprocess.Popen) -> None:
    """SIGTERM (a clean Ray shutdown), then SIGKILL for whatever of its tree is left."""
    import psutil

    try:
        tree = psutil.Process(process.pid).children(recursive=True)
    except psutil.Error:
        tree = []
    process.terminate()
    _wait_or_kill(process, 30)
    for child in tree:
        with suppress(psutil.Error):
            child.kill()


def resolve_loadgen(choice: str) -> str:
    """"h2load" or "python" for `--loadgen` (auto: h2load when it is installed).

    Raises:
        RuntimeError: h2load was asked for and is not installed.
    """
    if choice == "auto":
        return "h2load" if h2load.h2load_path() else "python"
    if choice == "h2load" and not h2load.h2load_path():
        raise RuntimeError("--loadgen h2load: h2load is not on PATH (apt install nghttp2-client)")
    return choice


def run_loadgen(
    loadgen: str, port: int, concurrency: int, duration: float, warmup: float, out: Path,
    metadata: Sequence[tuple[str, str]] = (),
) -> dict:  # fmt: skip
    """Drive 127.0.0.1:`port` from a load generator in its own process; its summary.

    `loadgen` is "h2load" (`bench.h2load`) or "python" (`bench.loadgen`).

    Raises:
        RuntimeError: a call failed, or nothing was measured.
    """
    url = f"127.0.0.1:{port}"
    if loadgen == "h2load":
        payload = build_payload(MODEL, "input", (1, 3, 32, 32))
        summary = h2load.generate(url, payload, concurrency, duration, warmup, metadata)
        out.write_text(json.dumps(summary, indent=2) + "\n")
    else:
        command = [
            sys.executable, "-m", "augserve.server.bench.loadgen", "--url", url,
            "--model", MODEL, "--concurrency", str(concurrency), "--duration", str(duration),
            "--warmup", str(warmup), "--json", str(out),
            *(f"--metadata={key}={value}" for key, value in metadata),
        ]  # fmt: skip
        subprocess.run(command, check=True, env=_child_env(), timeout=duration + warmup + 120)
        summary = json.loads(out.read_text())
    if summary["errors"] or not summary["measured"]:
        raise RuntimeError(f"load generator at c={concurrency}: {summary}")
    return summary


def is_replica(process: Any) -> bool:
    """Whether a `psutil.Process` of a server's tree is a model replica (a Ray actor).

    Raises:
        psutil.Error: the process is gone or cannot be read.
    """
    return "ModelReplica" in process.name() + " ".join(process.cmdline())


def cpu_seconds(pid: int) -> dict[str, float]:
    """CPU seconds so far of the server process, its model replicas, and the rest of its tree."""
    import psutil

    root = psutil.Process(pid)
    totals = {"server": sum(root.cpu_times()[:2]), "replicas": 0.0, "ray_other": 0.0}
    for child in root.children(recursive=True):
        try:
            seconds = sum(child.cpu_times()[:2])
            replica = is_replica(child)
        except psutil.Error:
            continue
        totals["replicas" if replica else "ray_other"] += seconds
    return totals


def batch_statistics(port: int) -> tuple[int, int, int, int]:
    """(rows, executions, compute-infer ns, compute-input ns) so far, from ModelStatistics.

    compute-input is the batcher's time around a replica call minus the model's own
    time: the replica round trip (the direct channel or a Ray call: arguments, results).
    """
    from augserve.clients.infer import InferClient

    with InferClient(f"127.0.0.1:{port}", timeout=10) as client:
        stats = client.statistics(MODEL).model_stats[0]
    infer = stats.inference_stats
    return (
        stats.inference_count, stats.execution_count, infer.compute_infer.ns,
        infer.compute_input.ns,
    )  # fmt: skip


def _load_resnet20(weights: Path) -> Any:
    import torch

    from augserve.server.zoo import resnet20

    module = resnet20(num_classes=10)
    module.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return module.eval()


def _timed_calls(module: Any, batch: Any, seconds: float) -> list[tuple[float, float]]:
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
    module = _load_resnet20(weights)
    rng = np.random.default_rng(0)
    batch = torch.from_numpy(rng.standard_normal((batch_size, 3, 32, 32), dtype=np.float32))
    with torch.inference_mode():
        for _ in range(5):
            module(batch)
        if start_at is not None:
            time.sleep(max(0.0, start_at - time.time()))
        cpu_start = time.process_time()
        calls = _timed_calls(module, batch, seconds)
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

    module = _load_resnet20(weights)
    batch = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 3, 32, 32), "f4"))
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
                times = [s for _, s in _timed_calls(module, batch, float(line) / len(counts))]
                medians.append(1e3 * float(np.median(times)))
            print(json.dumps({"b1_ms": min(medians)}), flush=True)


@contextmanager
def batch1_reference(weights: Path, threads: int) -> Iterator[Callable[[float], float]]:
    """A warm process with the model; yields `measure(seconds)` -> its batch-1 latency (ms).

    The process idles between measurements, so that served phases can be interleaved with
    in-process ones without paying its start-up each time.
    """
    command = [sys.executable, "-c", "from pathlib import Path; "
               "from augserve.server.bench.infer import batch1_worker; "
               f"batch1_worker(Path({str(weights)!r}), {threads})"]  # fmt: skip
    process = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env=_child_env("ACTIVE"),  # as a single-thread replica runs
    )  # fmt: skip
    assert process.stdin is not None and process.stdout is not None
    stdin, stdout = process.stdin, process.stdout

    def reply() -> str:
        line = stdout.readline()
        if not line:
            raise RuntimeError("the in-process batch-1 reference process died")
        return line

    def measure(seconds: float) -> float:
        stdin.write(f"{seconds}\n")
        stdin.flush()
        return json.loads(reply())["b1_ms"]

    try:
        reply()  # "ready"
        yield measure
    finally:
        stdin.close()  # its end of input: the process returns
        _wait_or_kill(process, 60)


def _in_process_command(
    weights: Path, threads: int, batch_size: int, seconds: float, start_at: float | None = None
) -> list[str]:
    call = f"in_process(Path({str(weights)!r}), {threads}, {batch_size}, {seconds}, {start_at})"
    return [sys.executable, "-c", "import json; from pathlib import Path; "
            f"from augserve.server.bench.infer import in_process; print(json.dumps({call}))"]


def _last_json(stdout: str) -> dict[str, Any]:
    return json.loads(stdout.strip().splitlines()[-1])


def side_by_side(
    weights: Path, processes: int, threads: int, batch_size: int, seconds: float
) -> dict[str, Any]:
    """`processes` fresh processes of `threads` threads, timed together (the replicas' layout).

    Returns `in_process`'s figures with rps summed over the processes, batch_ms and
    cpu_ms_per_image averaged, every process's call_ms, and `processes`: each process's
    own `in_process` result.
    """
    start_at = time.time() + 5.0  # after every process has imported torch and warmed up
    command = _in_process_command(weights, threads, batch_size, seconds, start_at)
    policy = "ACTIVE" if threads == 1 else "PASSIVE"  # as `default_replica_env` sets them
    running = [
        subprocess.Popen(command, env=_child_env(policy), stdout=subprocess.PIPE, text=True)
        for _ in range(processes)
    ]
    runs = [_last_json(process.communicate(timeout=20 * seconds + 120)[0]) for process in running]
    if any(process.returncode for process in running):
        raise RuntimeError("an in-process measurement failed")
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
    command = _in_process_command(weights, threads * replicas, batch_size, seconds)
    runs = [
        _last_json(subprocess.run(
            command, env=_child_env(policy), capture_output=True, text=True, check=True,
            timeout=20 * seconds + 120,
        ).stdout)
        for policy in policies
    ]  # fmt: skip
    if replicas > 1:
        runs.append(side_by_side(weights, replicas, threads, batch_size, seconds))
    layout = runs[-1] if replicas > 1 else runs[0]
    return {**best_of(runs), "replica_layout_call_ms": layout["call_ms"]}


def best_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The best of several `in_process` results: the fastest, and the lowest CPU."""
    best = max(runs, key=lambda r: r["rps"])
    return {**best, "cpu_ms_per_image": min(r["cpu_ms_per_image"] for r in runs)}


def _overall_rate(phases: list[dict]) -> float:
    """Requests/s over several load generator phases: all calls over all their time."""
    calls = sum(phase["calls"] for phase in phases)
    return calls / sum(phase["calls"] / phase["requests_per_s"] for phase in phases)


def _environment(args: argparse.Namespace) -> dict[str, Any]:
    import grpc
    import torch

    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        platform.processor(),
    ) if Path("/proc/cpuinfo").exists() else platform.processor()  # fmt: skip
    return {
        "device": "cpu",
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "replicas": args.replicas,
        "torch_threads_per_replica": args.threads,
        "fill_delay_us": args.fill_delay_us,
        "precision": "fp32",
        "servers_omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "PASSIVE"),
        "load_average_at_start": os.getloadavg(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "grpcio": grpc.__version__,
    }


def run(args: argparse.Namespace) -> BenchReport:
    """Run every phase (see the module docstring) and return the report."""
    duration, warmup = (2.0, 0.5) if args.quick else (args.duration, args.warmup)
    loadgen = resolve_loadgen(args.loadgen)
    report = BenchReport("infer", environment={**_environment(args), "load_generator": loadgen})
    extra_env = dict(item.split("=", 1) for item in args.server_env)
    figures, ratios = report.figures, report.ratios
    with tempfile.TemporaryDirectory(prefix="augserve-bench-infer-") as tmp:
        work = Path(tmp)
        weights = write_repository(
            work / "repo", args.max_batch_size, args.threads, args.replicas, args.fill_delay_us
        )
        serve = [
            sys.executable, "-m", "augserve.server.cli", "serve", "--port", "0",
            "--metrics-port", "0", "--model-repository", str(work / "repo"),
            "--ready-file", str(work / "augserve.port"),
        ]  # fmt: skip
        augserve = server_process(serve, work / "augserve.port", work / "augserve.log", extra_env)
        rounds = 1 if args.quick else args.rounds
        served: list[dict] = []
        ceilings: list[dict[str, Any]] = []
        cpu = {"server": 0.0, "replicas": 0.0, "ray_other": 0.0}
        with augserve as (port, pid):
            before = batch_statistics(port)
            for index in range(rounds):
                # A short loaded phase, then the in-process ceiling while the server idles:
                # each pair sees the same drift in this VM's speed.
                round_before, cpu_before = batch_statistics(port), cpu_seconds(pid)
                served.append(run_loadgen(
                    loadgen, port, args.concurrency, duration / rounds,
                    warmup if index == 0 else 1.0, work / f"c{args.concurrency}-{index}.json",
                ))  # fmt: skip
                round_after, cpu_after = batch_statistics(port), cpu_seconds(pid)
                for key in cpu:
                    cpu[key] += cpu_after[key] - cpu_before[key]
                round_rows, round_batches = (
                    a - b for a, b in zip(round_after[:2], round_before[:2], strict=True)
                )
                ceilings.append(best_in_process(
                    weights, args.threads, args.replicas, max(1, round(round_rows / round_batches)),
                    max(0.5, duration / rounds / 3),
                    ("PASSIVE",) if args.quick else ("PASSIVE", None),
                ))  # fmt: skip
            rows, executions, compute_ns, hop_ns = (
                a - b for a, b in zip(batch_statistics(port), before, strict=True)
            )
            mean_batch = rows / executions
            batch_compute_ms = compute_ns / executions / 1e6
            # One client, in slices, each followed by the in-process batch-1 latency over
            # as long: this VM's speed swings within seconds, and each slice is compared
            # with the reference measured right after it.
            slices = C1_SLICES_PER_ROUND * rounds
            c1_before = batch_statistics(port)
            c1: list[dict] = []
            b1: list[float] = []
            with batch1_reference(weights, args.threads * args.replicas) as reference:
                for index in range(slices):
                    c1.append(run_loadgen(
                        loadgen, port, 1, duration / slices, warmup if index == 0 else 1.0,
                        work / f"c1-{index}.json",
                    ))  # fmt: skip
                    b1.append(reference(duration / slices))
            c1_delta = [a - b for a, b in zip(batch_statistics(port), c1_before, strict=True)]
        ceiling = best_of(ceilings)
        layout_calls = [ms for round_ in ceilings for ms in round_["replica_layout_call_ms"]]

        c = args.concurrency
        calls = sum(phase["calls"] for phase in served)
        requests_per_s = _overall_rate(served)
        p99_ms = max(phase["p99_ms"] for phase in served)
        loadgen_cpu_ms = sum(phase["cpu_ms_per_request"] * phase["calls"] for phase in served)
        total_cpu_ms = (1e3 * sum(cpu.values()) + loadgen_cpu_ms) / calls
        figures.update({
            f"augserve_c{c}_requests_per_s": requests_per_s,
            f"augserve_c{c}_each_round": " / ".join(
                f"{phase['requests_per_s']:,.0f}" for phase in served),
            f"augserve_c{c}_p50_ms": statistics.median(phase["p50_ms"] for phase in served),
            f"augserve_c{c}_p99_ms": p99_ms,
            f"augserve_c{c}_mean_batch_size": mean_batch,
            f"augserve_c{c}_batch_compute_ms": batch_compute_ms,
            f"augserve_c{c}_replica_round_trip_ms_per_batch": hop_ns / executions / 1e6,
            f"augserve_c{c}_server_cpu_ms_per_request": 1e3 * cpu["server"] / calls,
            f"augserve_c{c}_replica_cpu_ms_per_request": 1e3 * cpu["replicas"] / calls,
            f"augserve_c{c}_ray_other_cpu_ms_per_request": 1e3 * cpu["ray_other"] / calls,
            f"loadgen_c{c}_cpu_ms_per_request": loadgen_cpu_ms / calls,
            f"augserve_c{c}_total_cpu_ms_per_request": total_cpu_ms,
            "inprocess_cpu_ms_per_image": ceiling["cpu_ms_per_image"],
            # Noise-resistant view of served_vs_inprocess: images per CPU-second, served
            # (server, replica, rest of Ray, load generator) over in-process.
            f"cpu_efficiency_c{c}_vs_inprocess": ceiling["cpu_ms_per_image"] / total_cpu_ms,
            "augserve_c1_requests_per_s": _overall_rate(c1),
            "augserve_c1_p50_ms": statistics.median(phase["p50_ms"] for phase in c1),
            "augserve_c1_each_slice_p50_ms": " / ".join(f"{phase['p50_ms']:.2f}" for phase in c1),
            "augserve_c1_p99_ms": max(phase["p99_ms"] for phase in c1),
            "augserve_c1_batch_compute_ms": c1_delta[2] / c1_delta[1] / 1e6,
            "augserve_c1_replica_round_trip_ms_per_batch": c1_delta[3] / c1_delta[1] / 1e6,
            "inprocess_batch_size": max(1, round(mean_batch)),
            "inprocess_images_per_s": ceiling["rps"],
            "inprocess_each_round": " / ".join(f"{r['rps']:,.0f}" for r in ceilings),
            "inprocess_batch_ms": ceiling["batch_ms"],
            # The model alone, in the replicas' layout at the served batch size: how far
            # this host's own swings put one batch's p99 above its mean, with no queue.
            "inprocess_batch_p99_over_mean": float(
                np.percentile(layout_calls, 99) / np.mean(layout_calls)
            ),
            "inprocess_b1_ms": statistics.median(b1),
            "inprocess_b1_each_slice_ms": " / ".join(f"{ms:.2f}" for ms in b1),
        })  # fmt: skip
        # Paired: each round's served rate over the ceiling measured right after it.
        ratios["served_vs_inprocess_c32"] = statistics.median(
            phase["requests_per_s"] / ceiling_round["rps"]
            for phase, ceiling_round in zip(served, ceilings, strict=True)
        )
        ratios["p99_over_batch_compute_c32"] = p99_ms / batch_compute_ms
        # Paired as well: each slice's p50 over the reference measured right after it.
        ratios["c1_p50_added_ms"] = statistics.median(
            phase["p50_ms"] - ms for phase, ms in zip(c1, b1, strict=True)
        )

        if args.baseline == "ray-serve":
            baseline = [
                sys.executable, "-m", "augserve.server.bench.rayserve_baseline",
                "--state-dict", str(weights), "--threads", str(args.threads),
                "--replicas", str(args.replicas), "--model-name", MODEL,
                "--ready-file", str(work / "rayserve.port"),
            ]  # fmt: skip
            rayserve = server_process(
                baseline, work / "rayserve.port", work / "rayserve.log", extra_env
            )
            with rayserve as (port, _):
                serve_c = run_loadgen(
                    loadgen, port, c, duration, warmup, work / "rayserve.json",
                    [("application", MODEL)],
                )  # fmt: skip
            figures.update({
                f"rayserve_c{c}_requests_per_s": serve_c["requests_per_s"],
                f"rayserve_c{c}_p50_ms": serve_c["p50_ms"],
                f"rayserve_c{c}_p99_ms": serve_c["p99_ms"],
            })  # fmt: skip
            ratios["served_vs_rayserve_c32"] = requests_per_s / serve_c["requests_per_s"]
    report.targets = {name: TARGETS[name] for name in ratios}
    report.environment.update(
        duration_s=duration, warmup_s=warmup, concurrency=args.concurrency, server_env=extra_env
    )
    return report
