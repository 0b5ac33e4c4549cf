"""Affine warp ops that keep the image size: rotation, zoom, translate + shear.

Each gives a per-sample source -> destination map in continuous coordinates about
the image centre (W/2, H/2). The CPU fast path runs it as one `cv2.warpAffine`;
kornia's `warp_affine` (align_corners=True on pixel-index matrices) is the reference.
Pixels that map from outside the image take `fill`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import ClassVar, TypeVar

import numpy as np
import torch
from kornia.geometry.transform import warp_affine

from augserve.kernels.augment import warp_affine as cv_warp_affine
from augserve.server.augment.ops.base import (
    GeometricOp,
    OpParams,
    SpecError,
    check_range,
    fill_tensor,
)
from augserve.server.augment.ops.stage import FastStep, fills_by_scale, on_applied
from augserve.server.augment.rng import Keys

P = TypeVar("P", bound=OpParams)
_TO_INDEX = torch.tensor([[1.0, 0, -0.5], [0, 1.0, -0.5], [0, 0, 1.0]], dtype=torch.float64)


def _pixel_matrices(forward: torch.Tensor) -> torch.Tensor:
    """Continuous-coordinate maps (n, 3, 3) as pixel-index ones (n, 2, 3), for kornia."""
    return (_TO_INDEX @ forward @ torch.linalg.inv(_TO_INDEX))[:, :2]


@dataclasses.dataclass(frozen=True)
class WarpOp(GeometricOp[P]):
    """Shared code: centring, forward maps, the kornia apply and the fast path."""

    fill: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def linear(self, params: P) -> tuple[torch.Tensor, torch.Tensor]:
        """(n, 2, 2) linear part about the centre and (n, 2) translation, in pixels/size."""
        raise NotImplementedError

    def forward(self, params: P, sizes: torch.Tensor) -> torch.Tensor:
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

    def move_mask(self, mask: np.ndarray, params: P, forward: np.ndarray,
                  out_hw: tuple[int, int]) -> np.ndarray:
        """The mask warped the same way (nearest), where the warp was drawn."""
        if not bool(params.applied[0]):
            return mask
        return cv_warp_affine(mask, forward, out_hw, 0, interpolation="nearest")

    def apply(self, image: torch.Tensor, params: P) -> torch.Tensor:
        """Warp the image with kornia's `warp_affine` (pixel-index matrix, fill outside)."""
        i = 0  # params hold this one sample
        if not bool(params.applied[i]):
            return image
        _, height, width = image.shape
        sizes = torch.tensor([[height, width]])
        forward = self.forward(params.take([i]), sizes)
        m = _pixel_matrices(forward).to(image.dtype).to(image.device)
        return warp_affine(image[None], m, (height, width), mode="bilinear", padding_mode="fill",
                           align_corners=True, fill_value=fill_tensor(self.fill, image))[0]

    def fast_step(self, params: P, sizes: torch.Tensor) -> FastStep:
        """One `cv2.warpAffine` per applied image, the size kept."""
        applied = params.applied.tolist()
        forward = self.forward(params, sizes).numpy()
        fills = fills_by_scale(self.fill)

        def step(i: int, im: np.ndarray, scale: float, buf: np.ndarray
                 ) -> tuple[np.ndarray, float]:
            if not applied[i]:
                return im, scale
            return cv_warp_affine(im, forward[i], im.shape[:2], fills[scale], out=buf), scale

        return step

    def kornia_batch(self, x: torch.Tensor, params: P, sizes: torch.Tensor) -> torch.Tensor:
        """One `warp_affine` of the applied rows, with per-sample matrices."""
        forward = self.forward(params, sizes)

        def run(part: torch.Tensor, rows: Sequence[int]) -> torch.Tensor:
            m = _pixel_matrices(forward[list(rows)]).to(x.dtype).to(x.device)
            return warp_affine(part, m, tuple(x.shape[-2:]), mode="bilinear",
                               padding_mode="fill", align_corners=True,
                               fill_value=fill_tensor(self.fill, x))

        return on_applied(x, params.applied, run)


@dataclasses.dataclass(frozen=True)
class RotateParams(OpParams):
    """Angle in degrees, counter-clockwise as displayed."""

    angle: torch.Tensor


@dataclasses.dataclass(frozen=True)
class Rotate(WarpOp[RotateParams]):
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

    def linear(self, params: RotateParams) -> tuple[torch.Tensor, torch.Tensor]:
        """Rotation matrix (y points down, so counter-clockwise moves +x towards -y)."""
        theta = torch.deg2rad(params.angle)
        c, s = torch.cos(theta), torch.sin(theta)
        a = torch.stack([torch.stack([c, s], -1), torch.stack([-s, c], -1)], -2)
        return a, torch.zeros(len(params), 2, dtype=torch.float64)


@dataclasses.dataclass(frozen=True)
class ScaleParams(OpParams):
    """Zoom factor (> 1 magnifies)."""

    factor: torch.Tensor


@dataclasses.dataclass(frozen=True)
class Scale(WarpOp[ScaleParams]):
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

    def linear(self, params: ScaleParams) -> tuple[torch.Tensor, torch.Tensor]:
        """`factor` times the identity."""
        f = params.factor
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
class Affine(WarpOp[AffineParams]):
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

    def linear(self, params: AffineParams) -> tuple[torch.Tensor, torch.Tensor]:
        """Shear x then y: [[1, tan sx], [tan sy, 1]]."""
        p = params
        kx, ky = torch.tan(torch.deg2rad(p.shear_x)), torch.tan(torch.deg2rad(p.shear_y))
        one = torch.ones_like(kx)
        a = torch.stack([torch.stack([one, kx], -1), torch.stack([ky, one + kx * ky], -1)], -2)
        return a, torch.stack([p.tx, p.ty], 1)


WARP_OPS = (Rotate, Scale, Affine)
