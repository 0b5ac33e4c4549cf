"""Compress a ResNet-18 at 224 x 224 on a JPEG folder, through the server's Jobs RPCs, and serve it.

    python examples/compress_resnet18.py [--json result.json]

1. Builds a small JPEG folder from crops of the photos that scikit-image and scikit-learn
   ship (one class per photo), and starts a server (in this process) that registers it as
   the dataset "crops".
2. Over JobService: trains a fresh ResNet-18 (zoo `resnet18`, 224 x 224 x 3) on it, then
   prunes 50% of its channels, fine-tunes and int8-quantizes it (PT2E, static) with the
   accuracy gate `--max-accuracy-drop` on the held-out crops.
3. The server reloads both models; tritonclient calls each at batch 1, interleaved, and the
   script reports accuracy, size and median latency, fp32 against pruned int8.

Nothing is downloaded. The ResNet-18 has no pretrained weights here, so the task is easy
on purpose (a handful of very different photos) and small enough to run on CPUs.

Status: not tuned yet. One run at the defaults, on a 2-core machine shared with other
work (load ~20), took about 19 minutes: the fp32 model reached 0.708 on the 24 held-out
crops (72 training crops are two batches of 64 per epoch, so 4 epochs are 8 steps), and
the pruned int8 model 0.250, so the gate refused it (FAILED_PRECONDITION, nothing
written) and the latency step was not reached. More training steps (epochs, a smaller
batch) are the next thing to try.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")


def write_crops(root: Path, per_class: int, seed: int = 0) -> None:
    """root/<photo>/<i>.jpg: random square crops (a third to all of the short side), 256 px."""
    from PIL import Image
    from skimage import data

    rng = np.random.default_rng(seed)
    for name in PHOTOS:
        photo = getattr(data, name)()
        side = min(photo.shape[:2])
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            size = int(rng.integers(side // 3, side))
            y, x = (int(rng.integers(0, d - size + 1)) for d in photo.shape[:2])
            crop = Image.fromarray(photo[y : y + size, x : x + size]).resize((256, 256))
            crop.save(root / name / f"{i:03d}.jpg", quality=90)


def run_job(address: str, spec: dict) -> dict:
    """Submit `spec`, print its stages, return {"version", "card", "seconds"}."""
    from augserve.clients.jobs import JobClient

    started = time.perf_counter()
    with JobClient(address) as client:
        job = client.submit(spec)
        stage = None
        for event in client.watch(job):
            if event.stage != stage:
                stage = event.stage
                print(f"  {spec['output_name']}: {stage} {event.message}", flush=True)
        result = client.result(job)
    return {"version": result.version, "card": result.card,
            "seconds": round(time.perf_counter() - started, 1)}


def latency_ms(address: str, models: list[str], rounds: int) -> dict[str, float]:
    """Median batch-1 latency of each model over `rounds` interleaved tritonclient calls."""
    import tritonclient.grpc as triton

    client = triton.InferenceServerClient(address)
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    times: dict[str, list[float]] = {m: [] for m in models}
    for round_ in range(rounds + 3):
        for model in models:
            tensor = triton.InferInput("input", list(x.shape), "FP32")
            tensor.set_data_from_numpy(x)
            t0 = time.perf_counter()
            client.infer(model, [tensor])
            if round_ >= 3:  # warm-up rounds
                times[model].append(1000 * (time.perf_counter() - t0))
    return {m: round(statistics.median(t), 2) for m, t in times.items()}


async def main(args: argparse.Namespace) -> dict:
    """Run the case end to end; returns the report."""
    from augserve.server.app import start_server
    from augserve.server.config import ServerConfig
    from augserve.server.jobs.settings import JobSettings
    from augserve.server.stream.settings import StreamSettings

    work = Path(tempfile.mkdtemp(prefix="augserve-resnet18-"))
    root, crops = work / "models", work / "crops"
    root.mkdir()
    write_crops(crops, args.per_class)
    config = ServerConfig(
        port=0, metrics_port=0, model_repository=root, shutdown_grace_s=1.0,
        jobs=JobSettings(torch_threads=args.threads, state_dir=str(work / "journal")),
        stream=StreamSettings(datasets={"crops": {"kind": "folder", "path": str(crops)}}))
    server = await start_server(config)
    address = f"127.0.0.1:{server.port}"
    common = {"dataset": "crops", "validation_fraction": 0.25, "output_repository": str(root),
              "measure_latency": False}
    try:
        print(f"{len(PHOTOS)} classes x {args.per_class} JPEG crops in {crops}", flush=True)
        fp32 = await asyncio.to_thread(run_job, address, {
            **common, "source": {"zoo": "resnet18"}, "output_name": "resnet18_crops",
            "steps": [{"finetune": {"epochs": args.epochs, "lr": 1e-3}}]})
        small = await asyncio.to_thread(run_job, address, {
            **common, "source": {"repository": str(root), "name": "resnet18_crops"},
            "output_name": "resnet18_crops_small", "max_accuracy_drop": args.max_accuracy_drop,
            "steps": [{"prune": {"sparsity": 0.5, "finetune_epochs": args.finetune_epochs}},
                      {"quantize": {"calibration_batches": 1, "batch_size": 32}}]})
        for name in ("resnet18_crops", "resnet18_crops_small"):  # what the reload does, awaited
            await server.repository.load(name)
        served = await asyncio.to_thread(latency_ms, address,
                                         ["resnet18_crops", "resnet18_crops_small"], args.rounds)
    finally:
        await server.stop()
    card = small["card"]
    return {
        "classes": len(PHOTOS), "images_per_class": args.per_class,
        "accuracy": card["accuracy"], "gate": card["gate"],
        "params": card["params"], "macs": card["macs"], "size_bytes": card["size_bytes"],
        "served_latency_ms_batch_1": {"fp32": served["resnet18_crops"],
                                      "pruned_int8": served["resnet18_crops_small"]},
        "job_seconds": {"train_fp32": fp32["seconds"], "prune_finetune_int8": small["seconds"]},
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=24, help="JPEG crops per photo")
    parser.add_argument("--epochs", type=int, default=4, help="fp32 training epochs")
    parser.add_argument("--finetune-epochs", type=int, default=2, help="after pruning")
    parser.add_argument("--max-accuracy-drop", type=float, default=0.05,
                        help="the gate (0.05: one image of the 24 held out, at the defaults)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of each job")
    parser.add_argument("--rounds", type=int, default=30, help="latency calls per model")
    parser.add_argument("--json", type=Path, help="also write the report here")
    options = parser.parse_args()
    text = json.dumps(asyncio.run(main(options)), indent=2)
    print(text)
    if options.json:
        options.json.write_text(text + "\n")
