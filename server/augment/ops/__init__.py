"""The op families, and the registry of op names used by specs (JSON and proto)."""

from typing import Any

from augserve.server.augment.ops.base import GeometricOp, Op, OpParams, SpecError
from augserve.server.augment.ops.blur import GaussianBlur
from augserve.server.augment.ops.color import ColorJitter, ColourOp, Grayscale, Normalize
from augserve.server.augment.ops.erase import RandomErasing
from augserve.server.augment.ops.flip import HorizontalFlip, VerticalFlip
from augserve.server.augment.ops.geometry import (
    BoxOp,
    CenterCrop,
    RandomCrop,
    RandomResizedCrop,
    Resize,
)
from augserve.server.augment.ops.warp import Affine, Rotate, Scale, WarpOp

OPS: dict[str, type[Op[Any]]] = {
    cls.name: cls
    for cls in (HorizontalFlip, VerticalFlip, Rotate, Scale, Affine, RandomCrop,
                RandomResizedCrop, Resize, CenterCrop, ColorJitter, Grayscale, GaussianBlur,
                RandomErasing, Normalize)
}

__all__ = ["OPS", "Affine", "BoxOp", "CenterCrop", "ColorJitter", "ColourOp", "GaussianBlur",
           "GeometricOp", "Grayscale", "HorizontalFlip", "Normalize", "Op", "OpParams",
           "RandomCrop", "RandomErasing", "RandomResizedCrop", "Resize", "Rotate", "Scale",
           "SpecError", "VerticalFlip", "WarpOp"]
