"""`augserve bench augment --device cuda`: kornia on CUDA vs the CPU fast path and DALI.

The same photos and pipeline as the CPU bench (`augment.py`): the ImageNet training
pipeline over the six bundled photos at 256x256, float32 NCHW out. Three implementations:

- `fast_cpu`: augserve's CPU fast path, `--cpu-threads` threads (default 1: one core);
- `kornia_cuda`: augserve's kornia backend computing on the device (param sampling and
  the plan on the host, as in `Pipeline`); uint8 photos go up, the float32 batch comes
  back to the host, as the Augment service returns it;
- `dali_gpu`: NVIDIA DALI's GPU pipeline (`nvidia.dali.fn`: random_resized_crop,
  color_twist with the jitter at p 0.8 and grayscale at p 0.2 as zero saturation,
  crop_mirror_normalize with a p 0.5 mirror), fed the same host arrays through
  `external_source` and copied back to the host. DALI is optional
  (`pip install nvidia-dali-cuda120`); without it this bench prints one line and skips it.
  Its executor runs synchronously (`exec_async=False, exec_pipelined=False`) so that
  each call does one whole batch, as the other two do.

Each call is timed on the wall clock between two `torch.cuda.synchronize()` calls,
after `--warmup` untimed calls of each; rounds are interleaved and each figure is the
median images/s over rounds. The harness takes any torch device, so the tests run it
on the CPU (`kornia_cpu`, `dali_cpu`); the keys name the device the run used.

Without CUDA, `run` exits with status 1 and one line on stderr before loading anything.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch

from augserve.server.bench.report import BenchReport

FAST = "fast_cpu"
NO_CUDA = ("augserve bench augment --device cuda: CUDA is not available "
           "(torch.cuda.is_available() is False); nothing was run")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`--warmup` and `--cpu-threads`, the flags only `--device cuda` reads."""
    parser.add_argument("--warmup", type=int, default=3,
                        help="--device cuda: untimed calls of each implementation first")
    parser.add_argument("--cpu-threads", type=int, default=1,
                        help="--device cuda: threads of the CPU fast path it is compared with")


def require_cuda() -> None:
    """Return when a CUDA device is present, else exit with status 1 and one line."""
    if not torch.cuda.is_available():
        raise SystemExit(NO_CUDA)


def run(args: argparse.Namespace) -> BenchReport:
    """Check for CUDA, then compare kornia on it with the CPU fast path and DALI."""
    require_cuda()
    return compare(
        torch.device("cuda"),
        batch_size=24 if args.quick else args.batch,
        rounds=3 if args.quick else args.rounds,
        warmup=1 if args.quick else args.warmup,
        cpu_threads=args.cpu_threads,
    )


def compare(device: torch.device, batch_size: int, rounds: int, warmup: int,
            cpu_threads: int) -> BenchReport:
    """Time the fast path on the CPU beside kornia (and DALI, if it imports) on `device`."""
    import cv2
    import kornia

    from augserve.server.bench.augment import load_photos

    cv2.setNumThreads(cpu_threads)
    torch.set_num_threads(cpu_threads)
    photos = load_photos()
    batch = [photos[i % len(photos)] for i in range(batch_size)]
    kornia_name = f"kornia_{device.type}"
    dali_name = "dali_gpu" if device.type == "cuda" else "dali_cpu"
    calls = {FAST: fast_call(batch), kornia_name: kornia_call(batch, device)}
    dali = dali_call(batch, device)
    if dali is None:
        dali_version = "not importable: skipped"
    else:
        calls[dali_name] = dali
        import nvidia.dali

        dali_version = nvidia.dali.__version__
    sync = torch.cuda.synchronize if device.type == "cuda" else _no_sync
    rates = time_rounds(calls, batch_size, rounds, warmup, sync)
    figures: dict[str, Any] = {f"{name}_images_per_s": rate for name, rate in rates.items()}
    figures.update(batch=batch_size, rounds=rounds, warmup=warmup, fast_cpu_threads=cpu_threads)
    return BenchReport(
        name="augment_gpu",
        figures=figures,
        ratios=ratios(rates, kornia_name, dali_name),
        environment={
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "timing": "wall clock between torch.cuda.synchronize() calls; host arrays in, "
                      "float32 NCHW batch on the host out; median over interleaved rounds",
            "images": "astronaut, coffee, chelsea, rocket, china, flower at 256x256",
            "cpus": os.cpu_count(),
            "load_average_1m": round(os.getloadavg()[0], 2),
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "kornia": kornia.__version__,
            "dali": dali_version,
            "opencv": cv2.__version__,
        },
    )


def ratios(rates: Mapping[str, float], kornia_name: str, dali_name: str) -> dict[str, float]:
    """Kornia over the fast path and over DALI, and DALI over the fast path (images/s)."""
    pairs = [(kornia_name, FAST), (kornia_name, dali_name), (dali_name, FAST)]
    return {f"{a}_over_{b}": rates[a] / rates[b] for a, b in pairs if a in rates and b in rates}


def time_rounds(calls: Mapping[str, Callable[[], Any]], n: int, rounds: int, warmup: int,
                sync: Callable[[], None]) -> dict[str, float]:
    """Median images/s of each call over interleaved rounds, after `warmup` calls of each.

    Each timed call starts after `sync()` and stops after the next `sync()`, so work the
    call queued on a device is inside its time.
    """
    for call in calls.values():
        for _ in range(warmup):
            call()
    sync()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            sync()
            start = time.perf_counter()
            call()
            sync()
            times[name].append(time.perf_counter() - start)
    return {name: n / max(statistics.median(ts), 1e-9) for name, ts in times.items()}


def _no_sync() -> None:
    """Nothing to wait for: CPU work is done when the call returns."""


def fast_call(batch: list[Any]) -> Callable[[], Any]:
    """One call of augserve's CPU fast path on `batch`, a new seed each time."""
    from augserve.server.augment.pipeline import IMAGENET_TRAIN, Pipeline

    pipeline = Pipeline(IMAGENET_TRAIN, backend="fast")
    seeds = iter(range(1 << 30))
    return lambda: pipeline(batch, seed=next(seeds)).images


def kornia_call(batch: list[Any], device: torch.device) -> Callable[[], Any]:
    """One call of augserve's kornia backend computing on `device`, a new seed each time.

    What `Pipeline(..., backend="kornia")` does, with the device named rather than the
    default one: draw the params, build the plan, run it with kornia.
    """
    from augserve.server.augment.kornia_backend import run_kornia
    from augserve.server.augment.pipeline import IMAGENET_TRAIN, Pipeline
    from augserve.server.augment.plan import build_plan

    pipeline = Pipeline(IMAGENET_TRAIN)
    sizes = torch.tensor([im.shape[:2] for im in batch], dtype=torch.int64)
    seeds = iter(range(1 << 30))

    def call() -> Any:
        params = pipeline.sample(sizes, seed=next(seeds))
        stages = build_plan(IMAGENET_TRAIN.ops, params, sizes)
        return run_kornia(stages, batch, IMAGENET_TRAIN.dtype, IMAGENET_TRAIN.layout,
                          device=device)

    return call


def dali_call(batch: list[Any], device: torch.device) -> Callable[[], Any] | None:
    """One run of the DALI pipeline on `device`, output on the host.

    None, after one printed line, when `nvidia.dali` does not import.
    """
    try:
        import nvidia.dali  # noqa: F401
    except ImportError as error:
        print(f"DALI skipped: nvidia.dali does not import ({error}); "
              "pip install nvidia-dali-cuda120 to include it")
        return None
    import numpy as np

    device_id = (device.index or 0) if device.type == "cuda" else None
    pipe = dali_pipeline(batch, device_id)

    def call() -> Any:
        (out,) = pipe.run()
        host = out.as_cpu() if device_id is not None else out
        return np.asarray(host.as_tensor())

    return call


def dali_pipeline(batch: list[Any], device_id: int | None) -> Any:
    """A built DALI pipeline comparable to IMAGENET_TRAIN over `batch` (a fixed batch).

    On the GPU with a `device_id`, on the CPU with None. RandomResizedCrop 224 (area
    0.08-1, ratio 3/4-4/3), ColorJitter 0.4/0.4/0.4/0.1 at p 0.8 and grayscale at p 0.2
    (one `color_twist`: identity factors where not applied, zero saturation for gray),
    then a p 0.5 mirror and the ImageNet normalisation to float32 CHW.
    """
    from nvidia.dali import fn, pipeline_def, types

    from augserve.server.bench.augment import MEAN, STD

    device = "cpu" if device_id is None else "gpu"

    @pipeline_def(batch_size=len(batch), num_threads=1, device_id=device_id, seed=0,
                  exec_async=False, exec_pipelined=False)
    def imagenet_train() -> Any:
        images = fn.external_source(source=lambda: batch, batch=True, layout="HWC",
                                    dtype=types.UINT8)
        if device == "gpu":
            images = images.gpu()
        images = fn.random_resized_crop(images, size=(224, 224), random_area=(0.08, 1.0),
                                        random_aspect_ratio=(3 / 4, 4 / 3))
        jitter = fn.cast(fn.random.coin_flip(probability=0.8), dtype=types.FLOAT)
        gray = fn.cast(fn.random.coin_flip(probability=0.2), dtype=types.FLOAT)

        def factor(spread: float) -> Any:
            return jitter * fn.random.uniform(range=(1 - spread, 1 + spread)) + (1 - jitter)

        images = fn.color_twist(
            images, brightness=factor(0.4), contrast=factor(0.4),
            saturation=factor(0.4) * (1 - gray),
            hue=jitter * fn.random.uniform(range=(-36.0, 36.0)),  # 0.1 of the hue circle
        )
        return fn.crop_mirror_normalize(
            images, dtype=types.FLOAT, output_layout="CHW",
            mean=[m * 255 for m in MEAN], std=[s * 255 for s in STD],
            mirror=fn.random.coin_flip(probability=0.5),
        )

    pipe = imagenet_train()
    pipe.build()
    return pipe
