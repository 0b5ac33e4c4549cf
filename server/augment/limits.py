"""Output bounds of a pipeline, computed from its ops' `out_sizes` before any work is done.

An Augment request of small images can ask for huge outputs (16 tiny images resized to
8000 x 8000 is 3 GB of uint8); the servicer checks the outputs' pixels and bytes, per
image and per request, against `AugmentSettings` before anything is sent to an actor.
"""

from __future__ import annotations

import numpy as np
import torch

from augserve.server.augment.ops import OpParams
from augserve.server.augment.pipeline import Pipeline
from augserve.server.augment.settings import AugmentSettings
from augserve.server.augment.spec import PipelineSpec
from augserve.server.limits import over_limit

#: Bytes per output element of each output dtype.
ITEMSIZE = {"uint8": 1, "float16": 2, "bfloat16": 2, "float32": 4}
#: Channels of every output image.
CHANNELS = 3


def output_sizes(spec: PipelineSpec, sizes: torch.Tensor,
                 params: tuple[OpParams, ...]) -> torch.Tensor:
    """(n, 2) output (height, width) per sample for input sizes `sizes` and these params."""
    for op, p in zip(spec.ops, params, strict=True):
        sizes = op.out_sizes(p, sizes)
    return sizes


def output_size(spec: PipelineSpec, input_size: tuple[int, int] | None
                ) -> tuple[int, int] | None:
    """The output (height, width) of an input of `input_size`, or of any input (None given).

    Returns None when no input size is given and the output follows the input's size.
    """
    probe = torch.tensor([input_size] if input_size else [[1, 1], [2, 3]], dtype=torch.int64)
    out = output_sizes(spec, probe, Pipeline(spec).sample(probe, seed=0))
    if bool((out[0] == out[-1]).all()):
        return int(out[0, 0]), int(out[0, 1])
    return None


def image_bytes(spec: PipelineSpec, pixels: int) -> int:
    """Bytes of one output image of `pixels` pixels in the spec's dtype."""
    return pixels * CHANNELS * ITEMSIZE[spec.dtype]


def check_output(spec: PipelineSpec, images: list[np.ndarray], settings: AugmentSettings,
                 seed: int, epoch: int, sample_indices: np.ndarray | None,
                 params: tuple[OpParams, ...] | None) -> tuple[OpParams, ...]:
    """The request's params (drawn here when not replayed), once its outputs fit the limits.

    The sizes come from the params the pool would draw (the same keys) or replay, so the
    check is exact; the caller hands the params to the pool, so they are drawn only once.

    Raises:
        ResourceExhausted: an output would pass an output limit.
    """
    sizes = torch.tensor([im.shape[:2] for im in images], dtype=torch.int64).reshape(-1, 2)
    if params is None:
        params = Pipeline(spec).sample(sizes, seed, epoch, sample_indices)
    pixels = output_sizes(spec, sizes, params).prod(dim=1)
    worst = int(pixels.argmax())
    largest = int(pixels[worst])
    if largest > settings.max_output_pixels:
        raise over_limit(settings, "max_output_pixels",
                         f"images[{worst}]: an output of {largest} pixels")
    if image_bytes(spec, largest) > settings.max_output_bytes:
        raise over_limit(settings, "max_output_bytes",
                         f"images[{worst}]: an output of {image_bytes(spec, largest)} bytes "
                         f"({spec.dtype})")
    total = int(pixels.sum())
    if total > settings.max_request_output_pixels:
        raise over_limit(settings, "max_request_output_pixels",
                         f"images: {total} output pixels in all")
    if image_bytes(spec, total) > settings.max_request_output_bytes:
        raise over_limit(settings, "max_request_output_bytes",
                         f"images: {image_bytes(spec, total)} output bytes in all "
                         f"({spec.dtype})")
    return params


__all__ = [
    "CHANNELS",
    "ITEMSIZE",
    "check_output",
    "image_bytes",
    "output_size",
    "output_sizes",
]
