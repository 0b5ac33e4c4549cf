"""ImageNet training pipeline, images/s per core: augserve vs kornia and albumentations.

All three run in this process on the same photos (scikit-image's astronaut, coffee,
chelsea, rocket and scikit-learn's china and flower, resized to 256x256), one thread
each (`cv2.setNumThreads(1)`, `torch.set_num_threads(1)`), so images/s is per core.
The rounds are interleaved (ours, kornia, albumentations, ours, ...) so that load from
other processes hits all three alike; each figure is the median over rounds. Per core
means per CPU-second of this (single-threaded) process, `time.process_time()`, which
other processes' load disturbs far less than wall time; wall-clock rates are reported
beside them.

Pipeline: RandomResizedCrop 224 (scale 0.08-1), horizontal flip p 0.5, ColorJitter
0.4/0.4/0.4/0.1 p 0.8, grayscale p 0.2, normalize; float32 NCHW batch out.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

from augserve.server.bench import augment_gpu
from augserve.server.bench.report import BenchReport

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`--device`, `--batch`, `--rounds`, `--quick`, and `--device cuda`'s own flags."""
    parser.add_argument(
        "--device", choices=("cpu", "cuda"), default="cpu",
        help="cpu: per core against kornia and albumentations; cuda: kornia on CUDA against "
             "the CPU fast path and DALI (see augment_gpu); exits 1 at once without CUDA",
    )
    parser.add_argument("--batch", type=int, default=256,
                        help="images per timed call (256, an ImageNet training batch)")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds (median)")
    parser.add_argument(
        "--kornia-batch", type=int, default=32, help="images per kornia call (it is slow on CPU)"
    )
    parser.add_argument("--quick", action="store_true", help="a few seconds: small batch, 3 rounds")
    augment_gpu.add_arguments(parser)


def load_photos(size: int = 256) -> list[Any]:
    """The six bundled photos as uint8 RGB arrays, resized to size x size."""
    import cv2
    from skimage import data
    from sklearn.datasets import load_sample_images

    photos = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    photos += list(load_sample_images().images)
    return [cv2.resize(p, (size, size), interpolation=cv2.INTER_AREA) for p in photos]


def _albumentations(batch: list[Any]) -> Callable[[], Any]:
    import numpy as np

    from augserve.server.bench.albumentations_pipeline import imagenet_train

    transform = imagenet_train(MEAN, STD)
    return lambda: np.stack([transform(image=im)["image"].transpose(2, 0, 1) for im in batch])


def _kornia(batch: list[Any]) -> Callable[[], Any]:
    import numpy as np
    import torch
    from kornia import augmentation as K

    transform = K.AugmentationSequential(
        K.RandomResizedCrop((224, 224), scale=(0.08, 1.0)),
        K.RandomHorizontalFlip(p=0.5),
        K.ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8),
        K.RandomGrayscale(p=0.2),
        K.Normalize(mean=torch.tensor(MEAN), std=torch.tensor(STD)),
    )
    stacked = torch.from_numpy(np.stack(batch))

    def call() -> Any:
        with torch.inference_mode():
            return transform(stacked.permute(0, 3, 1, 2).float() / 255.0)

    return call


def _ours(batch: list[Any]) -> Callable[[], Any]:
    from augserve.server.augment.pipeline import IMAGENET_TRAIN, Pipeline

    pipeline = Pipeline(IMAGENET_TRAIN, backend="fast")
    seed = iter(range(1 << 30))
    return lambda: pipeline(batch, seed=next(seed)).images


def _rates(call: Callable[[], Any], n: int) -> tuple[float, float]:
    """(images per CPU-second, images per wall-second) of one call."""
    cpu, wall = time.process_time(), time.perf_counter()
    call()
    return n / max(time.process_time() - cpu, 1e-9), n / (time.perf_counter() - wall)


def run(args: argparse.Namespace) -> BenchReport:
    """Time the three implementations, interleaved, and report images/s per core.

    With `--device cuda`, run `augment_gpu` instead.
    """
    if args.device == "cuda":
        return augment_gpu.run(args)
    import cv2
    import kornia
    import torch

    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    batch_size = 24 if args.quick else args.batch
    kornia_size = 8 if args.quick else args.kornia_batch
    rounds = 3 if args.quick else args.rounds
    photos = load_photos()
    batch = [photos[i % len(photos)] for i in range(batch_size)]
    small = batch[:kornia_size]
    impls = {
        "augserve_fast": (_ours(batch), batch_size),
        "kornia_cpu": (_kornia(small), kornia_size),
        "albumentations": (_albumentations(batch), batch_size),
    }
    rates: dict[str, list[float]] = {name: [] for name in impls}
    walls: dict[str, list[float]] = {name: [] for name in impls}
    for call, _ in impls.values():
        call()  # warm-up: imports, caches, first allocations
    for _ in range(rounds):
        for name, (call, n) in impls.items():
            cpu_rate, wall_rate = _rates(call, n)
            rates[name].append(cpu_rate)
            walls[name].append(wall_rate)
    med = {name: statistics.median(values) for name, values in rates.items()}
    wall = {name: statistics.median(values) for name, values in walls.items()}
    import albumentations

    report = BenchReport(
        name="augment",
        figures={
            "augserve_fast_images_per_s_per_core": med["augserve_fast"],
            "kornia_cpu_images_per_s_per_core": med["kornia_cpu"],
            "albumentations_images_per_s_per_core": med["albumentations"],
            "augserve_fast_images_per_wall_s": wall["augserve_fast"],
            "kornia_cpu_images_per_wall_s": wall["kornia_cpu"],
            "albumentations_images_per_wall_s": wall["albumentations"],
            "batch": batch_size,
            "kornia_batch": kornia_size,
            "rounds": rounds,
        },
        ratios={
            "fast_vs_albumentations_per_core": med["augserve_fast"] / med["albumentations"],
            "fast_vs_kornia_cpu": med["augserve_fast"] / med["kornia_cpu"],
        },
        targets={"fast_vs_albumentations_per_core": (">=", 2.0)},
        environment={
            "threads": "1 per implementation (cv2.setNumThreads(1), torch.set_num_threads(1))",
            "images": "astronaut, coffee, chelsea, rocket, china, flower at 256x256",
            "cpus": os.cpu_count(),
            "load_average_1m": round(os.getloadavg()[0], 2),
            "torch": torch.__version__,
            "kornia": kornia.__version__,
            "albumentations": albumentations.__version__,
            "opencv": cv2.__version__,
        },
    )
    return report
