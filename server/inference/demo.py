"""The built-in demo repository: real classifiers trained in seconds on data that ships.

`augserve serve` with no `--model-repository` builds it once under the demo
cache and serves it. Nothing is downloaded: the digits ship inside scikit-learn, the LFW
subset inside scikit-image.

Models:
- `digits`: a small CNN on 8x8 digits, as a torch.export archive (.pt2), batching up to 64;
  its `logits` output names the classes in `labels.txt` ("zero" .. "nine"), for Triton's
  classification extension (`class_count`).
- `digits_torchscript`: the same network as TorchScript, bf16 autocast with channels_last.
- `resnet20`: the CIFAR ResNet-20 (weights-only state_dict + importable architecture),
  trained for a few steps on digits upscaled to 32x32x3; the inference benchmark's model.
- `faces`: faces against non-faces on scikit-image's `lfw_subset`, taking encoded images
  (`[preprocess]` resizes and normalizes them on the server, `[tta]` adds a flipped view);
  built by `demo_faces.write_faces_model`, its label file "non-face", "face".
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from augserve.server.inference.demo_faces import write_faces_model
from augserve.server.zoo import digits_cnn, resnet20

log = logging.getLogger(__name__)

DEMO_VERSION = "3"  # bump when the demo models change, so caches rebuild


def load_digits_split(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's digits as float32 (N, 1, 8, 8) in [0, 1]; a fixed 80/20 split."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]
    labels = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(labels))
    cut = int(0.8 * len(labels))
    train, test = order[:cut], order[cut:]
    return images[train], labels[train], images[test], labels[test]


def to_rgb32(images: np.ndarray) -> np.ndarray:
    """8x8 single-channel digits as 32x32 RGB (bilinear upscale, grey replicated)."""
    tensor = F.interpolate(torch.from_numpy(images), size=32, mode="bilinear", align_corners=False)
    return tensor.repeat(1, 3, 1, 1).numpy()


def train_classifier(
    model: nn.Module, images: np.ndarray, labels: np.ndarray, epochs: int, seed: int = 0
) -> nn.Module:
    """Train with Adam and cross-entropy on full-batch shuffles; returns the model in eval mode."""
    torch.manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    x, y = torch.from_numpy(images), torch.from_numpy(labels)
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(y)).split(64):
            optimizer.zero_grad()
            F.cross_entropy(model(x[batch]), y[batch]).backward()
            optimizer.step()
    return model.eval()


def accuracy(model: nn.Module, images: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy of `model` on the given arrays."""
    with torch.inference_mode():
        predicted = model(torch.from_numpy(images)).argmax(1).numpy()
    return float((predicted == labels).mean())


DIGIT_LABELS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def _write_model(root: Path, name: str, config: dict, files: dict[str, object], card: dict,
                 labels: tuple[str, ...] = ()) -> None:
    folder = root / name
    (folder / "1").mkdir(parents=True)
    if labels:
        config["output"][0]["label_filename"] = "labels.txt"
        (folder / "labels.txt").write_text("".join(f"{label}\n" for label in labels))
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (folder / "1" / "model_card.json").write_text(json.dumps(card, indent=2) + "\n")
    for filename, writer in files.items():
        writer(folder / "1" / filename)  # type: ignore[operator]


def _io(dims: list[int]) -> dict:
    return {
        "input": [{"name": "input", "datatype": "FP32", "dims": dims}],
        "output": [{"name": "logits", "datatype": "FP32", "dims": [10]}],
    }


def build_demo_repository(cache: Path) -> Path:
    """Build the demo repository under `cache` (once) and return its folder."""
    target = cache / f"repository-v{DEMO_VERSION}"
    if target.is_dir():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    log.info("building the demo repository in %s (once, about 20 s)", target)
    train_x, train_y, test_x, test_y = load_digits_split()
    staging = Path(tempfile.mkdtemp(dir=cache, prefix=".staging-"))
    try:
        digits = train_classifier(digits_cnn(), train_x, train_y, epochs=12)
        digits_accuracy = accuracy(digits, test_x, test_y)
        batch = torch.export.Dim("batch", min=1, max=1024)
        exported = torch.export.export(
            digits, (torch.from_numpy(train_x[:2]),), dynamic_shapes=({0: batch},)
        )
        card = {"dataset": "sklearn digits, 80/20 split (seed 0)", "test_accuracy": digits_accuracy}
        _write_model(
            staging,
            "digits",
            {
                "platform": "torch_export",
                "max_batch_size": 64,
                **_io([1, 8, 8]),
                "warmup": {"batch_sizes": [1, 64]},
            },
            {"model.pt2": lambda p: torch.export.save(exported, str(p))},
            card,
            labels=DIGIT_LABELS,
        )
        scripted = torch.jit.script(digits)
        _write_model(
            staging,
            "digits_torchscript",
            {
                "platform": "torchscript",
                "max_batch_size": 64,
                "precision": "bf16",
                **_io([1, 8, 8]),
                "warmup": {"batch_sizes": [1, 64]},
            },
            {"model.pt": lambda p: scripted.save(str(p))},
            card,
        )
        rgb_train, rgb_test = to_rgb32(train_x), to_rgb32(test_x)
        resnet = train_classifier(resnet20(), rgb_train, train_y, epochs=2)
        _write_model(
            staging,
            "resnet20",
            {
                "platform": "state_dict",
                "architecture": "augserve.server.zoo:resnet20",
                "architecture_kwargs": {"num_classes": 10},
                "max_batch_size": 64,
                **_io([3, 32, 32]),
                "instance_group": {"count": 1, "num_threads": 2},
                "warmup": {"batch_sizes": [1, 32, 64]},
            },
            {"model.pth": lambda p: torch.save(resnet.state_dict(), p)},
            {
                "dataset": "sklearn digits upscaled to 32x32 RGB",
                "epochs": 2,
                "test_accuracy": accuracy(resnet, rgb_test, test_y),
            },
        )
        write_faces_model(staging)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
