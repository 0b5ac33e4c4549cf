"""Mirror flips: horizontal (left-right) and vertical (top-bottom)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import torch
from kornia.geometry.transform import hflip, vflip

from augserve.kernels.augment import flip
from augserve.server.augment.ops.base import GeometricOp, OpParams
from augserve.server.augment.ops.stage import FastStep, on_applied
from augserve.server.augment.rng import Keys


@dataclasses.dataclass(frozen=True)
class FlipParams(OpParams):
    """Only `applied`: a flip has nothing else to draw."""


@dataclasses.dataclass(frozen=True)
class HorizontalFlip(GeometricOp[FlipParams]):
    """Mirror left-right with probability p.

    Example:
        >>> HorizontalFlip(p=0.5).name
        'horizontal_flip'

    """

    name: ClassVar[str] = "horizontal_flip"
    params_type: ClassVar[type[OpParams]] = FlipParams
    horizontal: ClassVar[bool] = True

    def sample(self, keys: Keys, sizes: torch.Tensor) -> FlipParams:
        """Only draw 0, against p."""
        return FlipParams(self.draw_applied(keys))

    def forward(self, params: FlipParams, sizes: torch.Tensor) -> torch.Tensor:
        """Source -> destination maps (n, 3, 3), continuous coordinates (identity if unapplied)."""
        n = len(params)
        out = torch.eye(3, dtype=torch.float64).expand(n, 3, 3).clone()
        axis = 0 if self.horizontal else 1
        extent = sizes[:, 1 - axis].to(torch.float64)
        applied = params.applied
        out[applied, axis, axis] = -1.0
        out[applied, axis, 2] = extent[applied]
        return out

    def move_mask(self, mask: np.ndarray, params: FlipParams, forward: np.ndarray,
                  out_hw: tuple[int, int]) -> np.ndarray:
        """The mask flipped the same way, where the flip was drawn."""
        return flip(mask, self.horizontal) if bool(params.applied[0]) else mask

    def apply(self, image: torch.Tensor, params: FlipParams) -> torch.Tensor:
        """Flip the image with kornia if the flip was drawn."""
        i = 0  # params hold this one sample
        if not bool(params.applied[i]):
            return image
        return (hflip if self.horizontal else vflip)(image[None])[0]

    def fast_step(self, params: FlipParams, sizes: torch.Tensor) -> FastStep:
        """One `cv2.flip` per applied image."""
        applied = params.applied.tolist()
        horizontal = self.horizontal

        def step(i: int, im: np.ndarray, scale: float, buf: np.ndarray
                 ) -> tuple[np.ndarray, float]:
            return (flip(im, horizontal, out=buf) if applied[i] else im), scale

        return step

    def kornia_batch(self, x: torch.Tensor, params: FlipParams, sizes: torch.Tensor
                     ) -> torch.Tensor:
        """`torch.flip` of the applied rows."""
        dim = -1 if self.horizontal else -2

        def run(part: torch.Tensor, rows: Sequence[int]) -> torch.Tensor:
            return part.flip(dim)

        return on_applied(x, params.applied, run)


@dataclasses.dataclass(frozen=True)
class VerticalFlip(HorizontalFlip):
    """Mirror top-bottom with probability p."""

    name: ClassVar[str] = "vertical_flip"
    horizontal: ClassVar[bool] = False
