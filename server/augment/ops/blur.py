"""Gaussian blur with a per-sample sigma."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import torch
from kornia.filters import gaussian_blur2d

from augserve.kernels.augment import gaussian_blur
from augserve.server.augment.ops.base import Op, OpParams, SpecError, check_range
from augserve.server.augment.ops.stage import FastStep, on_applied
from augserve.server.augment.rng import Keys


@dataclasses.dataclass(frozen=True)
class BlurParams(OpParams):
    """The standard deviation, in pixels, of each sample's kernel."""

    sigma: torch.Tensor


@dataclasses.dataclass(frozen=True)
class GaussianBlur(Op[BlurParams]):
    """Blur with an odd `kernel_size` and sigma uniform in `sigma`; reflect-101 borders."""

    name: ClassVar[str] = "gaussian_blur"
    params_type: ClassVar[type[OpParams]] = BlurParams
    param_bounds: ClassVar[dict[str, tuple[float, float]]] = {"sigma": (1e-3, 20.0)}
    kernel_size: int = 3
    sigma: tuple[float, float] = (0.1, 2.0)

    def validate(self) -> None:
        """Odd kernel size in 1..63; 0 < sigma <= 20."""
        if not (1 <= self.kernel_size <= 63 and self.kernel_size % 2 == 1):
            raise SpecError("kernel_size", f"expected an odd size in 1..63, got {self.kernel_size}")
        check_range("sigma", self.sigma, 1e-3, 20.0)

    def sample(self, keys: Keys, sizes: torch.Tensor) -> BlurParams:
        """Sigma from draw 1."""
        return BlurParams(self.draw_applied(keys), keys.uniform(1, *self.sigma))

    def apply(self, image: torch.Tensor, params: BlurParams) -> torch.Tensor:
        """Kornia's gaussian_blur2d with 'reflect' (= reflect-101) borders."""
        i = 0  # params hold this one sample
        if not bool(params.applied[i]):
            return image
        k = self.kernel_size
        sigma = float(params.sigma[i])
        return gaussian_blur2d(image[None], (k, k), (sigma, sigma), border_type="reflect")[0]

    def fast_step(self, params: BlurParams, sizes: torch.Tensor) -> FastStep:
        """One `cv2.GaussianBlur` per applied image."""
        applied, sigma, k = params.applied.tolist(), params.sigma.tolist(), self.kernel_size

        def step(i: int, im: np.ndarray, scale: float, buf: np.ndarray
                 ) -> tuple[np.ndarray, float]:
            if not applied[i]:
                return im, scale
            return gaussian_blur(im, k, sigma[i], out=buf), scale

        return step

    def kornia_batch(self, x: torch.Tensor, params: BlurParams, sizes: torch.Tensor
                     ) -> torch.Tensor:
        """One `gaussian_blur2d` of the applied rows, with per-sample sigma."""
        k = self.kernel_size

        def run(part: torch.Tensor, rows: Sequence[int]) -> torch.Tensor:
            sigma = params.sigma[list(rows)].to(x.dtype).to(x.device)
            return gaussian_blur2d(part, (k, k), torch.stack([sigma, sigma], 1),
                                   border_type="reflect")

        return on_applied(x, params.applied, run)
