"""The peers of `augserve bench stream --source jpeg`, each end to end from the JPEG folder.

- `albumentations_loader`: a local `torch.utils.data.DataLoader`, 2 spawned workers, each
  sample `cv2.imdecode` + BGR->RGB + albumentations' ImageNet training pipeline (uint8,
  CHW), default collate. CPU time: this process and its workers (psutil).
- `torchvision_status`: torchvision's PIL pipeline runs only where torchvision imports
  beside the installed torch; otherwise the reason is reported, no figure.
- `dali_cpu` (run in a process of its own, `python -m ...stream_jpeg_peers dali ROOT ...`):
  NVIDIA DALI's CPU-only pipeline, `device_id=None`, 1 thread: `readers.file`,
  `decoders.image_random_crop` (DALI's fused crop + decode), `resize` to 224,
  `color_twist` (brightness, contrast, saturation 0.6-1.4, hue +-36 degrees, and
  saturation 0 with p 0.2 for grayscale), `crop_mirror_normalize` (mirror p 0.5, uint8
  CHW). Its CPU time is its process's. Optional: without `nvidia-dali-cuda120` the bench
  says so.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any


class AlbumentationsFolder:
    """The JPEG files decoded by `cv2.imdecode` and augmented by albumentations (uint8 CHW)."""

    def __init__(self, files: list[Path], labels: list[int]) -> None:
        """Hold the paths and labels; the transform is built in the worker."""
        self.files, self.labels = files, labels
        self.transform: Any = None

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Any:
        import cv2
        import numpy as np

        if self.transform is None:
            from augserve.server.bench.albumentations_pipeline import imagenet_train

            cv2.setNumThreads(1)
            self.transform = imagenet_train()
        encoded = np.fromfile(self.files[index], np.uint8)
        image = cv2.cvtColor(cv2.imdecode(encoded, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        image = self.transform(image=image)["image"]
        return image.transpose(2, 0, 1).copy(), self.labels[index]


def _cpu_with_children() -> float:
    import psutil

    me = psutil.Process()
    total = me.cpu_times().user + me.cpu_times().system
    for child in me.children(recursive=True):
        try:
            times = child.cpu_times()
            total += times.user + times.system
        except psutil.Error:  # a child that just exited
            pass
    return total


def albumentations_loader(files: list[Path], labels: list[int], batch: int,
                          batches: int) -> dict[str, float]:
    """Samples/s and CPU seconds (this process and its 2 workers) over `batches` batches."""
    import torch

    repeat = -(-batch * (batches + 3) // len(files))
    dataset = AlbumentationsFolder(files * repeat, labels * repeat)
    # Spawned, not forked: the bench process holds gRPC and Ray threads.
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, num_workers=2,
                                         shuffle=True, multiprocessing_context="spawn")
    samples, count, wall, cpu = 0, 0, 0.0, 0.0
    for k, (images, _) in enumerate(loader):
        if k == 2:  # workers are up
            samples, count, wall, cpu = 0, 0, time.perf_counter(), _cpu_with_children()
            continue
        samples += len(images)
        count += 1
        if k > 2 and count == batches:
            # read inside the loop: leaving it drops the iterator, and its workers exit
            # (their CPU time goes with them)
            wall, cpu = time.perf_counter() - wall, _cpu_with_children() - cpu
            break
    return {"samples": samples, "wall": wall, "cpu": cpu}


def torchvision_status() -> str:
    """"" when torchvision imports beside this torch, else the reason it does not."""
    try:
        import torchvision
        import torchvision.transforms.v2  # noqa: F401
    except Exception as error:  # ImportError, or its C extension failing to load
        return f"{type(error).__name__}: {error}".splitlines()[0][:200]
    return ""


def dali_cpu(root: str, batch: int, batches: int) -> dict[str, float]:
    """Samples/s and this process's CPU seconds of DALI's CPU pipeline over `batches`."""
    from nvidia.dali import fn, pipeline_def, types

    @pipeline_def(batch_size=batch, num_threads=1, device_id=None, seed=1,
                  prefetch_queue_depth=2)
    def imagenet() -> Any:
        jpegs, labels = fn.readers.file(file_root=root, random_shuffle=True, name="reader")
        images = fn.decoders.image_random_crop(jpegs, device="cpu", output_type=types.RGB,
                                               random_area=[0.08, 1.0],
                                               random_aspect_ratio=[3 / 4, 4 / 3])
        images = fn.resize(images, resize_x=224, resize_y=224)
        jitter = fn.random.coin_flip(probability=0.8)
        grey = fn.random.coin_flip(probability=0.2)
        images = fn.color_twist(
            images,
            brightness=1.0 + jitter * (fn.random.uniform(range=[0.6, 1.4]) - 1.0),
            contrast=1.0 + jitter * (fn.random.uniform(range=[0.6, 1.4]) - 1.0),
            saturation=(1.0 + jitter * (fn.random.uniform(range=[0.6, 1.4]) - 1.0))
            * (1 - grey),
            hue=jitter * fn.random.uniform(range=[-36.0, 36.0]))
        images = fn.crop_mirror_normalize(images, dtype=types.UINT8, output_layout="CHW",
                                          mirror=fn.random.coin_flip(probability=0.5))
        return images, labels

    pipe = imagenet()
    pipe.build()
    for _ in range(2):  # warm-up
        pipe.run()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(batches):
        pipe.run()
    return {"samples": batch * batches, "wall": time.perf_counter() - wall,
            "cpu": time.process_time() - cpu}


def main(argv: list[str]) -> int:
    """`dali ROOT BATCH BATCHES`: print DALI's figures as one JSON line."""
    if len(argv) != 4 or argv[0] != "dali":
        print("usage: python -m augserve.server.bench.stream_jpeg_peers dali ROOT BATCH "
              "BATCHES", file=sys.stderr)
        return 2
    try:
        result: dict[str, Any] = dali_cpu(argv[1], int(argv[2]), int(argv[3]))
    except ImportError as error:
        result = {"unavailable": f"{type(error).__name__}: {error}"}
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
