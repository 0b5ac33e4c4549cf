"""Box resampling ops: crop an integer box (fill outside the image), then resize.

RandomResizedCrop, RandomCrop (with padding), CenterCrop, AnchoredCrop and Resize all reduce
to a per-sample box (x0, y0, w, h) and an output size. The CPU fast path runs each as
one `cv2.resize` of the box; kornia's `resize` (bilinear, half-pixel centres,
`align_corners=False`, no antialias) is the reference. The source -> destination
map is `x' = (x - x0) * out_w / w` in continuous coordinates.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from kornia.geometry.transform import resize

from augserve.kernels.augment import crop_resize
from augserve.server.augment.ops.base import (
    GeometricOp,
    OpParams,
    SpecError,
    check_range,
    check_size,
    fill_tensor,
    sample_area_ratio_boxes,
)
from augserve.server.augment.ops.stage import FastStep, fills_by_scale
from augserve.server.augment.rng import Keys


@dataclasses.dataclass(frozen=True)
class BoxParams(OpParams):
    """The box each sample is cropped to, in input pixels (integers held in float64)."""

    x0: torch.Tensor
    y0: torch.Tensor
    w: torch.Tensor
    h: torch.Tensor


@dataclasses.dataclass(frozen=True)
class BoxOp(GeometricOp[BoxParams]):
    """Shared code of the box ops: forward maps, output sizes, both backends' paths."""

    params_type: ClassVar[type[OpParams]] = BoxParams
    param_bounds: ClassVar[dict[str, tuple[float, float]]] = {
        "x0": (-16384, 16384), "y0": (-16384, 16384), "w": (1, 16384), "h": (1, 16384)}
    fill: tuple[float, float, float] = (0.0, 0.0, 0.0)
    size: tuple[int, int] = (224, 224)

    def boxes(self, params: BoxParams) -> torch.Tensor:
        """(n, 4) int64 boxes as x0, y0, w, h."""
        return torch.stack([params.x0, params.y0, params.w, params.h], 1).to(torch.int64)

    def out_sizes(self, params: BoxParams, sizes: torch.Tensor) -> torch.Tensor:
        """`size` for every sample: each box op resamples its box to its fixed size."""
        return torch.tensor(self.size, dtype=torch.int64).repeat(len(params), 1)

    def forward(self, params: BoxParams, sizes: torch.Tensor) -> torch.Tensor:
        """Source -> destination maps (n, 3, 3) in continuous coordinates."""
        out_hw = self.out_sizes(params, sizes).to(torch.float64)
        sx, sy = out_hw[:, 1] / params.w, out_hw[:, 0] / params.h
        m = torch.zeros(len(params), 3, 3, dtype=torch.float64)
        m[:, 0, 0], m[:, 0, 2] = sx, -params.x0 * sx
        m[:, 1, 1], m[:, 1, 2] = sy, -params.y0 * sy
        m[:, 2, 2] = 1.0
        return m

    def move_mask(self, mask: np.ndarray, params: BoxParams, forward: np.ndarray,
                  out_hw: tuple[int, int]) -> np.ndarray:
        """The mask cropped and resized the same way (nearest), applied or not."""
        return crop_resize(mask, self.boxes(params)[0].tolist(), out_hw, 0,
                           interpolation="nearest")

    def apply(self, image: torch.Tensor, params: BoxParams) -> torch.Tensor:
        """Crop (padding with the fill) and resize the image with kornia's resize."""
        i = 0  # params hold this one sample
        x0, y0, w, h = (int(v) for v in self.boxes(params)[i])
        _, height, width = image.shape
        f = fill_tensor(self.fill, image).view(-1, 1, 1)
        pad = (max(0, -x0), max(0, x0 + w - width), max(0, -y0), max(0, y0 + h - height))
        padded = F.pad(image - f, pad) + f if any(pad) else image
        crop = padded[:, y0 + pad[2] : y0 + pad[2] + h, x0 + pad[0] : x0 + pad[0] + w]
        out_h, out_w = (int(v) for v in self.out_sizes(params.take([i]), torch.zeros(1, 2))[0])
        if (out_h, out_w) == (h, w):
            return crop
        return resize(crop[None], (out_h, out_w), interpolation="bilinear",
                      align_corners=False, antialias=False)[0]

    def fast_step(self, params: BoxParams, sizes: torch.Tensor) -> FastStep:
        """One `cv2.resize` of each image's box (filled where it leaves the image)."""
        boxes = self.boxes(params).tolist()
        out_hw = self.out_sizes(params, sizes).tolist()
        fills = fills_by_scale(self.fill)

        def step(i: int, im: np.ndarray, scale: float, buf: np.ndarray
                 ) -> tuple[np.ndarray, float]:
            return crop_resize(im, boxes[i], out_hw[i], fills[scale], out=buf), scale

        return step

    def kornia_batch(self, x: torch.Tensor, params: BoxParams, sizes: torch.Tensor
                     ) -> torch.Tensor:
        """Every sample's box crop and resize as one `grid_sample` (the semantics of `apply`).

        `resize` (bilinear, align_corners=False) reads source row (y + 0.5) * h / out_h - 0.5,
        clamped to the crop; the crop is padded with the fill where it leaves the image.
        Sampling the fill-shifted image at those rows and columns, zeros outside,
        reproduces both exactly.
        """
        n, _, height, width = x.shape
        boxes = self.boxes(params).to(torch.float64)
        out_h, out_w = self.size
        x0, y0, w, h = boxes[:, 0:1], boxes[:, 1:2], boxes[:, 2:3], boxes[:, 3:4]
        ys = (torch.arange(out_h, dtype=torch.float64) + 0.5) * h / out_h - 0.5
        xs = (torch.arange(out_w, dtype=torch.float64) + 0.5) * w / out_w - 0.5
        ys = torch.minimum(ys.clamp(min=0), h - 1) + y0  # (n, out_h), source pixel rows
        xs = torch.minimum(xs.clamp(min=0), w - 1) + x0
        # normalised for align_corners=True: pixel p -> 2 p / (size - 1) - 1
        gy = (2 * ys / max(height - 1, 1) - 1)[:, :, None].expand(n, out_h, out_w)
        gx = (2 * xs / max(width - 1, 1) - 1)[:, None, :].expand(n, out_h, out_w)
        grid = torch.stack([gx, gy], -1).to(x.dtype).to(x.device)
        fill = fill_tensor(self.fill, x).view(1, -1, 1, 1)
        out = F.grid_sample(x - fill, grid, mode="bilinear", padding_mode="zeros",
                            align_corners=True)
        return out + fill


def _full_boxes(sizes: torch.Tensor) -> tuple[torch.Tensor, ...]:
    n = sizes.shape[0]
    zero = torch.zeros(n, dtype=torch.float64)
    return zero, zero.clone(), sizes[:, 1].to(torch.float64), sizes[:, 0].to(torch.float64)


@dataclasses.dataclass(frozen=True)
class RandomResizedCrop(BoxOp):
    """Crop area fraction in `scale` and aspect w/h in `ratio`, then resize to `size`.

    Boxes are searched as torchvision does (10 tries, then a centred fallback),
    and a try only counts if its rounded box keeps area and ratio in range. When
    not applied (p < 1) the whole image is resized.
    """

    name: ClassVar[str] = "random_resized_crop"
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)

    def validate(self) -> None:
        """Size positive; 0 < scale <= 1; 0 < ratio."""
        check_size("size", self.size)
        check_range("scale", self.scale, 1e-6, 1.0)
        check_range("ratio", self.ratio, 1e-3, 1e3)

    def sample(self, keys: Keys, sizes: torch.Tensor) -> BoxParams:
        """Draw a box per sample (draws 1..40), the fallback where no try fits."""
        applied = self.draw_applied(keys)
        boxes, found = sample_area_ratio_boxes(keys, sizes, self.scale, self.ratio, strict=False)
        height, width = sizes[:, 0].to(torch.float64), sizes[:, 1].to(torch.float64)
        in_ratio = width / height
        fw = torch.where(in_ratio < self.ratio[0], width,
                         torch.where(in_ratio > self.ratio[1], torch.round(height * self.ratio[1]),
                                     width))
        fh = torch.where(in_ratio < self.ratio[0], torch.round(width / self.ratio[0]), height)
        fallback = torch.stack([torch.floor((width - fw) / 2), torch.floor((height - fh) / 2),
                                fw, fh], 1)
        boxes = torch.where(found[:, None], boxes, fallback)
        full = torch.stack(_full_boxes(sizes), 1)
        boxes = torch.where(applied[:, None], boxes, full)
        return BoxParams(applied, boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3])


@dataclasses.dataclass(frozen=True)
class RandomCrop(BoxOp):
    """Pad each side by `padding` (with `fill`), then crop `size` at a uniform place."""

    name: ClassVar[str] = "random_crop"
    requires_p_one: ClassVar[bool] = True
    padding: int = 0

    def validate(self) -> None:
        """Size positive, padding >= 0."""
        check_size("size", self.size)
        if not 0 <= self.padding <= 4096:
            raise SpecError("padding", f"expected 0..4096, got {self.padding}")

    def sample(self, keys: Keys, sizes: torch.Tensor) -> BoxParams:
        """Top-left corner uniform over the padded image (draws 1 and 2)."""
        h, w = self.size
        pad = self.padding
        span_y = (sizes[:, 0] + 2 * pad - h + 1).clamp(min=1)
        span_x = (sizes[:, 1] + 2 * pad - w + 1).clamp(min=1)
        y0 = keys.integers(1, span_y).to(torch.float64) - pad
        x0 = keys.integers(2, span_x).to(torch.float64) - pad
        n = len(keys)
        return BoxParams(torch.ones(n, dtype=torch.bool), x0, y0,
                         torch.full((n,), float(w), dtype=torch.float64),
                         torch.full((n,), float(h), dtype=torch.float64))


@dataclasses.dataclass(frozen=True)
class CenterCrop(BoxOp):
    """Crop `size` at the centre (offset floor((H - h) / 2)); fill where it is larger."""

    name: ClassVar[str] = "center_crop"
    requires_p_one: ClassVar[bool] = True

    def validate(self) -> None:
        """Size positive."""
        check_size("size", self.size)

    def sample(self, keys: Keys, sizes: torch.Tensor) -> BoxParams:
        """No randomness: the centred box."""
        h, w = self.size
        n = len(keys)
        y0 = torch.div(sizes[:, 0] - h, 2, rounding_mode="floor").to(torch.float64)
        x0 = torch.div(sizes[:, 1] - w, 2, rounding_mode="floor").to(torch.float64)
        return BoxParams(torch.ones(n, dtype=torch.bool), x0, y0,
                         torch.full((n,), float(w), dtype=torch.float64),
                         torch.full((n,), float(h), dtype=torch.float64))


ANCHORS = ("center", "top_left", "top_right", "bottom_left", "bottom_right")


@dataclasses.dataclass(frozen=True)
class AnchoredCrop(BoxOp):
    """Crop `size` at a fixed place: the centre (as CenterCrop) or a corner (`anchor`).

    The five anchors are the five crops of torchvision's `FiveCrop`; test-time
    augmentation's `five_crop` view uses the corners.
    """

    name: ClassVar[str] = "anchored_crop"
    requires_p_one: ClassVar[bool] = True
    anchor: str = "center"

    def validate(self) -> None:
        """Size positive, a known anchor."""
        check_size("size", self.size)
        if self.anchor not in ANCHORS:
            raise SpecError("anchor", f"expected one of {ANCHORS}, got {self.anchor!r}")

    def sample(self, keys: Keys, sizes: torch.Tensor) -> BoxParams:
        """No randomness: the box at the anchor (the centre's offset floor((H - h) / 2))."""
        h, w = self.size
        n = len(keys)
        vertical, _, horizontal = self.anchor.partition("_")
        y0 = torch.div(sizes[:, 0] - h, 2, rounding_mode="floor").to(torch.float64)
        x0 = torch.div(sizes[:, 1] - w, 2, rounding_mode="floor").to(torch.float64)
        if self.anchor != "center":
            y0 = (sizes[:, 0] - h).to(torch.float64) if vertical == "bottom" else y0 * 0
            x0 = (sizes[:, 1] - w).to(torch.float64) if horizontal == "right" else x0 * 0
        return BoxParams(torch.ones(n, dtype=torch.bool), x0, y0,
                         torch.full((n,), float(w), dtype=torch.float64),
                         torch.full((n,), float(h), dtype=torch.float64))


@dataclasses.dataclass(frozen=True)
class Resize(BoxOp):
    """Resize the whole image to `size` (bilinear, no antialias)."""

    name: ClassVar[str] = "resize"
    requires_p_one: ClassVar[bool] = True

    def validate(self) -> None:
        """Size positive."""
        check_size("size", self.size)

    def sample(self, keys: Keys, sizes: torch.Tensor) -> BoxParams:
        """No randomness: the whole image."""
        return BoxParams(torch.ones(len(keys), dtype=torch.bool), *_full_boxes(sizes))


BOX_OPS = (RandomResizedCrop, RandomCrop, CenterCrop, AnchoredCrop, Resize)
