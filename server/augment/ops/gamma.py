"""Random gamma: x ** gamma per sample (albumentations' and kornia's RandomGamma).

Values are clamped to [0, 1] first (the output of `kornia.enhance.adjust_gamma` is
clamped too), so the op is defined wherever it sits in the pipeline. gamma < 1
brightens, gamma > 1 darkens, gamma = 1 is the identity. Albumentations' default
`gamma_limit=(80, 120)` is `gamma=(0.8, 1.2)` here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import ClassVar

import cv2
import kornia
import numpy as np
import torch

from augserve.server.augment.ops.base import Op, OpParams, check_range
from augserve.server.augment.ops.stage import FastStep, on_applied
from augserve.server.augment.rng import Keys

GAMMA_LIMITS = (0.01, 10.0)
_LEVELS = torch.arange(256, dtype=torch.float64) / 255.0


@dataclasses.dataclass(frozen=True)
class GammaParams(OpParams):
    """Each sample's exponent."""

    gamma: torch.Tensor


@dataclasses.dataclass(frozen=True)
class RandomGamma(Op[GammaParams]):
    """Raise values in [0, 1] to a power drawn uniformly from `gamma`."""

    name: ClassVar[str] = "random_gamma"
    params_type: ClassVar[type[OpParams]] = GammaParams
    param_bounds: ClassVar[dict[str, tuple[float, float]]] = {"gamma": GAMMA_LIMITS}
    gamma: tuple[float, float] = (0.8, 1.2)

    def validate(self) -> None:
        """0.01 <= min <= max <= 10."""
        check_range("gamma", self.gamma, *GAMMA_LIMITS)

    def sample(self, keys: Keys, sizes: torch.Tensor) -> GammaParams:
        """Gamma from draw 1."""
        return GammaParams(self.draw_applied(keys), keys.uniform(1, *self.gamma))

    def apply(self, image: torch.Tensor, params: GammaParams) -> torch.Tensor:
        """kornia.enhance.adjust_gamma of the clamped image."""
        i = 0  # params hold this one sample
        if not bool(params.applied[i]):
            return image
        return kornia.enhance.adjust_gamma(image.clamp(0, 1), float(params.gamma[i]))

    def fast_step(self, params: GammaParams, sizes: torch.Tensor) -> FastStep:
        """uint8: one `cv2.LUT` per image (tables built for the batch); float32: `np.power`."""
        applied, gamma = params.applied.tolist(), params.gamma.tolist()
        # row i maps each uint8 level v to round(255 * (v / 255) ** gamma_i)
        tables = list((_LEVELS[None] ** params.gamma[:, None] * 255).round().to(torch.uint8)
                      .numpy())

        def step(i: int, im: np.ndarray, scale: float, buf: np.ndarray
                 ) -> tuple[np.ndarray, float]:
            if not applied[i]:
                return im, scale
            if im.dtype == np.uint8:
                return cv2.LUT(im, tables[i], dst=buf), scale
            np.clip(im, 0.0, 1.0, out=buf)
            return np.power(buf, gamma[i], out=buf), 1.0

        return step

    def kornia_batch(self, x: torch.Tensor, params: GammaParams, sizes: torch.Tensor
                     ) -> torch.Tensor:
        """One `adjust_gamma` of the applied rows, with per-sample gamma."""

        def run(part: torch.Tensor, rows: Sequence[int]) -> torch.Tensor:
            gamma = params.gamma[list(rows)].to(x.dtype).to(x.device)
            return kornia.enhance.adjust_gamma(part.clamp(0, 1), gamma)

        return on_applied(x, params.applied, run)
