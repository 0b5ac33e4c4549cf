"""The op families, and the registry of op names used by specs (JSON and proto).

An op is registered by importing its class here and adding it to `OPS`; specs then
name it by its `name`, in the proto's `NamedOp` form (see `augment.proto`).
"""

from typing import Any

from augserve.server.augment.ops.base import GeometricOp, Op, OpParams, SpecError
from augserve.server.augment.ops.blur import GaussianBlur
from augserve.server.augment.ops.color import ColorJitter, ColourOp, Grayscale, Normalize
from augserve.server.augment.ops.erase import RandomErasing
from augserve.server.augment.ops.flip import HorizontalFlip, VerticalFlip
from augserve.server.augment.ops.gamma import RandomGamma
from augserve.server.augment.ops.geometry import (
    AnchoredCrop,
    BoxOp,
    CenterCrop,
    RandomCrop,
    RandomResizedCrop,
    Resize,
)
from augserve.server.augment.ops.warp import Affine, Rotate, Scale, WarpOp

OPS: dict[str, type[Op[Any]]] = {
    cls.name: cls
    for cls in (
        HorizontalFlip,
        VerticalFlip,
        Rotate,
        Scale,
        Affine,
        RandomCrop,
        RandomResizedCrop,
        Resize,
        CenterCrop,
        AnchoredCrop,
        ColorJitter,
        Grayscale,
        GaussianBlur,
        RandomErasing,
        Normalize,
        RandomGamma,
    )
}

# the shared names; every op class is importable from here too
__all__ = ["OPS", "BoxOp", "ColourOp", "GeometricOp", "Op", "OpParams", "SpecError", "WarpOp"]
