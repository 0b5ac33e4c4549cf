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
from typing import ClassVar, Protocol, TypeVar

import kornia
import torch

from augserve.server.augment.ops.base import Op, OpParams, SpecError
from augserve.server.augment.ops.stage import ColourPlan, Stage
from augserve.server.augment.rng import Keys

P = TypeVar("P", bound=OpParams)

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


class ColourTerm(Protocol):
    """One affine colour map of a `ColourStage`: an op, or one step of ColorJitter."""

    def matrix(self, params: OpParams, mean_in: torch.Tensor) -> torch.Tensor:
        """Per-sample (n, 3, 4) matrices; `mean_in` (n, 3) is the mean RGB entering the term."""
        ...

    def uses_mean(self) -> bool:
        """Whether the matrix depends on `mean_in`."""
        ...

    def clamp_acts(self, params: OpParams) -> torch.Tensor:
        """(n,) bool: where a clamp to [0, 1] after the term can change values."""
        ...

    def apply(self, image: torch.Tensor, params: OpParams) -> torch.Tensor:
        """The term's per-image kornia reference (`params` hold one sample)."""
        ...


@dataclasses.dataclass(frozen=True)
class ColourOp(Op[P]):
    """An op affine in RGB: `matrix(params, mean_in)` gives (n, 3, 4) on [0, 1] values.

    Its stage is a `ColourStage`, which fuses with the colour stages next to it into
    one matrix per sample.
    """

    def matrix(self, params: P, mean_in: torch.Tensor) -> torch.Tensor:
        """Per-sample 3x4 matrices; `mean_in` (n, 3) is the mean RGB entering this op."""
        raise NotImplementedError

    def uses_mean(self) -> bool:
        """Whether the matrix depends on the entering mean (only contrast does)."""
        return False

    def clamp_acts(self, params: P) -> torch.Tensor:
        """Where a clamp after the op can change values: wherever it is applied."""
        return params.applied

    def stages(self, params: P, sizes: torch.Tensor) -> list[Stage]:
        """One unclamped colour stage, which fuses with its neighbours."""
        return [ColourStage((self,), (params,), self.out_sizes(params, sizes))]


@dataclasses.dataclass(frozen=True)
class ColourStage(Stage):
    """A run of colour terms as one composed 3x4 matrix per sample, clamped if asked.

    Attributes:
        terms: the terms (ops, or one jitter step), applied in order.
        params: their params, one per term.
        out_sizes: (n, 2) output (height, width) per sample.
        clamp: clamp the result to [0, 1] (a jitter step).
    """

    terms: tuple[ColourTerm, ...]
    params: tuple[OpParams, ...]
    out_sizes: torch.Tensor
    clamp: bool = False

    def fuse(self, later: Stage) -> Stage | None:
        """Unclamped colour stages in a row compose into one."""
        if not isinstance(later, ColourStage) or self.clamp or later.clamp:
            return None
        return ColourStage((*self.terms, *later.terms), (*self.params, *later.params),
                           later.out_sizes)

    def colour_matrices(self, mean_in: torch.Tensor) -> torch.Tensor:
        """The run's composed (n, 3, 4) matrices on [0, 1] values, given the entering mean RGB."""
        n = mean_in.shape[0]
        m = _eye(n)
        for term, params in zip(self.terms, self.params, strict=True):
            mean = (m[:, :3, :3] @ mean_in[:, :, None])[:, :, 0] + m[:, :3, 3]
            step = _eye(n)
            step[:, :3] = term.matrix(params, mean)
            m = step @ m
        return m[:, :3]

    def needs_mean(self) -> bool:
        """Whether the run depends on the image's mean (contrast)."""
        return any(term.uses_mean() for term in self.terms)

    def take(self, rows: list[int]) -> ColourStage:
        """The stage for the samples at `rows`, in that order."""
        return dataclasses.replace(self, params=tuple(p.take(rows) for p in self.params),
                                   out_sizes=self.out_sizes[rows])

    def colour_affine_in_mean(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The run's matrices as `base` (n, 3, 4) plus `slope` (n, 3, 3) times the mean.

        Only the offsets depend on the entering mean RGB, and affinely (contrast blends
        with a grey that is linear in it), so `matrix(mean)[:, :, 3] = base[:, :, 3] +
        slope @ mean`. A loop over images then needs no per-image composition.
        """
        n = self.out_sizes.shape[0]
        if not self.needs_mean():
            base = self.colour_matrices(torch.zeros(n, 3, dtype=torch.float64))
            return base, torch.zeros(n, 3, 3, dtype=torch.float64)
        # one evaluation at mean 0 and at the three unit means, stacked as 4n samples
        units = torch.cat([torch.zeros(1, 3), torch.eye(3)]).to(torch.float64)
        means = units.repeat_interleave(n, 0)
        values = self.take(torch.arange(n).repeat(4).tolist()).colour_matrices(means)
        values = values.reshape(4, n, 3, 4)
        base = values[0]
        slope = (values[1:, :, :, 3] - base[None, :, :, 3]).permute(1, 2, 0)
        return base, slope

    def colour_plan(self) -> ColourPlan:
        """The matrices for the fast path, with where the clamp (if any) can act."""
        base, slope = self.colour_affine_in_mean()
        clamps = None
        if self.clamp:
            clamps = torch.zeros(base.shape[0], dtype=torch.bool)
            for term, params in zip(self.terms, self.params, strict=True):
                clamps |= term.clamp_acts(params)
        return ColourPlan(base, slope, self.needs_mean(), self.clamp, clamps)

    def _apply_matrices(self, x: torch.Tensor, rows: list[int]) -> torch.Tensor:
        mean = x.mean(dim=(2, 3)).to(torch.float64).cpu()
        m = self.take(rows).colour_matrices(mean).to(x.dtype).to(x.device)
        out = torch.einsum("nck,nkhw->nchw", m[:, :, :3], x) + m[:, :, 3, None, None]
        return out.clamp(0, 1) if self.clamp else out

    def kornia_batch(self, x: torch.Tensor) -> torch.Tensor:
        """One matrix per sample, applied to the batch (then the clamp)."""
        return self._apply_matrices(x, list(range(x.shape[0])))

    def kornia_one(self, x: torch.Tensor, i: int, reference: bool) -> torch.Tensor:
        """Sample i's matrix; `reference`: each term's kornia `apply` instead."""
        if not reference:
            return self._apply_matrices(x[None], [i])[0]
        for term, params in zip(self.terms, self.params, strict=True):
            x = term.apply(x, params.take([i]))
        return x


@dataclasses.dataclass(frozen=True)
class JitterParams(OpParams):
    """Brightness, contrast and saturation factors; hue in turns."""

    brightness: torch.Tensor
    contrast: torch.Tensor
    saturation: torch.Tensor
    hue: torch.Tensor


@dataclasses.dataclass(frozen=True)
class ColorJitter(ColourOp[JitterParams]):
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

    def matrix(self, params: JitterParams, mean_in: torch.Tensor,
               steps: tuple[str, ...] = JITTER_STEPS) -> torch.Tensor:
        """The chosen steps (all by default) composed, without the clamps between them.

        Contrast blends with the mean grey of the image entering it, which `mean_in`
        (the mean RGB entering the first chosen step) gives through the steps before.
        """
        p = params
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

    def uses_mean(self) -> bool:
        """Contrast blends with the mean grey."""
        return self.contrast != 0

    def stages(self, params: JitterParams, sizes: torch.Tensor) -> list[Stage]:
        """One clamped colour stage per step with a non-zero range, in the fixed order.

        Clamped stages fuse with nothing: grayscale or normalize after the jitter
        start a stage of their own.
        """
        out = self.out_sizes(params, sizes)
        return [ColourStage((JitterStep(self, step),), (params,), out, clamp=True)
                for step in JITTER_STEPS if getattr(self, step)]

    def apply(self, image: torch.Tensor, params: JitterParams) -> torch.Tensor:
        """Kornia's functional ops, clamping after each step."""
        i = 0  # params hold this one sample
        if not bool(params.applied[i]):
            return image
        p = params
        x = image[None]
        x = kornia.enhance.adjust_contrast(x, float(p.brightness[i]))  # x * b, clamped
        x = kornia.enhance.adjust_contrast_with_mean_subtraction(x, float(p.contrast[i]))
        x = kornia.enhance.adjust_saturation_with_gray_subtraction(x, float(p.saturation[i]))
        rot = hue_matrix(p.hue[i : i + 1])[0].to(x.dtype).to(x.device)
        return torch.einsum("ck,khw->chw", rot, x[0]).clamp(0, 1)


@dataclasses.dataclass(frozen=True)
class JitterStep:
    """One step of a ColorJitter as a colour term (its stage clamps after it)."""

    jitter: ColorJitter
    step: str

    def matrix(self, params: JitterParams, mean_in: torch.Tensor) -> torch.Tensor:
        """The step's matrix; `mean_in` is the mean RGB entering the step."""
        return self.jitter.matrix(params, mean_in, (self.step,))

    def uses_mean(self) -> bool:
        """Only contrast blends with the mean grey."""
        return self.step == "contrast"

    def clamp_acts(self, params: JitterParams) -> torch.Tensor:
        """A factor above 1 (or a hue turn) can leave [0, 1]; factors up to 1 cannot.

        Brightness, contrast or saturation factors of at most 1 blend values in [0, 1]
        towards black or grey and stay inside, so the clamp after them is the identity.
        """
        factor = getattr(params, self.step)
        return params.applied & ((factor != 0) if self.step == "hue" else (factor > 1))

    def apply(self, image: torch.Tensor, params: JitterParams) -> torch.Tensor:
        """The reference runs the whole jitter (kornia's `adjust_*`) at its first step."""
        first = next(step for step in JITTER_STEPS if getattr(self.jitter, step))
        return self.jitter.apply(image, params) if self.step == first else image


@dataclasses.dataclass(frozen=True)
class GreyParams(OpParams):
    """Only `applied`."""


@dataclasses.dataclass(frozen=True)
class Grayscale(ColourOp[GreyParams]):
    """Replace each channel by the ITU-R 601 grey, with probability p."""

    name: ClassVar[str] = "grayscale"
    params_type: ClassVar[type[OpParams]] = GreyParams

    def sample(self, keys: Keys, sizes: torch.Tensor) -> GreyParams:
        """Only draw 0, against p."""
        return GreyParams(self.draw_applied(keys))

    def matrix(self, params: GreyParams, mean_in: torch.Tensor) -> torch.Tensor:
        """Three rows of grey weights where applied, identity elsewhere."""
        m = _eye(len(params))[:, :3]
        m[params.applied, :, :3] = GREY.expand(3, 3)
        return m

    def apply(self, image: torch.Tensor, params: GreyParams) -> torch.Tensor:
        """Kornia's rgb_to_grayscale, repeated to three channels."""
        i = 0  # params hold this one sample
        if not bool(params.applied[i]):
            return image
        return kornia.color.rgb_to_grayscale(image[None])[0].expand(3, -1, -1)


@dataclasses.dataclass(frozen=True)
class NormParams(OpParams):
    """Only `applied` (always true)."""


@dataclasses.dataclass(frozen=True)
class Normalize(ColourOp[NormParams]):
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

    def matrix(self, params: NormParams, mean_in: torch.Tensor) -> torch.Tensor:
        """diag(1 / std) with offset -mean / std."""
        std = torch.tensor(self.std, dtype=torch.float64)
        mean = torch.tensor(self.mean, dtype=torch.float64)
        m = torch.zeros(len(params), 3, 4, dtype=torch.float64)
        m[:, :, :3] = torch.diag(1 / std)
        m[:, :, 3] = -mean / std
        return m

    def apply(self, image: torch.Tensor, params: NormParams) -> torch.Tensor:
        """kornia.enhance.normalize."""
        mean = torch.tensor(self.mean, dtype=image.dtype, device=image.device)
        std = torch.tensor(self.std, dtype=image.dtype, device=image.device)
        return kornia.enhance.normalize(image[None], mean, std)[0]
