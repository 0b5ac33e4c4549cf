"""`augserve bench chaos`: mixed load over a two-node Ray cluster while things fail.

A head and a worker node (`bench.cluster.RayCluster`), a server joining them with
`--ray-address`, three small models spread over both nodes, two augment and two stream
actors. `--clients` closed-loop clients (mostly ModelInfer on the three models, some
Augment) and `--trainers` StreamBatches trainers run for `--duration` seconds
(`bench.chaos_load` checks every answer). Every `--fault-every` seconds one replica,
augment or stream actor process is SIGKILLed at random; at 40% of the run the worker
node's raylet is killed, and at 65% a fresh worker node joins.

Reported: calls by kind and status, wrong results, lost and duplicated samples, p50 and
p99 per kind, ModelInfer answers per second, the time after each fault until that
throughput is back to 90% of the 3 s before it, the server's RSS each second; `--plot`
draws the timeline with the faults marked.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from tempfile import TemporaryDirectory

import numpy as np
import psutil

from augserve.server.bench import chaos_load, lifecycle
from augserve.server.bench.cluster import RayCluster
from augserve.server.bench.report import BenchReport, host_environment

ACTOR_CLASSES = ("ModelReplica", "AugmentWorker", "StreamWorker")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `augserve bench chaos`."""
    parser.add_argument("--clients", type=int, default=500, help="concurrent unary clients")
    parser.add_argument("--trainers", type=int, default=3, help="StreamBatches trainers")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    parser.add_argument("--fault-every", type=float, default=6.0,
                        help="seconds between actor kills")
    parser.add_argument("--plot", type=Path, default=Path("chaos.png"),
                        help="the timeline PNG")
    parser.add_argument("--seed", type=int, default=0, help="seeds the faults")
    parser.add_argument("--server-log", type=Path, default=None,
                        help="keep the server's log there (default: a temporary folder)")
    parser.add_argument("--warm-spares", type=int, default=1,
                        help="the server's --inference-warm-spares (per model version)")


def _repository(root: Path) -> Path:
    import torch
    from torch import nn

    class Double(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * 2

    class Flip(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 1 - x

    class Square(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * x

    for name, module in (("double", Double()), ("flip", Flip()), ("square", Square())):
        (root / name / "1").mkdir(parents=True)
        torch.jit.script(module).save(str(root / name / "1" / "model.pt"))
        (root / name / "config.json").write_text(json.dumps({
            "platform": "torchscript", "max_batch_size": 64,
            "input": [{"name": "x", "datatype": "FP32", "dims": [chaos_load.DIMS]}],
            "output": [{"name": "y", "datatype": "FP32", "dims": [chaos_load.DIMS]}],
            "dynamic_batching": {"max_queue_size": 256},
            "instance_group": {"count": 2, "num_cpus": 0.1, "num_threads": 1},
        }))
    return root


def _actor_processes() -> list[psutil.Process]:
    """Live Ray worker processes running one of `ACTOR_CLASSES` (by their process title)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        title = " ".join(process.info["cmdline"] or [])
        if title.startswith("ray::") and any(c in title for c in ACTOR_CLASSES):
            found.append(process)
    return found


def _faults(cluster: RayCluster, args: argparse.Namespace, stop: threading.Event,
            started: float, faults: list[tuple[float, str]]) -> None:
    """Kill an actor every `fault_every` s; the worker node once, and bring one back."""
    rng = random.Random(args.seed)
    node_down: float | None = 0.4 * args.duration
    node_up: float | None = 0.65 * args.duration
    next_kill = min(args.fault_every, 0.2 * args.duration)
    while not stop.wait(0.2):
        now = time.monotonic() - started
        if node_down is not None and now >= node_down:
            cluster.kill_worker()
            faults.append((now, "worker node"))
            node_down = None
        elif node_up is not None and node_down is None and now >= node_up:
            faults.append((now, "node back"))  # it joins some seconds later
            threading.Thread(target=cluster.start_worker, daemon=True).start()
            node_up = None
        elif now >= next_kill:
            victims = _actor_processes()
            if victims:
                victim = rng.choice(victims)
                title = " ".join(victim.cmdline())
                victim.kill()
                faults.append((now, next(c for c in ACTOR_CLASSES if c in title)))
            next_kill = now + args.fault_every


async def _prepare(url: str) -> tuple[object, dict[int, object], dict[int, bytes]]:
    """Start every actor before the clock; (the augment stub, requests, reference digests).

    The references of the Augment seeds, one call per model, one stream batch.
    """
    from skimage import data, transform

    from augserve.clients import RemoteLoader
    from augserve.clients.infer import AsyncInferClient
    from augserve.clients.proto.augserve.v1 import augment_pb2_grpc

    photo = (transform.resize(data.astronaut(), (64, 64)) * 255).astype(np.uint8)
    stub = augment_pb2_grpc.AugmentServiceStub(_channel(url))
    requests = {seed: chaos_load.augment_request(seed, [photo] * 4) for seed in range(4)}
    expected = {seed: chaos_load.answer_bytes(await stub.Augment(r, timeout=300))
                for seed, r in requests.items()}
    async with AsyncInferClient(url) as client:
        for model in chaos_load.MODELS:
            await client.infer(model, {"x": np.ones((1, chaos_load.DIMS), np.float32)},
                               timeout=300)

    def one_batch() -> None:
        with RemoteLoader(url, dataset="digits", pipeline=chaos_load.PIPELINE, batch_size=64,
                          epochs=1) as loader:
            next(iter(loader.batches()))

    await asyncio.to_thread(one_batch)
    return stub, requests, expected


async def _load(url: str, args: argparse.Namespace, record: chaos_load.Record,
                stop: asyncio.Event, prepared: tuple[object, dict[int, object], dict[int, bytes]],
                ) -> None:  # fmt: skip
    stub, requests, expected = prepared
    augmenting = max(1, args.clients // 10)
    tasks = [asyncio.create_task(chaos_load.augment_client(stub, requests, expected, n, stop,
                                                           record))
             for n in range(augmenting)]
    tasks += [asyncio.create_task(chaos_load.infer_client(url, n, stop, record))
              for n in range(args.clients - augmenting)]
    await asyncio.gather(*tasks)


def _channel(url: str):  # type: ignore[no-untyped-def]
    """An aio channel to the server, with room for Augment answers."""
    import grpc

    return grpc.aio.insecure_channel(url, options=[("grpc.max_receive_message_length",
                                                    64 << 20)])


def _timeline(record: chaos_load.Record, seconds: int, ok: bool = True) -> list[int]:
    """ModelInfer answers per second: the OK ones, or (`ok` False) the others."""
    per_second = [0] * seconds
    for kind, status, start, latency in record.calls:
        second = int(start + latency)
        if kind == "infer" and (status == "OK") == ok and 0 <= second < seconds:
            per_second[second] += 1
    return per_second


def _recoveries(timeline: list[int], faults: list[tuple[float, str]]) -> list[float]:
    """Per fault: seconds until ModelInfer throughput is back to 90% of the 3 s before it."""
    out = []
    for at, _ in faults:
        second = int(at)
        before = timeline[max(0, second - 3):second]
        if not before or not any(before):
            continue
        target = 0.9 * float(np.mean(before))
        back = next((s for s in range(second, len(timeline)) if timeline[s] >= target), None)
        out.append(float(len(timeline) - second if back is None else max(0, back + 1 - at)))
    return out


def _plot(path: Path, timeline: list[int], rss: list[tuple[float, float]],
          faults: list[tuple[float, str]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axis = pyplot.subplots(figsize=(10, 4))
    axis.plot(range(len(timeline)), timeline, label="ModelInfer answers/s")
    axis.set_xlabel("s")
    axis.set_ylabel("answers/s")
    for at, what in faults:
        axis.axvline(at, color="red" if what == "worker node" else "grey", linestyle="--")
        axis.text(at, max(timeline or [1]), what, rotation=90, fontsize=7, va="top")
    memory = axis.twinx()
    memory.plot([t for t, _ in rss], [m for _, m in rss], color="green", label="server RSS")
    memory.set_ylabel("server RSS (MiB)")
    figure.legend(loc="lower left")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def run(args: argparse.Namespace) -> BenchReport:
    """Start the cluster and the server, run the load and the faults, report."""
    with TemporaryDirectory(prefix="augserve-chaos-") as tmp, RayCluster(Path(tmp) / "nodes") \
            as cluster:
        cluster.start()
        root = _repository(Path(tmp) / "repository")
        command = [
            sys.executable, "-m", "augserve.server.cli", "serve", "--port", "0",
            "--metrics-port", "0", "--model-repository", str(root), "--ray-address",
            cluster.address, "--ready-file", str(Path(tmp) / "port"),
            "--augment-pool-size", "2", "--augment-actor-num-cpus", "0.1",
            "--stream-pool-size", "2", "--stream-actor-num-cpus", "0.1",
            "--max-inflight-per-client", str(max(256, 2 * args.clients)),
            "--inference-warm-spares", str(args.warm_spares),
        ]  # fmt: skip
        log = args.server_log or Path(tmp) / "serve.log"
        with lifecycle.serving(command, Path(tmp) / "port", log,
                               cluster.env(), "the chaos server") as (port, group):
            return _measure(f"127.0.0.1:{port}", psutil.Process(group.pid), cluster, args)


def _measure(url: str, server: psutil.Process, cluster: RayCluster,
             args: argparse.Namespace) -> BenchReport:
    record = chaos_load.Record()
    faults: list[tuple[float, str]] = []
    rss: list[tuple[float, float]] = []
    stop_threads = threading.Event()
    trainers = [threading.Thread(target=chaos_load.trainer, args=(url, 100 + n, stop_threads,
                                                                   record), daemon=True)
                for n in range(args.trainers)]

    async def main() -> None:
        prepared = await _prepare(url)
        stop = asyncio.Event()
        record.started = time.monotonic()
        for thread in trainers:
            thread.start()
        load = asyncio.create_task(_load(url, args, record, stop, prepared))
        injector = threading.Thread(target=_faults, args=(cluster, args, stop_threads,
                                                          record.started, faults), daemon=True)
        injector.start()
        while time.monotonic() - record.started < args.duration:
            rss.append((time.monotonic() - record.started, server.memory_info().rss / 2**20))
            await asyncio.sleep(1.0)
        stop.set()
        stop_threads.set()
        await load
        injector.join(30)

    asyncio.run(main())
    for thread in trainers:
        thread.join(60)
    return _report(record, faults, rss, args)


def _report(record: chaos_load.Record, faults: list[tuple[float, str]],
            rss: list[tuple[float, float]], args: argparse.Namespace) -> BenchReport:
    seconds = int(args.duration)
    timeline = _timeline(record, seconds)
    recoveries = _recoveries(timeline, [f for f in faults if f[1] != "node back"])
    statuses = Counter(f"{kind} {status}" for kind, status, _, _ in record.calls)
    figures: dict[str, object] = {"calls": dict(sorted(statuses.items())),
                                  "stream_passes": record.passes,
                                  "faults": [{"at_s": round(a, 1), "what": w} for a, w in faults],
                                  "recovery_s": [round(r, 1) for r in recoveries],
                                  "infer_per_second": timeline,
                                  "server_rss_mib": [round(m, 1) for _, m in rss],
                                  "unexpected": record.unexpected[:20],
                                  "expected_errors": dict(record.expected.most_common(8)),
                                  "infer_errors_per_second": _timeline(record, seconds,
                                                                       ok=False)}
    for kind in ("infer", "augment", "stream_batch"):
        latencies = [lat for k, s, _, lat in record.calls if k == kind and s == "OK"]
        if latencies:
            figures[f"{kind}_p50_ms"] = round(1e3 * float(np.quantile(latencies, 0.5)), 2)
            figures[f"{kind}_p99_ms"] = round(1e3 * float(np.quantile(latencies, 0.99)), 2)
    steady = [m for t, m in rss if t >= min(5.0, args.duration / 4)]
    ratios = {
        "wrong_results": float(record.wrong), "lost_samples": float(record.lost),
        "duplicated_samples": float(record.duplicated),
        "unexpected_errors": float(len(record.unexpected)),
        "max_recovery_s": max(recoveries, default=0.0),
        "rss_growth_mib": (steady[-1] - steady[0]) if len(steady) > 1 else 0.0,
    }
    _plot(args.plot, timeline, rss, faults)
    figures["plot"] = str(args.plot)
    return BenchReport(
        "chaos", figures, ratios,
        targets={"wrong_results": ("<=", 0), "lost_samples": ("<=", 0),
                 "duplicated_samples": ("<=", 0), "unexpected_errors": ("<=", 0),
                 "max_recovery_s": ("<=", 10.0)},
        environment={**host_environment(), "clients": args.clients, "trainers": args.trainers,
                     "duration_s": args.duration, "warm_spares": args.warm_spares},
    )
