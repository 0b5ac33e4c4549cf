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
   `served_vs_inprocess_c32` (the key names `--concurrency`) is the median over rounds
   of served / ceiling; p99 is the worst round's.
3. `C1_SLICES_PER_ROUND * --rounds` slices at 1 client, each followed by the
   in-process batch-1 latency over as long (a warm process that idles in between:
   the median on one thread and on the replicas' thread budget, the lower of the
   two); `c1_p50_added_ms` is the median over slices of the slice's p50 minus the
   reference measured right after it. Then SIGTERM to the server, which must exit 0.
4. With `--tls` and/or `--auth` (`bench.secured`): a second `augserve serve` with a
   throwaway CA's server certificate for 127.0.0.1 and/or a token file holding one
   `infer` token, beside the first; then `--rounds` pairs of rounds at `--concurrency`,
   each a plaintext round on the first server and a secured one (TLS, `authorization:
   Bearer`) on the second, same duration, back to back. `tls_auth_vs_plain_c32` is the
   median over pairs of secured / plaintext requests/s. Both servers then get SIGTERM.
5. With `--baseline ray-serve`: the same model behind Ray Serve's gRPC proxy with
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

Modules: `model` (the repository), `lifecycle` (every server and worker in a process
group of its own, stopped whatever happens), `load` (the load generator),
`inprocess` (the ceiling's workers), `peers` (the baseline servers), `server_stats`
(ModelStatistics, CPU time) and `infer_report` (figures, ratios, targets).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any

from augserve.server.bench import infer_report, lifecycle
from augserve.server.bench.inprocess import batch1_reference, best_in_process
from augserve.server.bench.load import resolve_loadgen, run_loadgen
from augserve.server.bench.model import write_repository
from augserve.server.bench.peers import PEERS, run_peer
from augserve.server.bench.report import BenchReport
from augserve.server.bench.secured import make_credentials
from augserve.server.bench.server_stats import batch_statistics, cpu_seconds

C1_SLICES_PER_ROUND = 2  # one-client slices per --rounds (each paired with a reference)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `augserve bench infer`."""
    parser.add_argument("--duration", type=float, default=15.0, help="measured seconds per phase")
    parser.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds per phase")
    parser.add_argument("--concurrency", type=int, default=32, help="clients of the loaded phase")
    parser.add_argument(
        "--baseline", choices=("none", *PEERS), default="ray-serve", help="peer to compare"
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
        "--tls", action="store_true",
        help="also serve over TLS (a throwaway CA and certificate) and compare with plaintext",
    )
    parser.add_argument(
        "--auth", action="store_true",
        help="also serve with --auth-tokens (one bearer token) and compare with plaintext",
    )
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for both servers (e.g. a Ray setting to try)",
    )


def serve_command(repository: Path, ready_file: Path) -> list[str]:
    """`augserve serve` on free ports for `repository`, writing its port to `ready_file`."""
    return [
        sys.executable, "-m", "augserve.server.cli", "serve", "--port", "0",
        "--metrics-port", "0", "--model-repository", str(repository),
        "--ready-file", str(ready_file),
    ]  # fmt: skip


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


def secured_name(args: argparse.Namespace) -> str:
    """What the secured server adds: "tls_auth", "tls" or "auth" ("" for neither)."""
    return "_".join(part for part, on in (("tls", args.tls), ("auth", args.auth)) if on)


def _secured_rounds(
    args: argparse.Namespace, loadgen: str, port: int, work: Path, env: dict[str, str],
    rounds: int, duration: float, warmup: float,
) -> list[tuple[dict[str, Any], dict[str, Any]]]:  # fmt: skip
    """Start the secured server beside the plaintext one at `port`; (plain, secured) pairs."""
    credentials = make_credentials(work / "secured", args.tls, args.auth)
    ready = work / "secured.port"
    c = args.concurrency
    pairs = []
    with lifecycle.serving(
        [*serve_command(work / "repo", ready), *credentials.serve_flags()], ready,
        work / "secured.log", env, name="augserve serve (secured)",
    ) as (secured_port, _):  # fmt: skip
        for index in range(rounds):
            first = warmup if index == 0 else 1.0
            plain = run_loadgen(loadgen, port, c, duration, first, work / f"plain-{index}.json")
            secured = run_loadgen(
                loadgen, secured_port, c, duration, first, work / f"secured-{index}.json",
                credentials.metadata(), credentials.root_cert,
            )
            pairs.append((plain, secured))
    return pairs


def _difference(after: tuple[int, ...], before: tuple[int, ...]) -> tuple[int, int, int, int]:
    rows, executions, compute_ns, hop_ns = (a - b for a, b in zip(after, before, strict=True))
    return rows, executions, compute_ns, hop_ns


def run(args: argparse.Namespace) -> BenchReport:
    """Run every phase (see the module docstring) and return the report."""
    duration, warmup = (2.0, 0.5) if args.quick else (args.duration, args.warmup)
    loadgen = resolve_loadgen(args.loadgen)
    report = BenchReport("infer", environment={**_environment(args), "load_generator": loadgen})
    extra_env = dict(item.split("=", 1) for item in args.server_env)
    c = args.concurrency
    rounds = 1 if args.quick else args.rounds
    with tempfile.TemporaryDirectory(prefix="augserve-bench-infer-") as tmp:
        work = Path(tmp)
        weights = write_repository(
            work / "repo", args.max_batch_size, args.threads, args.replicas, args.fill_delay_us
        )
        served: list[dict] = []
        ceilings: list[dict[str, Any]] = []
        cpu = {"server": 0.0, "replicas": 0.0, "ray_other": 0.0}
        with lifecycle.serving(
            serve_command(work / "repo", work / "augserve.port"), work / "augserve.port",
            work / "augserve.log", lifecycle.child_env(**extra_env), name="augserve serve",
        ) as (port, server):  # fmt: skip
            before = batch_statistics(port)
            for index in range(rounds):
                # A short loaded phase, then the in-process ceiling while the server idles:
                # each pair sees the same drift in this VM's speed.
                round_before, cpu_before = batch_statistics(port), cpu_seconds(server.pid)
                served.append(run_loadgen(
                    loadgen, port, c, duration / rounds, warmup if index == 0 else 1.0,
                    work / f"c{c}-{index}.json",
                ))  # fmt: skip
                round_after, cpu_after = batch_statistics(port), cpu_seconds(server.pid)
                for key in cpu:
                    cpu[key] += cpu_after[key] - cpu_before[key]
                round_rows, round_batches, _, _ = _difference(round_after, round_before)
                ceilings.append(best_in_process(
                    weights, args.threads, args.replicas, max(1, round(round_rows / round_batches)),
                    max(0.5, duration / rounds / 3),
                    ("PASSIVE",) if args.quick else ("PASSIVE", None),
                ))  # fmt: skip
            batches = _difference(batch_statistics(port), before)
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
            c1_batches = _difference(batch_statistics(port), c1_before)
            secured = _secured_rounds(
                args, loadgen, port, work, lifecycle.child_env(**extra_env), rounds,
                duration / rounds, warmup,
            ) if secured_name(args) else []  # fmt: skip
        peers = {}
        if args.baseline in PEERS:
            peers[PEERS[args.baseline].key] = run_peer(
                args.baseline, weights, args.threads, args.replicas, loadgen, c, duration,
                warmup, work, extra_env,
            )  # fmt: skip
    infer_report.fill(report, infer_report.Measured(
        c, served, ceilings, cpu, batches, c1, b1, c1_batches, peers, secured,
        secured_name(args) or "tls_auth",
    ))  # fmt: skip
    report.environment.update(
        duration_s=duration, warmup_s=warmup, concurrency=c, server_env=extra_env,
        secured_server=secured_name(args) or None,
    )
    return report
