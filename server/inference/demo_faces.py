"""The demo's image classifier: faces against non-faces, taking encoded images.

Data: scikit-image's `lfw_subset()`, 200 grey 25x25 images, the first 100 faces and the
last 100 not. A fixed split (`FACES_SPLIT_SEED`) holds out 20% (40 images); the rest train
`augserve.kernels.zoo.faces_cnn` for a few seconds, with random flips and shifts. The
model takes the tensor that the `[preprocess]` table of its config makes from an encoded
image: resized to 64x64 (bilinear), scaled to [0, 1] and normalized with `FACES_MEAN` and
`FACES_STD`; `preprocess_reference` is the same steps done on the client side.

`faces_held_out()` gives the held-out images as PNG bytes with their labels, and
`held_out_accuracy(classify)` scores any callable that maps PNG bytes to class indices,
for instance a client of the served model with TTA on or off.

Example:
    >>> images, labels = faces_held_out()                          # doctest: +SKIP
    >>> held_out_accuracy(lambda pngs: my_client_top1(pngs))       # doctest: +SKIP
    0.975
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from augserve.server.zoo import faces_cnn

FACES_SIZE = 64
FACES_MEAN = (0.39, 0.39, 0.39)  # the training images' mean and spread, rounded
FACES_STD = (0.27, 0.27, 0.27)
FACES_SPLIT_SEED = 0
FACES_LABELS = ("non-face", "face")
HELD_OUT_FRACTION = 0.2

FACES_CONFIG = f"""\
platform = "torch_export"
max_batch_size = 64

[[input]]
name = "input"
datatype = "FP32"
dims = [3, {FACES_SIZE}, {FACES_SIZE}]

[[output]]
name = "logits"
datatype = "FP32"
dims = [2]
label_filename = "labels.txt"

[preprocess]
input = "image"
datatype = "BYTES"
pipeline = {{ ops = [ {{ resize = {{ size = [{FACES_SIZE}, {FACES_SIZE}] }} }}, \
{{ normalize = {{ mean = {list(FACES_MEAN)}, std = {list(FACES_STD)} }} }} ], \
dtype = "float32", layout = "NCHW" }}

[tta]
views = ["identity", "hflip"]
merge = "mean"
scores = "softmax"

[warmup]
batch_sizes = [1]
"""


def load_faces_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """lfw_subset as uint8 RGB (N, 25, 25, 3) (grey replicated), labels 1 = face.

    Returns train images, train labels, held-out images, held-out labels; the split is
    fixed by `FACES_SPLIT_SEED`.
    """
    from skimage.data import lfw_subset

    grey = np.round(lfw_subset() * 255).astype(np.uint8)
    images = np.repeat(grey[..., None], 3, axis=3)
    labels = np.r_[np.ones(100), np.zeros(100)].astype(np.int64)
    order = np.random.default_rng(FACES_SPLIT_SEED).permutation(len(labels))
    cut = int(HELD_OUT_FRACTION * len(labels))
    held_out, train = order[:cut], order[cut:]
    return images[train], labels[train], images[held_out], labels[held_out]


def encode_png(images: Sequence[np.ndarray]) -> list[bytes]:
    """uint8 RGB HWC images as PNG bytes (lossless, so the server decodes the same pixels)."""
    encoded = []
    for image in images:
        ok, data = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        if not ok:
            raise ValueError("cv2 could not encode the image as PNG")
        encoded.append(data.tobytes())
    return encoded


def preprocess_reference(images: Sequence[np.ndarray]) -> np.ndarray:
    """The config's pipeline on the client side: uint8 RGB HWC -> float32 (N, 3, 64, 64)."""
    size = (FACES_SIZE, FACES_SIZE)
    resized = np.stack([cv2.resize(i, size, interpolation=cv2.INTER_LINEAR) for i in images])
    scaled = resized.astype(np.float32) / 255.0
    normalized = (scaled - np.float32(FACES_MEAN)) / np.float32(FACES_STD)
    return np.ascontiguousarray(normalized.transpose(0, 3, 1, 2))


def train_faces(images: np.ndarray, labels: np.ndarray, epochs: int = 30,
                seed: int = 0) -> nn.Module:
    """Train `faces_cnn` on uint8 RGB images; returns it in eval mode.

    Each batch is flipped left-right at random (p 0.5) and shifted by up to 4 pixels,
    so the model sees faces in the poses a horizontal-flip TTA view shows it. Training
    runs on one torch thread: the batches are tiny, and on two shared cores two spinning
    OpenMP threads took 66 s where one took 4 s.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train(images, labels, epochs, seed)
    finally:
        torch.set_num_threads(threads)


def _train(images: np.ndarray, labels: np.ndarray, epochs: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = faces_cnn()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-2)
    x, y = torch.from_numpy(preprocess_reference(images)), torch.from_numpy(labels)
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(y), generator=generator).split(32):
            flip = torch.rand(len(batch), generator=generator) < 0.5
            inputs = torch.where(flip[:, None, None, None], x[batch].flip(3), x[batch])
            shift = torch.randint(-4, 5, (2,), generator=generator).tolist()
            inputs = torch.roll(inputs, shift, dims=(2, 3))
            optimizer.zero_grad()
            F.cross_entropy(model(inputs), y[batch]).backward()
            optimizer.step()
    return model.eval()


def faces_held_out() -> tuple[list[bytes], np.ndarray]:
    """The held-out images as PNG bytes, and their labels (1 = face)."""
    _, _, images, labels = load_faces_split()
    return encode_png(images), labels


def held_out_accuracy(classify: Callable[[list[bytes]], Sequence[int]]) -> float:
    """The top-1 accuracy on the held-out set of `classify`: PNG bytes -> class indices."""
    images, labels = faces_held_out()
    predicted = np.asarray(classify(images))
    return float((predicted == labels).mean())


def write_faces_model(root: Path) -> float:
    """Train the faces model and write its folder `root/faces`; returns held-out accuracy.

    The folder holds config.toml, labels.txt, and version 1 with the torch.export archive
    and a model card (the split, the preprocessing and the held-out accuracy).
    """
    train_x, train_y, test_x, test_y = load_faces_split()
    model = train_faces(train_x, train_y)
    with torch.inference_mode():
        logits = model(torch.from_numpy(preprocess_reference(test_x)))
    accuracy = float((logits.argmax(1).numpy() == test_y).mean())
    batch = torch.export.Dim("batch", min=1, max=1024)
    example = torch.from_numpy(preprocess_reference(train_x[:2]))
    exported = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
    folder = root / "faces"
    (folder / "1").mkdir(parents=True)
    (folder / "config.toml").write_text(FACES_CONFIG)
    (folder / "labels.txt").write_text("".join(f"{label}\n" for label in FACES_LABELS))
    torch.export.save(exported, str(folder / "1" / "model.pt2"))
    card = {
        "dataset": "skimage.data.lfw_subset: faces (label 1) vs non-faces (label 0)",
        "held_out": f"{len(test_y)} images, numpy default_rng({FACES_SPLIT_SEED}) permutation "
                    f"of the 200, the first {HELD_OUT_FRACTION:.0%}",
        "preprocess": {"resize": FACES_SIZE, "mean": FACES_MEAN, "std": FACES_STD},
        "held_out_accuracy": accuracy,
    }
    (folder / "1" / "model_card.json").write_text(json.dumps(card, indent=2) + "\n")
    return accuracy
