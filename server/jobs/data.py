"""Datasets for jobs: the digits splits, and every dataset the server knows (`open_job_data`).

The digits names below keep their fixed splits: nothing is downloaded (the digits ship
inside scikit-learn), images are float32 (N, 3, 8, 8) in [0, 1] (grey on three channels,
the augmentation pipeline's RGB layout). Any other name is a dataset the server registers
(`[stream.datasets]`, the built-ins "photos" and "lfw_subset"), or a job gives a
`DatasetSpec` table; those become `augserve.server.jobs.image_data.ImageData`, sized to the
source model's input. Both kinds answer `train_batches(batch_size, seed, epoch, rank,
world)`, `test_x` / `test_y` (validation) and `calibration_images(count, seed)`.

| name | train | held-out test | classes |
| --- | --- | --- | --- |
| `digits` | 80% of the 1,797 digits (seed 0) | the other 20% (360) | 10 |
| `digits_0_4` | the train split's digits 0-4 | the test split's 0-4 | 5 |
| `digits_5_9_few` | 20 train-split images of each of 5-9 | every other 5-9 image | 5 (5->0) |

`augmented_batches` streams a training set through `augserve.server.augment.pipeline`; both
it and `batches` follow the stream service's epoch plan (`augserve.server.data.epoch`), one
shard of it per Ray Train worker.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
import torch

from augserve.server.data.epoch import EpochPlan
from augserve.server.errors import FailedPrecondition, NotFound

#: Mild, label-preserving augmentation for 8x8 digits (no flips: digits are not symmetric).
DIGITS_PIPELINE = {
    "ops": [{"randomCrop": {"size": [8, 8], "padding": 1}}, {"rotate": {"degrees": [-10, 10]}}],
    "dtype": "float32",
    "layout": "NCHW",
}


@dataclass(frozen=True)
class Dataset:
    """A labelled train / held-out test split.

    Attributes:
        name: the registry name.
        train_x: float32 (N, 3, 8, 8); train_y: int64 (N,).
        test_x: float32 (M, 3, 8, 8); test_y: int64 (M,).
        num_classes: label count.
        description: one line for the model card.
    """

    name: str
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    num_classes: int
    description: str

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One sample's shape, e.g. (3, 8, 8)."""
        return tuple(self.train_x.shape[1:])

    def train_batches(
        self, batch_size: int, seed: int, epoch: int, rank: int = 0, world: int = 1,
        augment: bool = False, spec: dict | None = None,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """A shuffled epoch of training batches: shard `rank` of `world` of it (`epoch_plan`).

        `augment` streams them through the pipeline `spec` (default DIGITS_PIPELINE).
        """
        make = augmented_batches if augment else batches
        extra = {"spec": spec} if augment else {}
        yield from make(self.train_x, self.train_y, batch_size, seed, epoch, rank=rank,
                        world=world, **extra)

    def calibration_images(self, count: int, seed: int) -> torch.Tensor:
        """`count` training images (fewer if the split is smaller), seeded."""
        count = min(count, len(self.train_y))
        index = np.sort(np.random.default_rng(seed).choice(len(self.train_y), count,
                                                           replace=False))
        return torch.from_numpy(np.ascontiguousarray(self.train_x[index]))


@cache
def _digits(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.repeat((digits.images / 16.0).astype(np.float32)[:, None], 3, axis=1)
    labels = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(labels))
    cut = int(0.8 * len(labels))
    train, test = order[:cut], order[cut:]
    return images[train], labels[train], images[test], labels[test]


def _digits_full() -> Dataset:
    tx, ty, vx, vy = _digits()
    return Dataset("digits", tx, ty, vx, vy, 10, "sklearn digits 3x8x8, 80/20 split (seed 0)")


def _digits_0_4() -> Dataset:
    tx, ty, vx, vy = _digits()
    a, b = ty < 5, vy < 5
    return Dataset(
        "digits_0_4", tx[a], ty[a], vx[b], vy[b], 5, "sklearn digits 0-4, 80/20 split (seed 0)"
    )


def _digits_5_9_few(per_class: int = 20) -> Dataset:
    tx, ty, vx, vy = _digits()
    rng = np.random.default_rng(1)
    picked = np.concatenate(
        [rng.choice(np.flatnonzero(ty == c), per_class, replace=False) for c in range(5, 10)]
    )
    rest = np.setdiff1d(np.flatnonzero(ty >= 5), picked)
    test_x = np.concatenate([tx[rest], vx[vy >= 5]])
    test_y = np.concatenate([ty[rest], vy[vy >= 5]]) - 5
    return Dataset(
        "digits_5_9_few", tx[picked], ty[picked] - 5, test_x, test_y, 5,
        f"sklearn digits 5-9 (labels 0-4): {per_class} labelled per class, "
        f"held out: the other {len(test_y)}",
    )


DATASETS = {"digits": _digits_full, "digits_0_4": _digits_0_4, "digits_5_9_few": _digits_5_9_few}


def load_dataset(name: str) -> Dataset:
    """The dataset registered as `name`.

    Raises:
        NotFound: no such dataset; the message lists the known ones.
    """
    if name not in DATASETS:
        raise NotFound(f"dataset {name!r} does not exist; known datasets: {sorted(DATASETS)}")
    return DATASETS[name]()


def epoch_plan(size: int, batch_size: int, seed: int, epoch: int, rank: int = 0,
               world: int = 1) -> EpochPlan:
    """Shard `rank` of `world` of a shuffled epoch: the stream service's `EpochPlan`.

    One shard (`world` 1) is the whole permutation, its last batch short; several drop
    the tail so that every shard has the same number of full batches (DDP steps in
    lockstep).
    """
    return EpochPlan(size, batch_size, seed, epoch, num_shards=world, shard_index=rank,
                     drop_last=world > 1)


def batches(
    x: np.ndarray, y: np.ndarray, batch_size: int, seed: int, epoch: int,
    rank: int = 0, world: int = 1,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Shard `rank` of `world` of a shuffled epoch of (images, labels), seeded by (seed, epoch)."""
    for index in epoch_plan(len(y), batch_size, seed, epoch, rank, world).batches():
        yield torch.from_numpy(x[index]), torch.from_numpy(y[index])


def augmented_batches(
    x: np.ndarray, y: np.ndarray, batch_size: int, seed: int, epoch: int,
    rank: int = 0, world: int = 1, spec: dict | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Like `batches`, each batch augmented by the pipeline `spec` (default DIGITS_PIPELINE).

    Every sample is augmented with keys (seed, epoch, sample index), so an epoch is
    reproducible whatever the batch size, and a sample gets the same draws in any shard.
    """
    from augserve.server.augment.pipeline import Pipeline

    pipeline = Pipeline.from_spec(spec or DIGITS_PIPELINE, backend="fast")
    for index in epoch_plan(len(y), batch_size, seed, epoch, rank, world).batches():
        images = np.ascontiguousarray((x[index].transpose(0, 2, 3, 1) * 255).round())
        out = pipeline(images.astype(np.uint8), seed=seed, epoch=epoch, sample_indices=index)
        yield out.images, torch.from_numpy(y[index])


def _dataset_spec(value: str | Mapping[str, Any], registry: Mapping[str, Any], field: str) -> Any:
    from augserve.server.data.datasets import DatasetSpec

    if isinstance(value, Mapping):
        try:
            return DatasetSpec.from_mapping(value)
        except (TypeError, ValueError) as error:
            raise FailedPrecondition(f"{field}: {error}") from None
    if value in registry:
        return registry[value]
    known = sorted(set(DATASETS) | set(registry))
    raise NotFound(f"{field} {value!r} does not exist; known datasets: {known}")


def resolve_dataset(value: str | Mapping[str, Any], registry: Mapping[str, Any],
                    field: str = "dataset") -> Any:
    """The `DatasetSpec` a job's dataset names (None for a digits name).

    Raises:
        NotFound: a name that is neither a digits split nor registered.
        FailedPrecondition: a dataset table that is not a valid `DatasetSpec`.
    """
    if isinstance(value, str) and value in DATASETS:
        return None
    return _dataset_spec(value, registry, field)


def open_job_data(
    dataset: str | Mapping[str, Any], input_shape: tuple[int, ...],
    registry: Mapping[str, Any] | None = None, validation: str | Mapping[str, Any] = "",
    fraction: float = 0.2, seed: int = 0, train_pipeline: Mapping[str, Any] | None = None,
    eval_pipeline: Mapping[str, Any] | None = None, max_pixels: int | None = None,
) -> Dataset | Any:
    """A job's data: a digits split, or an `ImageData` sized to `input_shape`.

    Args:
        dataset: a digits name, a registered name or a `DatasetSpec` table.
        input_shape: the source model's (C, H, W); () takes the dataset's own.
        registry: name -> `DatasetSpec` (the stream service's datasets).
        validation: a separate validation dataset ("" splits `dataset`).
        fraction: the share of each class held out (when `validation` is "").
        seed: seeds that split.
        train_pipeline: the training pipeline spec (None: the default).
        eval_pipeline: the evaluation pipeline spec (None: the default).
        max_pixels: the most pixels a folder image may declare (None: the server's default).

    Raises:
        NotFound: an unknown dataset name.
        FailedPrecondition: the images cannot fit the model's input, or the dataset
            cannot be opened.
    """
    from augserve.server.data.datasets import open_dataset
    from augserve.server.jobs.image_data import CACHE_BYTES, ImageData

    registry = registry or {}
    spec = resolve_dataset(dataset, registry)
    if spec is None:
        return load_dataset(str(dataset))  # `execute.check_spec` compares its shape
    extra = {} if max_pixels is None else {"max_pixels": max_pixels}
    name = dataset if isinstance(dataset, str) else str(spec.path or spec.name)
    pipelines = {"train_spec": train_pipeline, "eval_spec": eval_pipeline}
    try:
        images = open_dataset(spec, CACHE_BYTES, **extra)
        if not len(images):
            raise ValueError("it holds no images")
        if not validation:
            return ImageData.split(name, images, input_shape, fraction, seed, **pipelines)
        held = open_dataset(_dataset_spec(validation, registry, "validation_dataset"),
                            CACHE_BYTES, **extra)
    except ValueError as error:
        raise FailedPrecondition(f"dataset {name!r} cannot be opened: {error}") from None
    return ImageData(name, images, np.arange(len(images)), held, np.arange(len(held)),
                     input_shape, **pipelines,
                     description=f"{images.kind} {name}: {len(images)} training images, "
                                 f"validation: {len(held)} images of {validation!r}")
