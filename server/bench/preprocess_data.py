"""What `augserve bench preprocess` serves and sends: real photos, one pipeline, a 224 model.

- Photos: scikit-image's astronaut, coffee, chelsea and rocket and scikit-learn's china
  and flower (they ship inside the packages), resized to ImageNet's typical 500 x 375 and
  encoded as JPEG at quality 90 (~40-60 KB each).
- The pipeline: resize to 256 x 256, centre-crop 224 x 224, normalize with ImageNet's
  mean and std, float32 NCHW. The server runs it as an augment spec (`PIPELINE`); the
  client-side baseline (`client_preprocess`) is the plain OpenCV and numpy code a Triton
  user without DALI writes for the same steps.
- The model: a small CNN over 3 x 224 x 224 (a stride-4 stem, then three stride-2 stages,
  about 0.1 GMAC), TorchScript, random weights (seed 0). It keeps the model's own time
  near the preprocessing's, so the bench measures the preprocessing rather than hiding
  it under a large network's compute.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

SIZE = 224
RESIZE = 256
PHOTO_SHAPE = (375, 500)  # height, width
JPEG_QUALITY = 90
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
CLASSES = 10
PIPELINE: dict[str, Any] = {
    "ops": [
        {"resize": {"size": [RESIZE, RESIZE]}},
        {"centerCrop": {"size": [SIZE, SIZE]}},
        {"normalize": {"mean": list(MEAN), "std": list(STD)}},
    ],
    "dtype": "float32",
    "layout": "NCHW",
}
ENCODED_MODEL = "photos_encoded"  # BYTES in, the pipeline in the replica
TENSOR_MODEL = "photos_tensor"  # FP32 3 x 224 x 224 in: the client preprocesses
TTA_VIEWS = ("identity", "hflip")


def photos() -> list[np.ndarray]:
    """Six real photos as uint8 RGB 375 x 500 (the packages' own sample images)."""
    import cv2
    from skimage import data
    from sklearn.datasets import load_sample_images

    sources = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket(),
               *load_sample_images().images]
    height, width = PHOTO_SHAPE
    return [cv2.resize(np.ascontiguousarray(p[..., :3]), (width, height),
                       interpolation=cv2.INTER_AREA) for p in sources]


def encode_jpeg(image: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    """An RGB image as JPEG bytes."""
    import cv2

    ok, encoded = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return encoded.tobytes()


def client_preprocess(jpeg: bytes) -> np.ndarray:
    """What a client without server-side preprocessing does: float32 [1, 3, 224, 224]."""
    import cv2

    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    image = cv2.resize(image, (RESIZE, RESIZE), interpolation=cv2.INTER_LINEAR)
    top = (RESIZE - SIZE) // 2
    image = image[top : top + SIZE, top : top + SIZE]
    scaled = image.astype(np.float32) * np.float32(1 / 255)
    scaled = (scaled - np.float32(MEAN)) / np.float32(STD)
    return np.ascontiguousarray(scaled.transpose(2, 0, 1)[None])


def build_model() -> Any:
    """The bench's CNN over 3 x 224 x 224, random weights (seed 0), in eval mode."""
    import torch
    from torch import nn

    torch.manual_seed(0)

    def stage(c_in: int, c_out: int, stride: int) -> list[nn.Module]:
        return [nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True)]

    return nn.Sequential(
        nn.Conv2d(3, 16, 4, 4, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True),
        *stage(16, 32, 2), *stage(32, 64, 2), *stage(64, 128, 2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, CLASSES),
    ).eval()


def write_repository(root: Path, max_batch_size: int, threads: int) -> float:
    """The bench's models; returns the `faces` model's held-out accuracy as trained.

    Two models over the same TorchScript file (encoded images in, tensors in), and the
    demo's `faces` classifier, trained here in seconds.
    """
    import torch

    from augserve.server.inference.demo_faces import write_faces_model

    module = torch.jit.script(build_model())
    common = {
        "platform": "torchscript",
        "max_batch_size": max_batch_size,
        "input": [{"name": "input", "datatype": "FP32", "dims": [3, SIZE, SIZE]}],
        "output": [{"name": "logits", "datatype": "FP32", "dims": [CLASSES]}],
        "instance_group": {"count": 1, "kind": "cpu", "num_threads": threads},
        "warmup": {"batch_sizes": [1, max_batch_size]},
    }
    configs = {
        TENSOR_MODEL: common,
        ENCODED_MODEL: {
            **common,
            "preprocess": {"input": "image", "datatype": "BYTES", "pipeline": PIPELINE},
            "tta": {"views": list(TTA_VIEWS), "merge": "mean", "scores": "softmax"},
        },
    }
    for name, config in configs.items():
        (root / name / "1").mkdir(parents=True)
        module.save(str(root / name / "1" / "model.pt"))
        (root / name / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return write_faces_model(root)
