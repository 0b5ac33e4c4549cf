"""Affine warp ops that keep the image size: rotation, zoom, translate + shear.

Each gives a per-sample source -> destination map in continuous coordinates about
the image centre (W/2, H/2). The CPU fast path runs it as one `cv2.warpAffine`;
kornia's `warp_affine` (align_corners=True on pixel-index matrices) is the reference.
Pixels that map from outside the image take `fill`.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch
from kornia.geometry.transform import warp_affine

from augserve.server.augment.ops.base import (
    Op,
    OpParams,
    SpecError,
    check_range,
    fill_tensor,
)
from augserve.server.augment.rng import Keys


@dataclasses.dataclass(frozen=True)
class WarpOp(Op):
    """Shared code: centring, forward maps and the kornia apply."""

    kind: ClassVar[str] = "warp"
    fill: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def linear(self, params: OpParams) -> tuple[torch.Tensor, torch.Tensor]:
        """(n, 2, 2) linear part about the centre and (n, 2) translation, in pixels/size."""
        raise NotImplementedError

    def forward(self, params: OpParams, sizes: torch.Tensor) -> torch.Tensor:
        """Source -> destination maps (n, 3, 3); identity where not applied."""
        a, t = self.linear(params)
        n = len(params)
        centre = torch.stack([sizes[:, 1], sizes[:, 0]], 1).to(torch.float64) / 2
        shift = t * torch.stack([sizes[:, 1], sizes[:, 0]], 1).to(torch.float64)
        m = torch.eye(3, dtype=torch.float64).expand(n, 3, 3).clone()
        m[:, :2, :2] = a
        m[:, :2, 2] = centre + shift - (a @ centre[:, :, None])[:, :, 0]
        m[~params.applied] = torch.eye(3, dtype=torch.float64)
        return m

    def apply(self, image: torch.Tensor, params: OpParams) -> torch.Tensor:
        """Warp the image with kornia's `warp_affine` (pixel-index matrix, fill outside)."""
        i = 0  # params hold this one sample
        if not bool(params.applied[i]):
            return image
        _, height, width = image.shape
        sizes = torch.tensor([[height, width]])
        forward = self.forward(params.take([i]), sizes)[0]
        to_index = torch.tensor([[1.0, 0, -0.5], [0, 1.0, -0.5], [0, 0, 1.0]], dtype=torch.float64)
        pixel = to_index @ forward @ torch.linalg.inv(to_index)
        m = pixel[:2].to(image.dtype).to(image.device)[None]
        return warp_affine(image[None], m, (height, width), mode="bilinear", padding_mode="fill",
                           align_corners=True, fill_value=fill_tensor(self.fill, image))[0]


@dataclasses.dataclass(frozen=True)
class RotateParams(OpParams):
    """Angle in degrees, counter-clockwise as displayed."""

    angle: torch.Tensor


@dataclasses.dataclass(frozen=True)
class Rotate(WarpOp):
    """Rotate about the centre by an angle uniform in `degrees`."""

    name: ClassVar[str] = "rotate"
    params_type: ClassVar[type[OpParams]] = RotateParams
    degrees: tuple[float, float] = (-30.0, 30.0)

    def validate(self) -> None:
        """Degrees within [-360, 360]."""
        check_range("degrees", self.degrees, -360.0, 360.0)

    def sample(self, keys: Keys, sizes: torch.Tensor) -> RotateParams:
        """Angle from draw 1."""
        return RotateParams(self.draw_applied(keys), keys.uniform(1, *self.degrees))

    def linear(self, params: OpParams) -> tuple[torch.Tensor, torch.Tensor]:
        """Rotation matrix (y points down, so counter-clockwise moves +x towards -y)."""
        theta = torch.deg2rad(params.angle)  # type: ignore[attr-defined]
        c, s = torch.cos(theta), torch.sin(theta)
        a = torch.stack([torch.stack([c, s], -1), torch.stack([-s, c], -1)], -2)
        return a, torch.zeros(len(params), 2, dtype=torch.float64)


@dataclasses.dataclass(frozen=True)
class ScaleParams(OpParams):
    """Zoom factor (> 1 magnifies)."""

    factor: torch.Tensor


@dataclasses.dataclass(frozen=True)
class Scale(WarpOp):
    """Zoom about the centre by a factor uniform in `scale`; the size is kept."""

    name: ClassVar[str] = "scale"
    params_type: ClassVar[type[OpParams]] = ScaleParams
    param_bounds: ClassVar[dict[str, tuple[float, float]]] = {"factor": (1e-3, 100.0)}
    scale: tuple[float, float] = (0.8, 1.2)

    def validate(self) -> None:
        """0 < scale <= 100."""
        check_range("scale", self.scale, 1e-3, 100.0)

    def sample(self, keys: Keys, sizes: torch.Tensor) -> ScaleParams:
        """Factor from draw 1."""
        return ScaleParams(self.draw_applied(keys), keys.uniform(1, *self.scale))

    def linear(self, params: OpParams) -> tuple[torch.Tensor, torch.Tensor]:
        """`factor` times the identity."""
        f = params.factor  # type: ignore[attr-defined]
        a = torch.eye(2, dtype=torch.float64) * f[:, None, None]
        return a, torch.zeros(len(params), 2, dtype=torch.float64)


@dataclasses.dataclass(frozen=True)
class AffineParams(OpParams):
    """Translation (fractions of width / height) and shears (degrees)."""

    tx: torch.Tensor
    ty: torch.Tensor
    shear_x: torch.Tensor
    shear_y: torch.Tensor


@dataclasses.dataclass(frozen=True)
class Affine(WarpOp):
    """Translate by up to `translate` = [tx, ty] (fractions) and shear within the ranges."""

    name: ClassVar[str] = "affine"
    params_type: ClassVar[type[OpParams]] = AffineParams
    param_bounds: ClassVar[dict[str, tuple[float, float]]] = {
        "tx": (-1, 1), "ty": (-1, 1), "shear_x": (-80, 80), "shear_y": (-80, 80)}
    translate: tuple[float, float] = (0.0, 0.0)
    shear: tuple[float, float] = (0.0, 0.0)
    shear_y: tuple[float, float] = (0.0, 0.0)

    def validate(self) -> None:
        """Translate fractions in [0, 1]; shears within (-80, 80) degrees."""
        if len(self.translate) != 2 or not all(0 <= float(v) <= 1 for v in self.translate):
            raise SpecError("translate", f"expected [tx, ty] in [0, 1], got {list(self.translate)}")
        check_range("shear", self.shear, -80.0, 80.0)
        check_range("shear_y", self.shear_y, -80.0, 80.0)

    def sample(self, keys: Keys, sizes: torch.Tensor) -> AffineParams:
        """Draws 1..4: tx, ty, shear_x, shear_y."""
        tx, ty = self.translate
        return AffineParams(self.draw_applied(keys), keys.uniform(1, -tx, tx),
                            keys.uniform(2, -ty, ty), keys.uniform(3, *self.shear),
                            keys.uniform(4, *self.shear_y))

    def linear(self, params: OpParams) -> tuple[torch.Tensor, torch.Tensor]:
        """Shear x then y: [[1, tan sx], [tan sy, 1]]."""
        p: AffineParams = params  # type: ignore[assignment]
        kx, ky = torch.tan(torch.deg2rad(p.shear_x)), torch.tan(torch.deg2rad(p.shear_y))
        one = torch.ones_like(kx)
        a = torch.stack([torch.stack([one, kx], -1), torch.stack([ky, one + kx * ky], -1)], -2)
        return a, torch.stack([p.tx, p.ty], 1)


WARP_OPS = (Rotate, Scale, Affine)
