"""Random erasing: overwrite a box with a value (torchvision's RandomErasing)."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np
import torch

from augserve.server.augment.ops.base import (
    Op,
    OpParams,
    SpecError,
    check_range,
    sample_area_ratio_boxes,
)
from augserve.server.augment.ops.stage import FastStep
from augserve.server.augment.rng import Keys


@dataclasses.dataclass(frozen=True)
class EraseParams(OpParams):
    """The erased box in pixels (x0, y0, w, h)."""

    x0: torch.Tensor
    y0: torch.Tensor
    w: torch.Tensor
    h: torch.Tensor


@dataclasses.dataclass(frozen=True)
class RandomErasing(Op[EraseParams]):
    """Erase a box with area fraction in `scale` and aspect w/h in `ratio`.

    `value` is written as-is into the image at this point of the pipeline: in [0, 1]
    units before Normalize, in normalized units after it (torchvision's behaviour).
    Where no box fits within 10 tries the sample is left alone (`applied` false).
    """

    name: ClassVar[str] = "random_erasing"
    params_type: ClassVar[type[OpParams]] = EraseParams
    param_bounds: ClassVar[dict[str, tuple[float, float]]] = {
        "x0": (0, 16384), "y0": (0, 16384), "w": (0, 16384), "h": (0, 16384)}
    scale: tuple[float, float] = (0.02, 0.33)
    ratio: tuple[float, float] = (0.3, 3.3)
    value: float = 0.0

    def validate(self) -> None:
        """0 < scale < 1, 0 < ratio, |value| <= 100."""
        check_range("scale", self.scale, 1e-6, 1.0)
        check_range("ratio", self.ratio, 1e-3, 1e3)
        if not -100 <= self.value <= 100:
            raise SpecError("value", f"expected -100..100, got {self.value}")

    def sample(self, keys: Keys, sizes: torch.Tensor) -> EraseParams:
        """Box from draws 1..40 (w < W and h < H, as torchvision)."""
        boxes, found = sample_area_ratio_boxes(keys, sizes, self.scale, self.ratio, strict=True)
        applied = self.draw_applied(keys) & found
        boxes[~applied] = 0.0
        return EraseParams(applied, boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3])

    def box(self, params: EraseParams, i: int) -> tuple[int, int, int, int]:
        """Sample `i`'s box as ints (x0, y0, w, h)."""
        return int(params.x0[i]), int(params.y0[i]), int(params.w[i]), int(params.h[i])

    def apply(self, image: torch.Tensor, params: EraseParams) -> torch.Tensor:
        """Write `value` into the drawn box."""
        i = 0  # params hold this one sample
        if not bool(params.applied[i]):
            return image
        x0, y0, w, h = self.box(params, i)
        out = image.clone()
        out[:, y0 : y0 + h, x0 : x0 + w] = self.value
        return out

    def fast_step(self, params: EraseParams, sizes: torch.Tensor) -> FastStep:
        """Copy the image and write `value` (rounded and saturated for uint8) into the box."""
        applied = params.applied.tolist()
        boxes = torch.stack([params.x0, params.y0, params.w, params.h], 1).to(torch.int64).tolist()
        value = self.value

        def step(i: int, im: np.ndarray, scale: float, buf: np.ndarray
                 ) -> tuple[np.ndarray, float]:
            if not applied[i]:
                return im, scale
            np.copyto(buf, im)
            x0, y0, w, h = boxes[i]
            raw = value * scale
            buf[y0 : y0 + h, x0 : x0 + w] = (np.clip(np.round(raw), 0, 255)
                                             if buf.dtype == np.uint8 else raw)
            return buf, scale

        return step
