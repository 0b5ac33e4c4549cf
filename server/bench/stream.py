"""StreamBatches over loopback vs the same pool standalone vs a local torch DataLoader.

ImageNet training pipeline (RandomResizedCrop 224, flip, colour jitter, grayscale),
uint8 NCHW out (normalization left to the trainer), on the built-in "photos" dataset
(six bundled photos at 256x256, repeated). In one run:

1. local: `torch.utils.data.DataLoader` with 2 worker processes running the same
   pipeline in albumentations, uint8 out, default collate; samples/s seen by the loop.
2. standalone: the stream's Ray pool and window, driven in this process with no gRPC
   (the server's ceiling), the workers handing the pixels over through a private
   shared-memory ring as they do for a stream; samples/s.
3. stream: `augserve.clients.RemoteLoader` with its defaults, in a separate consumer
   process that only counts batches, over loopback (127.0.0.1) from a StreamBatches
   server in this process sharing that pool; samples/s, the consumer's CPU time per
   batch, and this (server) process's CPU time per batch. On loopback the loader's
   default transport is the same-host one: the workers write the pixels into the
   stream's shared-memory ring and the consumer gets them as views of its slots
   (zero-copy). The share of its batches that went that way is reported
   (`stream_shared_memory_share`, from the server's transport counters).
4. inline: the same with `shared_memory=False`, the pixels inside the gRPC messages,
   as a consumer on another host gets them. On this box both ends of that TCP
   connection share the CPUs with the workers.

Phases alternate (standalone, stream, inline, standalone, stream, inline, standalone)
so that load from other processes drifts over all alike; each figure is the mean of its
phases.
CPU per batch is also reported for this process and for the actors in both kinds of
phase (per counted batch, so slightly high: the window's and prefetch's batches made
past a phase's end count in it), which splits the stream's cost into the pool's work
and the transport's.

Ratios: `stream_vs_standalone` (target >= 0.9), `stream_vs_local_dataloader`, and the
same two for the inline transport: `stream_inline_vs_standalone`,
`stream_inline_vs_local_dataloader`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import threading
import time
from typing import Any

from augserve.server.bench import lifecycle
from augserve.server.bench.report import BenchReport

DATASET = "bench_photos"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`--batch`, `--batches`, `--pool-size`, `--window`, `--prefetch`, `--rounds`, `--quick`."""
    parser.add_argument("--batch", type=int, default=64, help="samples per batch")
    parser.add_argument("--batches", type=int, default=150, help="timed batches per phase")
    parser.add_argument("--pool-size", type=int, default=2, help="stream worker actors")
    parser.add_argument("--window", type=int, default=8, help="batches in flight per stream")
    parser.add_argument("--prefetch", type=int, default=4, help="RemoteLoader prefetch")
    parser.add_argument("--rounds", type=int, default=3, help="stream phases, each between "
                        "two standalone phases")
    parser.add_argument("--quick", action="store_true", help="a few seconds: small batches")
    parser.add_argument("--source", choices=("photos", "jpeg"), default="photos",
                        help="photos: the bundled photos decoded in memory; jpeg: a folder of "
                             "generated ImageNet-like JPEGs, decoded every epoch "
                             "(see stream_jpeg)")
    parser.add_argument("--images", type=int, default=512,
                        help="--source jpeg: JPEG files to generate")
    parser.add_argument("--jpeg-dir", default="",
                        help="--source jpeg: generate into (or reuse) this folder instead of "
                             "a temporary one")


class AlbumentationsPhotos:
    """The local baseline's dataset: the photos, augmented by albumentations, uint8 CHW."""

    def __init__(self, count: int) -> None:
        """`count` samples cycling over the six photos."""
        from augserve.server.data.datasets import BuiltinDataset

        self.dataset = BuiltinDataset("photos", count=count)
        self.transform = None

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        if self.transform is None:  # built in the worker process
            import cv2

            from augserve.server.bench.albumentations_pipeline import imagenet_train

            cv2.setNumThreads(1)
            self.transform = imagenet_train()
        image = self.transform(image=self.dataset.load(index))["image"]
        return image.transpose(2, 0, 1).copy(), int(self.dataset.labels[index])


def _local_dataloader(batch: int, batches: int) -> float:
    import torch

    dataset = AlbumentationsPhotos(batch * (batches + 2))
    # Spawned, not forked: this process holds gRPC and Ray threads, and a forked child
    # can deadlock on a lock one of them held.
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, num_workers=2,
                                         shuffle=True, multiprocessing_context="spawn")
    samples, started = 0, 0.0
    for k, (images, _) in enumerate(loader):
        if k == 2:  # workers are up
            samples, started = 0, time.perf_counter()
        samples += len(images)
    return samples / (time.perf_counter() - started)


class _Server:
    """A StreamBatches server on a loop thread of this process, around one pool."""

    def __init__(self, args: argparse.Namespace, batch: int, dataset: Any = None) -> None:
        """Serve `dataset` (a DatasetSpec; default the photos) as DATASET, over one pool."""
        import grpc

        from augserve.server.data.datasets import DatasetSpec
        from augserve.server.interceptors import ErrorMappingInterceptor
        from augserve.server.stream.pool import StreamPool
        from augserve.server.stream.servicer import StreamServicer, register_servicer
        from augserve.server.stream.settings import StreamSettings

        count = batch * 16
        self.settings = StreamSettings(
            window=args.window, pool_size=args.pool_size, backend="fast",
            datasets={DATASET: dataset or DatasetSpec("builtin", name="photos", count=count)})
        self.pool = StreamPool(args.pool_size, "fast")
        self.servicer = StreamServicer(self.settings, self.pool)
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()

        async def start() -> int:
            server = grpc.aio.server(interceptors=[ErrorMappingInterceptor()],
                                     options=[("grpc.max_send_message_length", 256 << 20)])
            register_servicer(server, self.servicer)
            port = server.add_insecure_port("127.0.0.1:0")
            await server.start()
            self.server = server
            return port

        self.port = self.call(start())

    def call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    async def standalone(self, batch: int, batches: int) -> float:
        from augserve.clients.proto.augserve.v1 import stream_pb2 as pb
        from augserve.server.stream.ring import RingWriter
        from augserve.server.stream.stream import produce

        samples, started, epoch, done = 0, 0.0, 0, 0
        while done < batches + 2:
            job, _, _ = await self.servicer.job(pb.StreamRequest(
                dataset=DATASET, pipeline_id="imagenet_train", batch_size=batch, seed=1,
                shuffle=True, epoch=epoch))
            # The workers hand the pixels over as they do for an inline stream: through a
            # private ring (see server/stream/ring.py), released at once.
            ring, completed = RingWriter(self.servicer.private_rings, batch, "standalone"), False
            try:
                async for made in produce(self.pool, job, self.settings.window, ring=ring):
                    placed = ring.place(made.result)
                    if placed is not None:
                        ring.release(placed[0])
                    done += 1
                    if done == 2:
                        samples, started = 0, time.perf_counter()
                    samples += len(made.indices)
                    if done == batches + 2:
                        break
                else:
                    completed = True
            finally:
                ring.finish(completed)
            epoch += 1
        return samples / (time.perf_counter() - started)

    def cpu_seconds(self) -> tuple[float, float]:
        """CPU seconds used so far by this process and by the pool's actors together."""
        import ray

        return time.process_time(), sum(ray.get([actor.cpu_seconds.remote()
                                                 for actor in self.pool.actors]))

    def stop(self) -> None:
        self.call(self.server.stop(None))
        self.call(self.servicer.aclose())
        self.pool.shutdown()
        self.loop.call_soon_threadsafe(self.loop.stop)


def _batches_sent() -> dict[str, float]:
    """Batches the StreamBatches service sent so far, per transport (its Prometheus counter)."""
    from prometheus_client import REGISTRY

    return {transport: REGISTRY.get_sample_value("augserve_stream_batches_total",
                                                 {"transport": transport}) or 0.0
            for transport in ("shared_memory", "inline")}


def _each(runs: list[dict[str, float]]) -> str:
    return " / ".join(f"{r['samples'] / r['wall']:,.0f}" for r in runs)


def run(args: argparse.Namespace) -> BenchReport:
    """Time the three phases and report samples/s, ratios and the client's CPU per batch.

    With `--source jpeg`, run `stream_jpeg` instead.
    """
    import os

    if args.source == "jpeg":
        from augserve.server.bench import stream_jpeg

        return stream_jpeg.run(args)

    import ray
    import torch

    batch = 16 if args.quick else args.batch
    batches = 6 if args.quick else args.batches
    rounds = 1 if args.quick else args.rounds
    local = _local_dataloader(batch, batches)
    started_ray = not ray.is_initialized()
    if started_ray:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        ray.init(num_cpus=16, include_dashboard=False, log_to_driver=False)
    server = _Server(args, batch)
    standalone_rates: list[float] = []
    streams: dict[str, list[dict[str, float]]] = {"stream": [], "inline": []}
    # phase: [server, actors] CPU seconds
    cpu = {"standalone": [0.0, 0.0], "stream": [0.0, 0.0], "inline": [0.0, 0.0]}
    default_sent = {"shared_memory": 0.0, "inline": 0.0}

    def timed(phase: str, work: Any) -> Any:
        before = server.cpu_seconds()
        result = work()
        after = server.cpu_seconds()
        cpu[phase] = [total + b - a for total, a, b in zip(cpu[phase], before, after,
                                                             strict=True)]
        return result

    def standalone_phase() -> None:
        standalone_rates.append(timed("standalone", lambda: server.call(
            server.standalone(batch, batches))))

    def stream_phase(transport: str) -> None:
        consumer = timed(transport, lambda: lifecycle.run(
            [sys.executable, "-m", "augserve.server.bench.stream_consumer",
             f"127.0.0.1:{server.port}", DATASET, str(batch), str(batches),
             str(args.prefetch), transport], timeout_s=600))
        streams[transport].append(json.loads(consumer.stdout.strip().splitlines()[-1]))

    try:
        # Warm-up, one untimed phase: actors up, dataset open, and the idle workers Ray
        # starts with a fresh instance settled (a first timed phase ran ~15-35% slow).
        server.call(server.standalone(batch, batches))
        standalone_phase()
        for _ in range(rounds):
            before = _batches_sent()
            stream_phase("stream")
            for transport, count in _batches_sent().items():
                default_sent[transport] += count - before[transport]
            stream_phase("inline")
            standalone_phase()
    finally:
        server.stop()
        if started_ray:
            ray.shutdown()
    standalone = statistics.mean(standalone_rates)
    standalone_count = len(standalone_rates) * (batches + 2)
    rate, client_ms, server_ms, actors_ms = {}, {}, {}, {}
    for transport, runs in streams.items():
        count = sum(r["batches"] for r in runs)
        rate[transport] = statistics.mean(r["samples"] / r["wall"] for r in runs)
        client_ms[transport] = 1000 * sum(r["cpu"] for r in runs) / count
        server_ms[transport] = 1000 * cpu[transport][0] / count
        actors_ms[transport] = 1000 * cpu[transport][1] / count
    server_ms["standalone"] = 1000 * cpu["standalone"][0] / standalone_count
    actors_ms["standalone"] = 1000 * cpu["standalone"][1] / standalone_count
    return BenchReport(
        name="stream",
        figures={
            "stream_samples_per_s": rate["stream"],
            "stream_inline_samples_per_s": rate["inline"],
            "standalone_samples_per_s": standalone,
            "standalone_each_round": " / ".join(f"{r:,.0f}" for r in standalone_rates),
            "stream_each_round": _each(streams["stream"]),
            "stream_inline_each_round": _each(streams["inline"]),
            "stream_shared_memory_share": default_sent["shared_memory"] / max(
                sum(default_sent.values()), 1),
            "local_dataloader_samples_per_s": local,
            "client_cpu_ms_per_batch": client_ms["stream"],
            "client_cpu_ms_per_batch_inline": client_ms["inline"],
            "server_process_cpu_ms_per_batch": server_ms["stream"],
            "server_process_cpu_ms_per_batch_inline": server_ms["inline"],
            "standalone_server_process_cpu_ms_per_batch": server_ms["standalone"],
            "actors_cpu_ms_per_batch_stream": actors_ms["stream"],
            "actors_cpu_ms_per_batch_inline": actors_ms["inline"],
            "actors_cpu_ms_per_batch_standalone": actors_ms["standalone"],
            "stream_inline_mb_per_s": rate["inline"] * 3 * 224 * 224 / 1e6,
            "batch": batch,
            "timed_batches_per_phase": batches,
            "pool_size": args.pool_size,
            "window": args.window,
        },
        ratios={
            "stream_vs_standalone": rate["stream"] / standalone,
            "stream_vs_local_dataloader": rate["stream"] / local,
            "stream_inline_vs_standalone": rate["inline"] / standalone,
            "stream_inline_vs_local_dataloader": rate["inline"] / local,
        },
        targets={"stream_vs_standalone": (">=", 0.9)},
        environment={
            "pipeline": "imagenet_train at 224, uint8 NCHW (normalize left to the trainer)",
            "dataset": "built-in photos (six bundled photos at 256x256, repeated)",
            "local_dataloader": "torch DataLoader, 2 spawned workers, albumentations, uint8",
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
        },
    )
