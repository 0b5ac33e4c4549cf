"""What every op shares: typed per-sample params, the op base class, spec checks.

An op is a frozen dataclass holding its spec (ranges, sizes, p). It never stores
anything about a call: `sample(keys, sizes)` draws a frozen `OpParams` of per-sample
tensors, and the backends apply those params. Each op class holds all of its code:

- `sample`: its params; `apply`: the per-image kornia reference;
- `fast_step`: its per-image step on the CPU fast path (numpy/OpenCV), or None;
- `kornia_batch`: its batched kornia path, or None;
- `stages`: what it adds to a plan (by default one `OpStage` that asks the three
  above; colour ops give `ColourStage`s, which fuse into one matrix).

An op with no fast path runs its `apply` image by image on the fast path too, and
one with no batched kornia path runs `apply` image by image on kornia.
`GeometricOp`s also give source -> destination maps, which move boxes, keypoints and
masks with the image.

Geometry uses continuous coordinates: pixel (i, j) covers [j, j+1) x [i, i+1).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Generic, Self, TypeVar

import numpy as np
import torch

from augserve.server.augment.ops.stage import FastStep, OpStage, Stage
from augserve.server.augment.rng import Keys
from augserve.server.errors import InvalidArgument


class SpecError(InvalidArgument):
    """A spec field is out of range; `field` names it, `detail` says what is wrong.

    An `InvalidArgument`, so a spec error raised anywhere while a request is handled
    reaches the client as INVALID_ARGUMENT with the field and the limit.
    """

    def __init__(self, field: str, detail: str) -> None:
        """Name the bad `field` and say what is wrong with it."""
        super().__init__(f"{field}: {detail}")
        self.field = field
        self.detail = detail

    def __reduce__(self) -> tuple[type[SpecError], tuple[str, str]]:
        # Rebuilt from both parts when it crosses a process (a Ray actor, a job task).
        return type(self), (self.field, self.detail)


@dataclasses.dataclass(frozen=True)
class OpParams:
    """Per-sample params of one op; every field is a (n,) tensor.

    Attributes:
        applied: bool (n,), whether the op acts on each sample (drawn against p).

    """

    applied: torch.Tensor

    def __len__(self) -> int:
        return int(self.applied.shape[0])

    def columns(self) -> dict[str, torch.Tensor]:
        """The float64 fields other than `applied`, by name."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name != "applied"}

    @classmethod
    def from_columns(cls, applied: Sequence[bool], columns: Mapping[str, Sequence[float]]) -> Self:
        """Rebuild params from `applied` flags and named per-sample values (replay).

        Raises:
            ValueError: a field is missing or has the wrong length.

        """
        n = len(applied)
        values: dict[str, torch.Tensor] = {"applied": torch.tensor(list(applied), dtype=torch.bool)}
        for f in dataclasses.fields(cls):
            if f.name == "applied":
                continue
            if f.name not in columns or len(columns[f.name]) != n:
                raise ValueError(f"params of {cls.__name__}: missing or short field {f.name!r}")
            values[f.name] = torch.tensor(list(columns[f.name]), dtype=torch.float64)
        return cls(**values)

    def take(self, index: torch.Tensor | Sequence[int]) -> Self:
        """The params of the samples at `index`, in that order."""
        index = torch.as_tensor(index, dtype=torch.int64)
        fields = dataclasses.fields(self)
        return type(self)(**{f.name: getattr(self, f.name)[index] for f in fields})

    @classmethod
    def cat(cls, parts: Sequence[Self]) -> Self:
        """Concatenate the params of consecutive sample groups."""
        return cls(**{f.name: torch.cat([getattr(p, f.name) for p in parts])
                      for f in dataclasses.fields(cls)})


P = TypeVar("P", bound=OpParams)


@dataclasses.dataclass(frozen=True)
class Op(Generic[P]):
    """Base of every op: a probability `p` and the sample / apply / plan contract."""

    name: ClassVar[str] = ""
    params_type: ClassVar[type[OpParams]] = OpParams
    #: Ops whose output size is fixed must run on every sample.
    requires_p_one: ClassVar[bool] = False

    p: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.p <= 1.0 or math.isnan(self.p):
            raise SpecError("p", f"must lie in [0, 1], got {self.p}")
        if self.requires_p_one and self.p != 1.0:
            raise SpecError("p", f"{self.name} always runs (it fixes the output size); p must be 1")
        self.validate()

    def validate(self) -> None:
        """Check the spec's fields; raise SpecError naming the bad one."""

    #: Bounds of replayed param fields: name -> (low, high); every field must be finite.
    param_bounds: ClassVar[dict[str, tuple[float, float]]] = {}

    def check_params(self, params: OpParams) -> None:
        """Check replayed params (finite, in `param_bounds`); raise SpecError naming the field."""
        for name, values in params.columns().items():
            low, high = self.param_bounds.get(name, (-1e6, 1e6))
            if not bool(torch.isfinite(values).all()) or bool(
                    ((values < low) | (values > high)).any()):
                raise SpecError(f"params of {self.name}",
                                f"{name} must be finite and within [{low}, {high}]")

    def draw_applied(self, keys: Keys) -> torch.Tensor:
        """Whether the op acts on each sample: draw 0 against p."""
        return keys.uniform(0) < self.p

    def sample(self, keys: Keys, sizes: torch.Tensor) -> P:
        """Draw per-sample params for input sizes `sizes` ((n, 2) int64: height, width)."""
        raise NotImplementedError

    def out_sizes(self, params: P, sizes: torch.Tensor) -> torch.Tensor:
        """Output (height, width) per sample; the input sizes unless the op resizes."""
        return sizes

    def apply(self, image: torch.Tensor, params: P) -> torch.Tensor:
        """Apply the op to one image (float CHW in [0, 1]) with kornia's functional ops.

        `params` hold that one sample (`params.take([i])` of a batch). This is the
        op-by-op reference, and the path of both backends where the op has no other.
        """
        raise NotImplementedError

    def fast_step(self, params: P, sizes: torch.Tensor) -> FastStep | None:
        """The batch's per-image step on the CPU fast path, or None: no fast path.

        Called once per batch with its params and input sizes, so per-sample values
        can be turned into Python lists here, outside the per-image loop.
        """
        return None

    def kornia_batch(self, x: torch.Tensor, params: P, sizes: torch.Tensor
                     ) -> torch.Tensor | None:
        """The op on a (n, 3, H, W) batch in [0, 1] units, or None: no batched path."""
        return None

    def stages(self, params: P, sizes: torch.Tensor) -> list[Stage]:
        """What the op adds to a plan, for input sizes `sizes`: one `OpStage` by default."""
        return [OpStage(self, params, sizes, self.out_sizes(params, sizes))]


@dataclasses.dataclass(frozen=True)
class GeometricOp(Op[P]):
    """An op that moves pixels: it moves geometry targets (boxes, keypoints, masks) too."""

    def forward(self, params: P, sizes: torch.Tensor) -> torch.Tensor:
        """Source -> destination maps (n, 3, 3) in continuous coordinates."""
        raise NotImplementedError

    def move_mask(self, mask: np.ndarray, params: P, forward: np.ndarray,
                  out_hw: tuple[int, int]) -> np.ndarray:
        """One sample's uint8 mask (`params` hold that sample), nearest interpolation, fill 0."""
        raise NotImplementedError


def check_range(
    field: str, values: Sequence[float], low: float, high: float
) -> tuple[float, float]:
    """A [min, max] pair inside [low, high] with min <= max, or SpecError naming `field`."""
    if len(values) != 2:
        raise SpecError(field, f"expected [min, max], got {list(values)}")
    a, b = float(values[0]), float(values[1])
    if not (low <= a <= b <= high) or math.isnan(a) or math.isnan(b):
        raise SpecError(field, f"expected {low} <= min <= max <= {high}, got [{a}, {b}]")
    return a, b


def check_size(field: str, values: Sequence[int], limit: int = 1 << 14) -> tuple[int, int]:
    """A [height, width] pair of positive ints, or SpecError naming `field`."""
    if len(values) != 2 or not all(0 < int(v) <= limit for v in values):
        raise SpecError(field, f"expected [height, width] in 1..{limit}, got {list(values)}")
    return int(values[0]), int(values[1])


def check_fill(field: str, values: Sequence[float]) -> tuple[float, float, float]:
    """Fill in uint8 units: none (0), one value or three; or SpecError naming `field`."""
    if len(values) not in (0, 1, 3) or not all(0 <= float(v) <= 255 for v in values):
        raise SpecError(field, f"expected 0, 1 or 3 values in [0, 255], got {list(values)}")
    if not values:
        return (0.0, 0.0, 0.0)
    r, g, b = [float(v) for v in values] * (3 // len(values))
    return r, g, b


def sample_area_ratio_boxes(
    keys: Keys, sizes: torch.Tensor, scale: tuple[float, float], ratio: tuple[float, float],
    strict: bool, attempts: int = 10,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Torchvision's box search, per sample: area fraction in `scale`, aspect w/h in `ratio`.

    Each of `attempts` tries draws an area and a log-uniform ratio, rounds w and h, and
    is kept if the box fits (`strict`: also w < W and h < H, as RandomErasing wants) and
    its rounded area and ratio still lie in their ranges, so the ranges hold exactly.
    Draws 1.. of `keys` are used; draw 0 is left to the op's p.

    Returns:
        (boxes, found): boxes (n, 4) float64 as x0, y0, w, h; found (n,) bool.

    """
    n = len(keys)
    height = sizes[:, 0].to(torch.float64)[:, None]
    width = sizes[:, 1].to(torch.float64)[:, None]
    area = height * width
    # all tries at once: try t uses draws 1 + 4t .. 4 + 4t
    u = keys.uniform_table(1 + 4 * attempts)[:, 1:].reshape(n, attempts, 4)
    target = (scale[0] + (scale[1] - scale[0]) * u[..., 0]) * area
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    r = torch.exp(log_lo + (log_hi - log_lo) * u[..., 1])
    w = torch.round(torch.sqrt(target * r))
    h = torch.round(torch.sqrt(target / r))
    fits = (w > 0) & (h > 0) & ((w < width) & (h < height) if strict else
                                (w <= width) & (h <= height))
    frac = w * h / area
    aspect = w / h.clamp(min=1)
    ok = fits & (frac >= scale[0]) & (frac <= scale[1])
    ok &= (aspect >= ratio[0]) & (aspect <= ratio[1])
    x0 = torch.floor(u[..., 2] * (width - w + 1).clamp(min=1))
    y0 = torch.floor(u[..., 3] * (height - h + 1).clamp(min=1))
    found = ok.any(1)
    first = torch.argmax(ok.to(torch.int8), dim=1)[:, None]  # the first try that fits
    boxes = torch.stack([x0.gather(1, first)[:, 0], y0.gather(1, first)[:, 0],
                         w.gather(1, first)[:, 0], h.gather(1, first)[:, 0]], 1)
    boxes[~found] = 0.0
    return boxes, found


def fill_tensor(fill: tuple[float, float, float], like: torch.Tensor) -> torch.Tensor:
    """The fill in [0, 1] units as a (3,) tensor on `like`'s device and dtype."""
    return torch.tensor(fill, dtype=like.dtype, device=like.device) / 255.0


def as_list(value: Any) -> list[Any]:
    """A plain list from a tuple / repeated field / tensor."""
    return list(value)
