"""`augserve bench preprocess`: photos preprocessed in the replica, against client-side work.

The baseline is clients that decode and preprocess themselves and send fp32 tensors (a
Triton user without DALI).

One run, one `augserve serve` (subprocess, embedded Ray) holding two models over the same
TorchScript CNN (`preprocess_data`): `photos_encoded` takes one JPEG per row and runs the
pipeline (resize 256, centre-crop 224, normalize) in its replica; `photos_tensor` takes the
float32 3 x 224 x 224 tensor. Six real photos at 500 x 375, JPEG q90.

1. `--rounds` pairs of phases at `--concurrency` callers, split over `--client-processes`
   client processes on the same cores as the server (so the client's CPU is counted):
   (a) encoded JPEGs to `photos_encoded`, TTA off; (b) each caller decodes and preprocesses
   with OpenCV and numpy, then sends the tensor to `photos_tensor`. Requests/s, p50, p99,
   and the bytes of one request plus its answer, per phase.
   `server_vs_client_preprocess_c32` = median over pairs of (a) / (b) requests/s;
   `wire_bytes_ratio` = (a)'s bytes / (b)'s.
2. The replica's preprocessing CPU per image (its counter
   `augserve_preprocess_cpu_seconds_total` over `augserve_preprocess_images_total`, from
   /metrics) while one client sends requests of phase (a)'s mean batch size back to back,
   against the same decode and pipeline timed standalone on one core in batches of that
   size: `preprocess_cpu_vs_standalone`. Both run with nothing beside them: on these
   2-vCPU VMs a busy neighbour on the other vCPU raises the CPU time of the same work by
   20% (standalone beside a numpy matmul: 1.76 against 1.45 ms per image), so the figure
   during phase (a) (`replica_preprocess_cpu_ms_per_image_c32`) is given beside it but
   measures the neighbours as much as the server.
3. TTA: phases of (a) with `tta_views` = 1 and = V (V = the model's views), interleaved
   `--rounds` times; the model's own time per request (ModelStatistics compute_infer,
   which excludes preprocessing) gives `tta_cost_per_view` = model time at V views /
   (V x model time at 1 view).
4. The demo's `faces` classifier (`server/inference/demo_faces.py`, trained at the start),
   served: its top-1 on the held-out split with its TTA views (identity, flip) and with
   `tta=false`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from augserve.server.bench import lifecycle
from augserve.server.bench import preprocess_data as data
from augserve.server.bench.infer import serve_command
from augserve.server.bench.report import BenchReport, host_environment

TARGETS = {
    "server_vs_client_preprocess_c32": (">=", 1.0),
    "preprocess_cpu_vs_standalone": ("<=", 1.1),
    "wire_bytes_ratio": ("<=", 0.1),
    "tta_cost_per_view": ("<=", 1.1),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `augserve bench preprocess`."""
    parser.add_argument("--concurrency", type=int, default=32, help="callers in all")
    parser.add_argument("--client-processes", type=int, default=4,
                        help="processes the callers are split over")
    parser.add_argument("--duration", type=float, default=8.0, help="measured seconds per phase")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds per phase")
    parser.add_argument("--rounds", type=int, default=3, help="pairs of phases")
    parser.add_argument("--max-batch-size", type=int, default=32, help="the models' batch bound")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the replica")
    parser.add_argument("--quick", action="store_true", help="one short round (a smoke test)")


def _phase(port: int, mode: str, photos: Path, args: argparse.Namespace, out: Path,
           tta_views: int = 0, warmup: float | None = None) -> dict[str, Any]:
    """One loaded phase over the client processes; the merged figures."""
    processes = max(1, min(args.client_processes, args.concurrency))
    shares = [args.concurrency // processes + (k < args.concurrency % processes)
              for k in range(processes)]
    groups = []
    for k, share in enumerate(shares):
        command = [sys.executable, "-m", "augserve.server.bench.preprocess_load",
                   "--url", f"127.0.0.1:{port}", "--mode", mode, "--photos", str(photos),
                   "--tta-views", str(tta_views), "--concurrency", str(share),
                   "--duration", str(args.duration),
                   "--warmup", str(args.warmup if warmup is None else warmup),
                   "--json", str(out.with_suffix(f".{k}.json"))]
        groups.append(lifecycle.ProcessGroup(command, lifecycle.child_env()))
    try:
        deadline = time.monotonic() + args.duration + args.warmup + 180
        for group in groups:
            code = group.process.wait(timeout=max(1.0, deadline - time.monotonic()))
            if code != 0:
                raise RuntimeError(f"a {mode} client exited {code}")
    finally:
        for group in groups:
            group.stop()
    parts = [json.loads(out.with_suffix(f".{k}.json").read_text()) for k in range(processes)]
    errors = {code: sum(p["errors"].get(code, 0) for p in parts)
              for code in {c for p in parts for c in p["errors"]}}
    latencies_ms = 1e3 * np.concatenate([np.asarray(p["latencies_s"]) for p in parts])
    if errors or not latencies_ms.size:
        raise RuntimeError(f"phase {mode}: errors {errors}, {latencies_ms.size} measured")
    p50, p99 = np.percentile(latencies_ms, [50, 99])
    return {
        "requests_per_s": sum(p["completed"] for p in parts) / args.duration,
        "p50_ms": float(p50),
        "p99_ms": float(p99),
        "wire_bytes": parts[0]["request_bytes"] + parts[0]["response_bytes"],
        "client_cpu_ms_per_request": 1e3 * sum(p["cpu_s"] for p in parts)
        / max(1, sum(p["completed"] for p in parts)),
    }


def _metrics(metrics_port: int, model: str) -> dict[str, float]:
    """The replica's preprocessing counters of `model`, from the server's /metrics."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read()
    wanted = {"augserve_preprocess_cpu_seconds_total": "cpu_s",
              "augserve_preprocess_images_total": "images"}
    found = dict.fromkeys(wanted.values(), 0.0)
    for line in text.decode().splitlines():
        name, _, rest = line.partition("{")
        if name in wanted and f'model="{model}"' in rest:
            found[wanted[name]] += float(line.rsplit(" ", 1)[1])
    return found


def _model_statistics(port: int, model: str) -> dict[str, int]:
    """Rows, batches and the model's own compute ns so far, from ModelStatistics."""
    from augserve.clients.infer import InferClient

    with InferClient(f"127.0.0.1:{port}", timeout=10) as client:
        stats = client.statistics(model).model_stats[0]
    return {"rows": stats.inference_count, "batches": stats.execution_count,
            "requests": stats.inference_stats.success.count,
            "infer_ns": stats.inference_stats.compute_infer.ns}


def _difference(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {key: after[key] - before[key] for key in after}


def isolated_replica_cpu_per_image(port: int, metrics_port: int, jpegs: list[bytes],
                                   batch: int, seconds: float) -> float:
    """The replica's preprocessing CPU per image, one client sending `batch` images at a time.

    Nothing else runs while the replica preprocesses, as in `standalone_cpu_per_image`.
    """
    from augserve.clients.infer import InferClient, build_infer_request

    images = np.empty((batch, 1), dtype=np.object_)
    images[:, 0] = [jpegs[k % len(jpegs)] for k in range(batch)]
    request = build_infer_request(data.ENCODED_MODEL, {"image": images},
                                  parameters={"tta": False})
    before = _metrics(metrics_port, data.ENCODED_MODEL)
    with InferClient(f"127.0.0.1:{port}", timeout=60) as client:
        stop = time.perf_counter() + seconds
        while time.perf_counter() < stop:
            client.infer_request(request)
    gained = _difference(_metrics(metrics_port, data.ENCODED_MODEL), before)
    return gained["cpu_s"] / max(1.0, gained["images"])


def standalone_cpu_per_image(jpegs: list[bytes], batch: int, seconds: float) -> float:
    """CPU seconds per image of decode + the pipeline on one core, in batches of `batch`."""
    import cv2
    import torch

    from augserve.server.augment.pipeline import Pipeline
    from augserve.server.images import decode_image_bytes

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    pipeline = Pipeline.from_spec(data.PIPELINE, backend="fast")
    done, k = 0, 0
    cpu = time.process_time()
    stop = time.perf_counter() + seconds
    while time.perf_counter() < stop or not done:
        images = [decode_image_bytes(jpegs[(k + i) % len(jpegs)], 1 << 30, "photo")
                  for i in range(batch)]
        pipeline(images)
        k, done = k + batch, done + batch
    return (time.process_time() - cpu) / done


def faces_accuracy(port: int) -> dict[str, float]:
    """The demo `faces` model's held-out top-1, served, with its TTA views and without."""
    from augserve.clients.infer import InferClient
    from augserve.server.inference.demo_faces import held_out_accuracy

    with InferClient(f"127.0.0.1:{port}", timeout=60) as client:
        return {name: held_out_accuracy(lambda images, p=parameters: [
            answer[0].index for answer in client.classify("faces", images, parameters=p)])
            for name, parameters in (("tta", {}), ("no_tta", {"tta": False}))}


def run(args: argparse.Namespace) -> BenchReport:
    """Run every phase (see the module docstring) and return the report."""
    if args.quick:
        args.duration, args.warmup, args.rounds = 1.5, 0.5, 1
    report = BenchReport("preprocess", environment={
        **host_environment(), "concurrency": args.concurrency,
        "client_processes": args.client_processes, "replica_threads": args.threads,
        "max_batch_size": args.max_batch_size, "photos": f"6 real photos, "
        f"{data.PHOTO_SHAPE[1]}x{data.PHOTO_SHAPE[0]}, JPEG q{data.JPEG_QUALITY}"})
    report.targets = dict(TARGETS)
    c = args.concurrency
    with tempfile.TemporaryDirectory(prefix="augserve-bench-preprocess-") as tmp:
        work = Path(tmp)
        photos = work / "photos"
        photos.mkdir()
        jpegs = [data.encode_jpeg(image) for image in data.photos()]
        for k, jpeg in enumerate(jpegs):
            (photos / f"{k}.jpg").write_bytes(jpeg)
        trained_accuracy = data.write_repository(work / "repo", args.max_batch_size, args.threads)
        ready = work / "augserve.port"
        metrics_port = lifecycle.free_port()
        command = [*serve_command(work / "repo", ready), "--metrics-port", str(metrics_port)]
        pairs, tta = [], []
        with lifecycle.serving(command, ready, work / "augserve.log", lifecycle.child_env(),
                               name="augserve serve") as (port, _):
            pre_before = _metrics(metrics_port, data.ENCODED_MODEL)
            stats_before = _model_statistics(port, data.ENCODED_MODEL)
            for index in range(args.rounds):
                served = _phase(port, "encoded", photos, args, work / f"a{index}")
                client = _phase(port, "tensor", photos, args, work / f"b{index}")
                pairs.append((served, client))
            preprocess = _difference(_metrics(metrics_port, data.ENCODED_MODEL), pre_before)
            served_stats = _difference(_model_statistics(port, data.ENCODED_MODEL), stats_before)
            views = len(data.TTA_VIEWS)
            for index in range(args.rounds):
                one = _model_statistics(port, data.ENCODED_MODEL)
                single = _phase(port, "encoded", photos, args, work / f"t1-{index}", 1, 1.0)
                many = _model_statistics(port, data.ENCODED_MODEL)
                multi = _phase(port, "encoded", photos, args, work / f"tv-{index}", views, 1.0)
                end = _model_statistics(port, data.ENCODED_MODEL)
                tta.append((single, _difference(many, one), multi, _difference(end, many)))
            accuracy = faces_accuracy(port)
            mean_batch = served_stats["rows"] / max(1, served_stats["batches"])
            batch = max(1, round(mean_batch))
            isolated = isolated_replica_cpu_per_image(port, metrics_port, jpegs, batch,
                                                      1.0 if args.quick else 5.0)
        standalone = standalone_cpu_per_image(jpegs, batch, 1.0 if args.quick else 5.0)
    served_cpu = preprocess["cpu_s"] / max(1.0, preprocess["images"])
    ratios = [a["requests_per_s"] / b["requests_per_s"] for a, b in pairs]
    model_ns = [(s1["infer_ns"] / max(1, s1["requests"]), sv["infer_ns"] / max(1, sv["requests"]))
                for _, s1, _, sv in tta]
    figures: dict[str, Any] = {}
    for name, index in (("a_server_preprocess", 0), ("b_client_preprocess", 1)):
        for key in ("requests_per_s", "p50_ms", "p99_ms", "wire_bytes",
                    "client_cpu_ms_per_request"):
            values = [pair[index][key] for pair in pairs]
            figures[f"{name}_{key}"] = (max if key == "p99_ms" else statistics.median)(values)
    figures.update({
        "a_mean_batch_rows": mean_batch,
        "replica_preprocess_cpu_ms_per_image_c32": 1e3 * served_cpu,
        "replica_preprocess_cpu_ms_per_image_alone": 1e3 * isolated,
        "standalone_preprocess_cpu_ms_per_image": 1e3 * standalone,
        "tta_views": views,
        "tta_1_view_requests_per_s": statistics.median(s["requests_per_s"] for s, _, _, _ in tta),
        f"tta_{views}_views_requests_per_s": statistics.median(
            m["requests_per_s"] for _, _, m, _ in tta),
        "tta_1_view_model_ms_per_request": statistics.median(one for one, _ in model_ns) / 1e6,
        f"tta_{views}_views_model_ms_per_request": statistics.median(
            many for _, many in model_ns) / 1e6,
        "faces_held_out_accuracy_trained": trained_accuracy,
        "faces_held_out_accuracy_tta": accuracy["tta"],
        "faces_held_out_accuracy_no_tta": accuracy["no_tta"],
    })
    report.figures = figures
    report.ratios = {
        f"server_vs_client_preprocess_c{c}": statistics.median(ratios),
        "preprocess_cpu_vs_standalone": isolated / standalone,
        "wire_bytes_ratio": figures["a_server_preprocess_wire_bytes"]
        / figures["b_client_preprocess_wire_bytes"],
        "tta_cost_per_view": statistics.median(many / (views * one) for one, many in model_ns),
    }
    report.environment["load_average_at_end"] = os.getloadavg()
    return report
