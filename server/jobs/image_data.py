"""Job datasets of images: any dataset the stream service opens, through augment pipelines.

`ImageData` wraps the server's datasets (`augserve.server.data.datasets`: image folders of
JPEG / PNG / WebP decoded on the server, `.npz` / `.npy` arrays, the built-ins) with a
train / validation split and two augmentation pipelines:

- training batches: `train_pipeline` (default: random resized crop to the model's input,
  horizontal flip, ImageNet normalize), per-sample keys (seed, epoch, sample index);
- evaluation and calibration: `eval_pipeline` (default: resize to 8/7 of the input, center
  crop, normalize).

Images are decoded when a batch needs them, through a byte-bounded cache of decoded
images, so a folder of a few hundred 224 px JPEGs trains in a few hundred MB. The
validation set is preprocessed once (`test_x`) and kept, as the model is evaluated after
every epoch.

Example:
    >>> spec = DatasetSpec("builtin", name="photos", count=24)
    >>> data = ImageData.split("photos", open_dataset(spec), (3, 32, 32), 0.25, seed=0)
    >>> data.num_classes, data.test_x.shape
    (6, (6, 3, 32, 32))
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from functools import cached_property
from typing import Any

import numpy as np
import torch

from augserve.server.data.datasets import Dataset as Images
from augserve.server.errors import FailedPrecondition, InvalidArgument
from augserve.server.jobs.data import epoch_plan

#: Bytes of decoded images a job keeps (the training split's, across epochs).
CACHE_BYTES = 512 << 20


def train_pipeline(size: int) -> dict[str, Any]:
    """The default training pipeline for inputs of size x size."""
    return {"ops": [{"randomResizedCrop": {"size": [size, size], "scale": [0.35, 1.0]}},
                    {"p": 0.5, "horizontalFlip": {}}, {"normalize": {}}],
            "dtype": "float32", "layout": "NCHW"}


def eval_pipeline(size: int) -> dict[str, Any]:
    """The default evaluation pipeline: resize to 8/7 of `size`, center crop, normalize."""
    outer = max(size, round(size * 8 / 7))
    return {"ops": [{"resize": {"size": [outer, outer]}},
                    {"centerCrop": {"size": [size, size]}}, {"normalize": {}}],
            "dtype": "float32", "layout": "NCHW"}


def _stratified(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([seed, 0x5B117])
    held: list[np.ndarray] = []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        count = min(len(members) - 1, max(1, round(fraction * len(members))))
        held.append(members[:count] if count > 0 else members[:0])
    validation = np.sort(np.concatenate(held))
    return np.setdiff1d(np.arange(len(labels)), validation), validation


class ImageData:
    """A labelled train / validation split of server datasets, sized to a model's input.

    Attributes:
        name: what the job named.
        num_classes: the training set's class count.
        input_shape: (3, H, W), the model's input.
        description: one line for the model card.
        train_y, test_y: int64 labels of the training and validation samples.
    """

    def __init__(self, name: str, train: Images, train_index: np.ndarray, validation: Images,
                 validation_index: np.ndarray, input_shape: tuple[int, ...],
                 train_spec: Mapping[str, Any] | None = None,
                 eval_spec: Mapping[str, Any] | None = None, description: str = "") -> None:
        """Check the shapes and pipelines; nothing is decoded yet.

        Raises:
            FailedPrecondition: the model does not take 3 x H x W images, a pipeline
                spec is invalid, or the validation set's classes differ.
        """
        from augserve.server.augment.pipeline import Pipeline

        if len(input_shape) != 3 or input_shape[0] != 3 or input_shape[1] != input_shape[2]:
            raise FailedPrecondition(
                f"dataset {name!r} holds RGB images; the source model takes "
                f"{'x'.join(map(str, input_shape)) or 'an unknown shape'}, not 3xSxS: give "
                "source.input_shape")
        if validation is not train and list(validation.classes) != list(train.classes):
            raise FailedPrecondition(
                f"validation classes {validation.classes} differ from the training classes "
                f"{train.classes}")
        size = int(input_shape[1])
        try:
            self._train_pipe = Pipeline.from_spec(dict(train_spec or train_pipeline(size)),
                                                  backend="fast")
            self._eval_pipe = Pipeline.from_spec(dict(eval_spec or eval_pipeline(size)),
                                                 backend="fast")
        except (InvalidArgument, ValueError, TypeError) as error:
            raise FailedPrecondition(f"dataset {name!r}: bad pipeline: {error}") from None
        self.name = name
        self.num_classes = len(train.classes)
        self.input_shape = tuple(int(d) for d in input_shape)
        self.description = description
        self._train, self._train_index = train, np.asarray(train_index, np.int64)
        self._validation, self._validation_index = validation, np.asarray(validation_index,
                                                                           np.int64)
        self.train_y = train.labels[self._train_index]
        self.test_y = validation.labels[self._validation_index]

    @classmethod
    def split(cls, name: str, images: Images, input_shape: tuple[int, ...], fraction: float,
              seed: int, **pipelines: Any) -> ImageData:
        """Hold out `fraction` of each class of `images` (seeded) for validation."""
        train, validation = _stratified(images.labels, fraction, seed)
        return cls(name, images, train, images, validation, input_shape, **pipelines,
                   description=f"{images.kind} {name}: {len(images)} images, "
                               f"{fraction:.0%} of each class held out (seed {seed})")

    def _preprocess(self, images: Images, index: np.ndarray, pipeline: Any, seed: int = 0,
                    epoch: int = 0, keys: np.ndarray | None = None) -> torch.Tensor:
        decoded = [images.load(int(i)) for i in index]
        out = pipeline(decoded, seed=seed, epoch=epoch,
                       sample_indices=index if keys is None else keys).images
        if not isinstance(out, torch.Tensor) or tuple(out.shape[1:]) != self.input_shape:
            got = (tuple(out.shape[1:]) if isinstance(out, torch.Tensor)
                   else sorted({tuple(o.shape) for o in out}))
            raise FailedPrecondition(
                f"dataset {self.name!r}: its images come out of the pipeline as {got}; the "
                f"model takes {self.input_shape}: resize or crop them in the pipeline")
        return out.float()

    @cached_property
    def test_x(self) -> np.ndarray:
        """The validation images through the evaluation pipeline, float32 (M, 3, H, W)."""
        parts = [self._preprocess(self._validation, self._validation_index[i : i + 64],
                                  self._eval_pipe)
                 for i in range(0, len(self._validation_index), 64)]
        return torch.cat(parts).numpy() if parts else np.zeros((0, *self.input_shape),
                                                                np.float32)

    def train_batches(
        self, batch_size: int, seed: int, epoch: int, rank: int = 0, world: int = 1,
        augment: bool = True,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """A shuffled epoch of (images, labels): shard `rank` of `world` (`data.epoch_plan`).

        The order depends on (seed, epoch) only. Every batch goes through the training
        pipeline (keys: seed, epoch, sample position), whatever `augment` says (it is the
        digits' opt-in): a job that wants no augmentation gives an evaluation-like
        `train_pipeline`.
        """
        pipeline = self._train_pipe
        plan = epoch_plan(len(self.train_y), batch_size, seed, epoch, rank, world)
        for index in plan.batches():
            x = self._preprocess(self._train, self._train_index[index], pipeline, seed, epoch,
                                 keys=index)
            yield x, torch.from_numpy(self.train_y[index])

    def calibration_images(self, count: int, seed: int) -> torch.Tensor:
        """`count` training images (fewer if the split is smaller), evaluation-preprocessed."""
        count = min(count, len(self.train_y))
        index = np.sort(np.random.default_rng(seed).choice(len(self.train_y), count,
                                                           replace=False))
        return self._preprocess(self._train, self._train_index[index], self._eval_pipe)
