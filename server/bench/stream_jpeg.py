"""`augserve bench stream --source jpeg`: end to end from a folder of JPEGs, per core.

A folder of `--images` generated JPEGs (`stream_jpeg_data`: sides 300-800 px, quality
85-95, six classes cut from the bundled photos), decoded every epoch (no decoded cache),
through the ImageNet training pipeline at 224 with uint8 NCHW out. In one run:

1. augserve standalone: the stream's Ray pool (`--pool-size` actors) and window driven in
   this process with no gRPC (`stream._Server.standalone`); the folder dataset region-
   decodes (`augserve.server.data.jpeg`: params from the header, DCT-scaled decode of
   each box).
2. augserve streamed: `RemoteLoader` in a consumer process, over loopback, default
   transport (shared memory on this host).
3. albumentations: a local `DataLoader`, 2 workers, `cv2.imdecode` + albumentations
   (`stream_jpeg_peers`).
4. torchvision: its PIL pipeline where torchvision imports; else the reason is reported.
5. DALI: the CPU-only pipeline, 1 thread, in a process of its own (optional).

Per core = images / CPU-seconds of every process doing the work (the pool's actors and
this process; plus the consumer for the stream; the loader and its workers; DALI's
process), so it does not depend on how many cores each uses. Standalone and stream
phases alternate (standalone first and last) so that other load drifts over both.

Ratios: `jpeg_fast_vs_albumentations_per_core` (target >= 1.5),
`jpeg_fast_vs_dali_cpu_per_core` (>= 2.5), `jpeg_stream_vs_standalone` (wall images/s,
>= 0.9).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from augserve.server.bench import lifecycle, stream_jpeg_peers
from augserve.server.bench.report import BenchReport
from augserve.server.bench.stream import DATASET, _Server
from augserve.server.bench.stream_jpeg_data import make_jpeg_folder


def _folder(args: argparse.Namespace, count: int) -> tuple[Path, Any]:
    """The JPEG folder (made, or reused when `--jpeg-dir` already holds `count` files)."""
    if args.jpeg_dir:
        root = Path(args.jpeg_dir)
        root.mkdir(parents=True, exist_ok=True)
        holder = None
    else:
        holder = tempfile.TemporaryDirectory(prefix="augserve-bench-jpeg-")
        root = Path(holder.name)
    if len(list(root.rglob("*.jpg"))) != count:
        make_jpeg_folder(root, count)
    return root, holder


def _dali(root: Path, batch: int, batches: int) -> dict[str, Any]:
    done = lifecycle.run([sys.executable, "-m", "augserve.server.bench.stream_jpeg_peers",
                          "dali", str(root), str(batch), str(batches)], timeout_s=600)
    lines = done.stdout.strip().splitlines()
    if not lines:
        return {"unavailable": f"DALI's process printed nothing: {done.stderr[-300:]}"}
    return json.loads(lines[-1])


def run(args: argparse.Namespace) -> BenchReport:
    """Time every peer on the same folder and report images/s per core and the ratios."""
    import os

    import ray
    import torch

    from augserve.server.data.datasets import DatasetSpec, FolderDataset

    batch = 16 if args.quick else args.batch
    batches = 4 if args.quick else args.batches
    rounds = 1 if args.quick else args.rounds
    count = min(args.images, 64) if args.quick else args.images
    root, holder = _folder(args, count)
    try:
        folder = FolderDataset(root)
        files, labels = folder.files, folder.labels.tolist()
        album = stream_jpeg_peers.albumentations_loader(files, labels, batch, batches)
        torchvision = stream_jpeg_peers.torchvision_status()
        dali = _dali(root, batch, batches)
        started_ray = not ray.is_initialized()
        if started_ray:
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            ray.init(num_cpus=16, include_dashboard=False, log_to_driver=False)
        server = _Server(args, batch, DatasetSpec("folder", str(root)))
        phases: dict[str, list[dict[str, float]]] = {"standalone": [], "stream": []}

        def standalone() -> None:
            before = server.cpu_seconds()
            wall = time.perf_counter()
            rate = server.call(server.standalone(batch, batches))
            wall = time.perf_counter() - wall
            after = server.cpu_seconds()
            phases["standalone"].append({"rate": rate, "samples": rate * wall,
                                         "cpu": sum(after) - sum(before),
                                         "server_cpu": after[0] - before[0]})

        def streamed() -> None:
            before = sum(server.cpu_seconds())
            done = lifecycle.run(
                [sys.executable, "-m", "augserve.server.bench.stream_consumer",
                 f"127.0.0.1:{server.port}", DATASET, str(batch), str(batches),
                 str(args.prefetch), "stream"], timeout_s=600)
            consumer = json.loads(done.stdout.strip().splitlines()[-1])
            # the server side counts the whole phase (the consumer's start and its two
            # untimed batches too), so its per-core figure is a little low
            phases["stream"].append({"rate": consumer["samples"] / consumer["wall"],
                                     "samples": consumer["samples"],
                                     "cpu": sum(server.cpu_seconds()) - before
                                     + consumer["cpu"]})

        try:
            server.call(server.standalone(batch, max(2, batches // 4)))  # warm-up
            standalone()
            for _ in range(rounds):
                streamed()
                standalone()
        finally:
            server.stop()
            if started_ray:
                ray.shutdown()
    finally:
        if holder is not None:
            holder.cleanup()
    return _report(args, batch, batches, count, phases, album, dali, torchvision, torch)


def _per_core(runs: list[dict[str, float]]) -> float:
    return sum(r["samples"] for r in runs) / max(sum(r["cpu"] for r in runs), 1e-9)


def _report(args: argparse.Namespace, batch: int, batches: int, count: int,
            phases: dict[str, list[dict[str, float]]], album: dict[str, float],
            dali: dict[str, Any], torchvision: str, torch: Any) -> BenchReport:
    import os

    standalone = statistics.mean(r["rate"] for r in phases["standalone"])
    stream = statistics.mean(r["rate"] for r in phases["stream"])
    ours = _per_core(phases["standalone"])
    album_core = album["samples"] / max(album["cpu"], 1e-9)
    figures: dict[str, Any] = {
        "augserve_standalone_images_per_s_per_core": ours,
        "augserve_stream_images_per_s_per_core": _per_core(phases["stream"]),
        "albumentations_images_per_s_per_core": album_core,
        "augserve_standalone_images_per_s": standalone,
        "augserve_stream_images_per_s": stream,
        "albumentations_images_per_s": album["samples"] / album["wall"],
        "standalone_server_process_cpu_share": sum(r["server_cpu"] for r in phases["standalone"])
        / max(sum(r["cpu"] for r in phases["standalone"]), 1e-9),
        "standalone_each_round": " / ".join(f"{r['rate']:,.0f}" for r in phases["standalone"]),
        "stream_each_round": " / ".join(f"{r['rate']:,.0f}" for r in phases["stream"]),
    }
    ratios = {"jpeg_fast_vs_albumentations_per_core": ours / album_core,
              "jpeg_stream_vs_standalone": stream / standalone}
    if "unavailable" in dali:
        figures["dali_cpu"] = f"unavailable ({dali['unavailable']})"
    else:
        dali_core = dali["samples"] / max(dali["cpu"], 1e-9)
        figures["dali_cpu_images_per_s_per_core"] = dali_core
        figures["dali_cpu_images_per_s"] = dali["samples"] / dali["wall"]
        figures["dali_cpu_cores_used"] = dali["cpu"] / dali["wall"]
        ratios["jpeg_fast_vs_dali_cpu_per_core"] = ours / dali_core
    figures["torchvision_pil"] = (f"unavailable ({torchvision})" if torchvision else
                                  "available but not run: no torchvision pipeline here yet")
    figures.update({"images": count, "batch": batch, "timed_batches_per_phase": batches,
                    "pool_size": args.pool_size, "window": args.window})
    return BenchReport(
        name="stream --source jpeg",
        figures=figures,
        ratios=ratios,
        targets={"jpeg_fast_vs_albumentations_per_core": (">=", 1.5),
                 "jpeg_fast_vs_dali_cpu_per_core": (">=", 2.5),
                 "jpeg_stream_vs_standalone": (">=", 0.9)},
        environment={
            "pipeline": "imagenet_train at 224, uint8 NCHW (normalize left to the trainer)",
            "dataset": f"{count} generated JPEGs, sides 300-800 px, q 85-95, 4:2:0, 6 classes",
            "decode": "augserve: region (header-sampled box, DCT-scaled simplejpeg decode)",
            "albumentations": "torch DataLoader, 2 spawned workers, cv2.imdecode + "
                              "albumentations, uint8",
            "dali": "nvidia.dali CPU pipeline, device_id=None, 1 thread",
            "cpus": os.cpu_count(),
            "load_average_1m": round(os.getloadavg()[0], 2),
            "torch": torch.__version__,
        },
    )
