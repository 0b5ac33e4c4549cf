"""Colour ops, each affine in RGB: colour jitter, grayscale, normalize.

Every op gives a per-sample 3x4 matrix on values in [0, 1]; the plan folds a run of
them into one matrix, which the CPU fast path applies with one `cv2.transform`.

ColorJitter applies, in this fixed order (torchvision draws a random order instead),
clamping to [0, 1] after each step as torchvision and kornia do:

1. brightness `b`: x * b
2. contrast `c`: c * x + (1 - c) * m, m = mean grey of the image entering this step
   (the image after the previous ops, e.g. the resized crop, and after brightness)
3. saturation `s`: s * x + (1 - s) * grey(x)
4. hue `h` (turns): rotation by 2*pi*h of the I, Q chroma plane of YIQ (as DALI does)

Grey is ITU-R 601: 0.299 R + 0.587 G + 0.114 B. Each step is affine, so the plan runs
each as a 3x4 matrix followed by the clamp. The CPU fast path applies a step's matrix
only where its clamp can act (a factor above 1, or a hue turn), writing uint8 (whose
saturation is the clamp); the other steps, grayscale and normalize fold into the next
matrix, and the last one writes the output.
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import kornia
import torch

from augserve.server.augment.ops.base import Op, OpParams, SpecError
from augserve.server.augment.rng import Keys

_EYE4 = torch.eye(4, dtype=torch.float64)

GREY = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64)
_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]],
                    dtype=torch.float64)
_YIQ_INV = torch.linalg.inv(_YIQ)
JITTER_STEPS = ("brightness", "contrast", "saturation", "hue")


def _eye(n: int) -> torch.Tensor:
    return _EYE4.expand(n, 4, 4).clone()


def hue_matrix(hue: torch.Tensor) -> torch.Tensor:
    """(n, 3, 3) RGB matrices rotating YIQ chroma by 2*pi*hue."""
    theta = 2 * math.pi * hue
    c, s = torch.cos(theta), torch.sin(theta)
    rot = torch.zeros(hue.shape[0], 3, 3, dtype=torch.float64)
    rot[:, 0, 0] = 1.0
    rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = c, -s, s, c
    return _YIQ_INV @ rot @ _YIQ


class ColourOp(Op):
    """Marker base: `matrix(params, mean_in)` gives (n, 3, 4) on [0, 1] values."""

    kind: ClassVar[str] = "colour"

    def matrix(self, params: OpParams, mean_in: torch.Tensor) -> torch.Tensor:
        """Per-sample 3x4 matrices; `mean_in` (n, 3) is the mean RGB entering this op."""
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class JitterParams(OpParams):
    """Brightness, contrast and saturation factors; hue in turns."""

    brightness: torch.Tensor
    contrast: torch.Tensor
    saturation: torch.Tensor
    hue: torch.Tensor


@dataclasses.dataclass(frozen=True)
class ColorJitter(ColourOp):
    """torchvision's ColorJitter in a fixed order; p applies all four together."""

    name: ClassVar[str] = "color_jitter"
    params_type: ClassVar[type[OpParams]] = JitterParams
    param_bounds: ClassVar[dict[str, tuple[float, float]]] = {
        "brightness": (0, 100), "contrast": (0, 100), "saturation": (0, 100), "hue": (-1, 1)}
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0

    def validate(self) -> None:
        """Factors in [0, 10]; hue in [0, 0.5]."""
        for field in ("brightness", "contrast", "saturation"):
            if not 0 <= getattr(self, field) <= 10:
                raise SpecError(field, f"expected 0..10, got {getattr(self, field)}")
        if not 0 <= self.hue <= 0.5:
            raise SpecError("hue", f"expected 0..0.5, got {self.hue}")

    def sample(self, keys: Keys, sizes: torch.Tensor) -> JitterParams:
        """Draws 1..4: brightness, contrast, saturation, hue."""
        b, c, s = self.brightness, self.contrast, self.saturation
        return JitterParams(
            self.draw_applied(keys), keys.uniform(1, max(0.0, 1 - b), 1 + b),
            keys.uniform(2, max(0.0, 1 - c), 1 + c), keys.uniform(3, max(0.0, 1 - s), 1 + s),
            keys.uniform(4, -self.hue, self.hue))

    def matrix(self, params: OpParams, mean_in: torch.Tensor,
               steps: tuple[str, ...] = JITTER_STEPS) -> torch.Tensor:
        """The chosen steps (all by default) composed, without the clamps between them.

        Contrast blends with the mean grey of the image entering it, which `mean_in`
        (the mean RGB entering the first chosen step) gives through the steps before.
        """
        p: JitterParams = params  # type: ignore[assignment]
        n = len(p)
        m = _eye(n)
        if "brightness" in steps:
            m[:, :3, :3] *= p.brightness[:, None, None]
        if "contrast" in steps:
            grey = ((m[:, :3, :3] @ mean_in[:, :, None])[:, :, 0] + m[:, :3, 3]) @ GREY
            contrast = _eye(n)
            contrast[:, :3, :3] *= p.contrast[:, None, None]
            contrast[:, :3, 3] = ((1 - p.contrast) * grey)[:, None]
            m = contrast @ m
        if "saturation" in steps:
            sat = _eye(n)
            sat[:, :3, :3] = (p.saturation[:, None, None] * torch.eye(3, dtype=torch.float64)
                              + (1 - p.saturation)[:, None, None] * GREY.expand(3, 3))
            m = sat @ m
        if "hue" in steps:
            hue = _eye(n)
            hue[:, :3, :3] = hue_matrix(p.hue)
            m = hue @ m
        m[~p.applied] = torch.eye(4, dtype=torch.float64)
        return m[:, :3]

    def apply(self, image: torch.Tensor, params: OpParams) -> torch.Tensor:
        """Kornia's functional ops, clamping after each step."""
        i = 0  # params hold this one sample
        if not bool(params.applied[i]):
            return image
        p: JitterParams = params  # type: ignore[assignment]
        x = image[None]
        x = kornia.enhance.adjust_contrast(x, float(p.brightness[i]))  # x * b, clamped
        x = kornia.enhance.adjust_contrast_with_mean_subtraction(x, float(p.contrast[i]))
        x = kornia.enhance.adjust_saturation_with_gray_subtraction(x, float(p.saturation[i]))
        rot = hue_matrix(p.hue[i : i + 1])[0].to(x.dtype).to(x.device)
        return torch.einsum("ck,khw->chw", rot, x[0]).clamp(0, 1)


@dataclasses.dataclass(frozen=True)
class GreyParams(OpParams):
    """Only `applied`."""


@dataclasses.dataclass(frozen=True)
class Grayscale(ColourOp):
    """Replace each channel by the ITU-R 601 grey, with probability p."""

    name: ClassVar[str] = "grayscale"
    params_type: ClassVar[type[OpParams]] = GreyParams

    def matrix(self, params: OpParams, mean_in: torch.Tensor) -> torch.Tensor:
        """Three rows of grey weights where applied, identity elsewhere."""
        m = _eye(len(params))[:, :3]
        m[params.applied, :, :3] = GREY.expand(3, 3)
        return m

    def apply(self, image: torch.Tensor, params: OpParams) -> torch.Tensor:
        """Kornia's rgb_to_grayscale, repeated to three channels."""
        i = 0  # params hold this one sample
        if not bool(params.applied[i]):
            return image
        return kornia.color.rgb_to_grayscale(image[None])[0].expand(3, -1, -1)


@dataclasses.dataclass(frozen=True)
class NormParams(OpParams):
    """Only `applied` (always true)."""


@dataclasses.dataclass(frozen=True)
class Normalize(ColourOp):
    """(x - mean) / std per channel, x in [0, 1]; needs a float output dtype."""

    name: ClassVar[str] = "normalize"
    params_type: ClassVar[type[OpParams]] = NormParams
    requires_p_one: ClassVar[bool] = True
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    def validate(self) -> None:
        """Three means in [-10, 10] and three stds in (0, 100]."""
        if len(self.mean) != 3 or not all(-10 <= float(v) <= 10 for v in self.mean):
            raise SpecError("mean", f"expected 3 values in [-10, 10], got {list(self.mean)}")
        if len(self.std) != 3 or not all(1e-6 <= float(v) <= 100 for v in self.std):
            raise SpecError("std", f"expected 3 values in (0, 100], got {list(self.std)}")

    def sample(self, keys: Keys, sizes: torch.Tensor) -> NormParams:
        """No randomness."""
        return NormParams(torch.ones(len(keys), dtype=torch.bool))

    def matrix(self, params: OpParams, mean_in: torch.Tensor) -> torch.Tensor:
        """diag(1 / std) with offset -mean / std."""
        std = torch.tensor(self.std, dtype=torch.float64)
        mean = torch.tensor(self.mean, dtype=torch.float64)
        m = torch.zeros(len(params), 3, 4, dtype=torch.float64)
        m[:, :, :3] = torch.diag(1 / std)
        m[:, :, 3] = -mean / std
        return m

    def apply(self, image: torch.Tensor, params: OpParams) -> torch.Tensor:
        """kornia.enhance.normalize."""
        mean = torch.tensor(self.mean, dtype=image.dtype, device=image.device)
        std = torch.tensor(self.std, dtype=image.dtype, device=image.device)
        return kornia.enhance.normalize(image[None], mean, std)[0]
