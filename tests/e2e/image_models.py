"""Models of the test repository that take images (`[preprocess]`, `[tta]`), and their photos."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

#: The pipeline in front of the image models: resize, centre crop, normalize to 3x64x64.
PIPELINE = {
    "ops": [
        {"resize": {"size": [72, 72]}},
        {"centerCrop": {"size": [64, 64]}},
        {"normalize": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}},
    ],
    "dtype": "float32",
    "layout": "NCHW",
}
CLASSES = 4


class TinyImageNet(nn.Module):
    """3x64x64 -> 4 logits; no global pooling, so a flipped image scores differently."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 5, stride=2, padding=2)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.head = nn.Linear(16 * 16 * 16, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        return self.head(x.flatten(1))


def build_network() -> nn.Module:
    """The image models' network, with fixed (seeded) weights, in eval mode."""
    torch.manual_seed(0)
    return TinyImageNet().eval()


def add_image_models(root: Path) -> None:
    """`images` (BYTES, TTA identity + hflip, mean of softmax) and `images_uint8` (UINT8)."""
    network = torch.jit.script(build_network())
    base = {
        "platform": "torchscript",
        "max_batch_size": 16,
        "input": [{"name": "input", "datatype": "FP32", "dims": [3, 64, 64]}],
        "output": [{"name": "logits", "datatype": "FP32", "dims": [CLASSES]}],
        # batches fill for 20 ms, so that concurrent requests share one
        "dynamic_batching": {"max_queue_delay_microseconds": 20000},
        "warmup": {"batch_sizes": [1]},
    }
    models = {
        "images": {**base, "preprocess": {"input": "image", "datatype": "BYTES",
                                          "pipeline": PIPELINE},
                   "tta": {"views": ["identity", "hflip"], "merge": "mean",
                           "scores": "softmax", "outputs": ["logits"]}},
        "images_uint8": {**base, "preprocess": {"input": "image", "datatype": "UINT8",
                                                "pipeline": PIPELINE}},
    }
    for name, config in models.items():
        (root / name / "1").mkdir(parents=True)
        network.save(str(root / name / "1" / "model.pt"))
        (root / name / "config.json").write_text(json.dumps(config))


def photos() -> dict[str, np.ndarray]:
    """Real photos (scikit-image's), uint8 RGB, at different sizes."""
    from skimage import data

    return {
        "astronaut": data.astronaut(),  # 512x512
        "coffee": data.coffee(),  # 400x600
        "chelsea": cv2.resize(data.chelsea(), (333, 250)),
        "rocket": data.rocket(),  # 427x640
    }


def jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    """`image` (RGB) as JPEG bytes at `quality`."""
    ok, encoded = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return encoded.tobytes()
