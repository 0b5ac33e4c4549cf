"""A stream batch's samples: loaded (or region-decoded) and augmented, corrupt ones noted.

Two ways, the same params either way (they depend only on (seed, epoch, sample, op) and
the image's size):

- decoded: every sample is loaded whole (`Dataset.load`, through its cache) and the
  pipeline runs over the batch;
- region: for a dataset that region-decodes (`Dataset.region_decode`: a JPEG folder) under
  a pipeline that starts with a box op, only the headers are read first; the params are
  drawn from the declared sizes, and each sample's leading box is decoded at the DCT scale
  it needs (`Pipeline.from_boxes`, `augserve.server.data.jpeg`).

A corrupt sample is left out and noted as "path: reason"; under `on_corrupt = "fail"` the
first one fails the batch.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

import numpy as np
import torch

from augserve.server.augment.pipeline import Pipeline
from augserve.server.data.datasets import Dataset
from augserve.server.images import IMAGE_ERRORS

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Made:
    """What `make_samples` gives: the kept samples' outputs (None: none kept, or failed)."""

    out: torch.Tensor | list[torch.Tensor] | None
    kept: np.ndarray
    skipped: list[str] = dataclasses.field(default_factory=list)
    error: str = ""


class _Corrupt(Exception):
    """Raised inside a batch under on_corrupt = "fail" (its message is the batch's error)."""


def make_samples(dataset: Dataset, indices: np.ndarray, pipeline: Pipeline, seed: int,
                 epoch: int, on_corrupt: str) -> Made:
    """Load and augment `indices` of `dataset` with `pipeline` (see the module docstring)."""
    made = Made(None, np.zeros(len(indices), bool))

    def note(error: Exception) -> None:
        log.warning("corrupt image skipped: %s", error)
        made.skipped.append(str(error))
        if on_corrupt == "fail":
            raise _Corrupt(f"corrupt image: {error}")

    try:
        if dataset.region_decode and pipeline.leading_box() is not None:
            _region(dataset, indices, pipeline, seed, epoch, made, note)
        else:
            _decoded(dataset, indices, pipeline, seed, epoch, made, note)
    except _Corrupt as failure:
        made.out, made.error = None, str(failure)
    return made


def _decoded(dataset: Dataset, indices: np.ndarray, pipeline: Pipeline, seed: int,
             epoch: int, made: Made, note: Callable[[Exception], None]) -> None:
    images = []
    for k, index in enumerate(indices.tolist()):
        try:
            images.append(dataset.load(index))
            made.kept[k] = True
        except IMAGE_ERRORS as error:
            note(error)
    if images:
        made.out = pipeline(images, seed=seed, epoch=epoch,
                            sample_indices=indices[made.kept]).images


def _region(dataset: Dataset, indices: np.ndarray, pipeline: Pipeline, seed: int,
            epoch: int, made: Made, note: Callable[[Exception], None]) -> None:
    encoded = []
    for k, index in enumerate(indices.tolist()):
        try:
            encoded.append(dataset.encoded(index))
            made.kept[k] = True
        except IMAGE_ERRORS as error:
            note(error)
    if not encoded:
        return

    def load(k: int, box: tuple[int, int, int, int], out_hw: tuple[int, int],
             fill: tuple[float, ...]) -> np.ndarray | None:
        try:
            return dataset.load_box(encoded[k], box, out_hw, fill)
        except IMAGE_ERRORS as error:
            note(error)
            return None

    sizes = torch.tensor([(e.height, e.width) for e in encoded], dtype=torch.int64)
    result, decoded = pipeline.from_boxes(sizes, load, seed, epoch, indices[made.kept])
    made.kept[np.flatnonzero(made.kept)] = decoded
    if decoded.any():
        made.out = result.images
