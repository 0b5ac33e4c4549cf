"""Mirror flips: horizontal (left-right) and vertical (top-bottom)."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch
from kornia.geometry.transform import hflip, vflip

from augserve.server.augment.ops.base import Op, OpParams


@dataclasses.dataclass(frozen=True)
class FlipParams(OpParams):
    """Only `applied`: a flip has nothing else to draw."""


@dataclasses.dataclass(frozen=True)
class HorizontalFlip(Op):
    """Mirror left-right with probability p.

    Example:
        >>> HorizontalFlip(p=0.5).name
        'horizontal_flip'

    """

    name: ClassVar[str] = "horizontal_flip"
    kind: ClassVar[str] = "flip"
    params_type: ClassVar[type[OpParams]] = FlipParams
    horizontal: ClassVar[bool] = True

    def forward(self, params: OpParams, sizes: torch.Tensor) -> torch.Tensor:
        """Source -> destination maps (n, 3, 3), continuous coordinates (identity if unapplied)."""
        n = len(params)
        out = torch.eye(3, dtype=torch.float64).expand(n, 3, 3).clone()
        axis = 0 if self.horizontal else 1
        extent = sizes[:, 1 - axis].to(torch.float64)
        applied = params.applied
        out[applied, axis, axis] = -1.0
        out[applied, axis, 2] = extent[applied]
        return out

    def apply(self, image: torch.Tensor, params: OpParams) -> torch.Tensor:
        """Flip the image with kornia if the flip was drawn."""
        i = 0  # params hold this one sample
        if not bool(params.applied[i]):
            return image
        return (hflip if self.horizontal else vflip)(image[None])[0]


@dataclasses.dataclass(frozen=True)
class VerticalFlip(HorizontalFlip):
    """Mirror top-bottom with probability p."""

    name: ClassVar[str] = "vertical_flip"
    horizontal: ClassVar[bool] = False
