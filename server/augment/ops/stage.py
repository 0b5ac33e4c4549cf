"""Plan stages: what an op contributes to a plan, and how each backend runs it.

`Op.stages(params, sizes)` turns a batch's params into stages; the planner lets each
stage `fuse` with the next (a run of colour ops becomes one matrix per sample). The
backends are drivers that ask the stage, never its type:

- CPU fast path: `colour_plan()` gives per-sample matrices that the driver folds until
  a clamp, another op or the output; else `fast_step()` gives a per-image step on
  numpy images; a stage with neither runs its kornia reference one image at a time.
- kornia: `kornia_batch(x)` runs a batch of same-size images, or returns None where
  the stage has no batched path; `kornia_one(x, i, reference)` runs one image.

`OpStage`, the stage of one op, hands these questions to its op (`Op.fast_step`,
`Op.kornia_batch`, `Op.apply`), so an op's batched code lives in its own class.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import numpy as np
import torch

if TYPE_CHECKING:
    from augserve.server.augment.ops.base import Op, OpParams

FastStep = Callable[[int, np.ndarray, float, np.ndarray], tuple[np.ndarray, float]]
"""One image through a stage on the CPU fast path.

Called as `step(i, image, scale, buf)`: sample index, HWC image (uint8 or float32),
its scale (255 for uint8, 1 for float32: stored = value * scale), and a scratch
buffer of the stage's output shape and the image's dtype, reused from image to image.
Returns the output image (`image` itself where the op is not applied, else usually
`buf`) and its scale.
"""

_EYE4 = torch.eye(4, dtype=torch.float64)


class ColourPlan:
    """A colour stage's per-sample matrices (on [0, 1] values), precomputed for a batch.

    Attributes:
        base: per sample, the 4x4 homogeneous matrix at entering mean RGB 0.
        slope: per sample, (3, 3): how the offsets move with the entering mean RGB.
        needs_mean: whether the matrices depend on the entering mean (contrast).
        identity: per sample, whether the matrix is the identity (nothing to apply).
        clamp: whether the stage ends with a clamp to [0, 1].
        clamps: per sample, whether that clamp can change values (else it is folded).
    """

    def __init__(self, base: torch.Tensor, slope: torch.Tensor, needs_mean: bool,
                 clamp: bool = False, clamps: torch.Tensor | None = None) -> None:
        """Wrap (n, 3, 4) `base` and (n, 3, 3) `slope` matrices and the stage's clamp."""
        n = base.shape[0]
        square = _EYE4.expand(n, 4, 4).clone()
        square[:, :3] = base
        self.base = list(square.numpy())
        self.slope = list(slope.numpy())
        self.needs_mean = needs_mean
        identity = (base == torch.eye(3, 4, dtype=torch.float64)).all(2).all(1)
        self.identity: list[bool] = (identity & (slope == 0).all(2).all(1)).tolist()
        self.clamp = clamp
        if clamps is None:
            clamps = torch.zeros(n, dtype=torch.bool)
        self.clamps: list[bool] = clamps.tolist()

    @classmethod
    def identity_plan(cls, n: int) -> ColourPlan:
        """The identity for n samples (the fast path writes its output through one)."""
        return cls(torch.eye(3, 4, dtype=torch.float64).expand(n, 3, 4).clone(),
                   torch.zeros(n, 3, 3, dtype=torch.float64), needs_mean=False)

    def matrix(self, i: int, mean_in: np.ndarray | None) -> np.ndarray:
        """Sample i's 4x4 homogeneous matrix on [0, 1] values, given the entering mean RGB."""
        if not self.needs_mean or mean_in is None:
            return self.base[i]
        m = self.base[i].copy()
        m[:3, 3] += self.slope[i] @ mean_in
        return m


class Stage:
    """One step of a plan. Subclasses answer the backends' questions (see the module doc).

    Attributes:
        out_sizes: (n, 2) output (height, width) per sample.
    """

    out_sizes: torch.Tensor

    def fuse(self, later: Stage) -> Stage | None:
        """This stage and `later` as one stage, or None when they do not fuse."""
        return None

    def colour_plan(self) -> ColourPlan | None:
        """The stage as per-sample colour matrices for the fast path, or None."""
        return None

    def fast_step(self) -> FastStep | None:
        """The stage's per-image step on the fast path, or None (it has none)."""
        return None

    def kornia_batch(self, x: torch.Tensor) -> torch.Tensor | None:
        """Run a (n, 3, H, W) batch in [0, 1] units, or None where there is no batched path."""
        return None

    def kornia_one(self, x: torch.Tensor, i: int, reference: bool) -> torch.Tensor:
        """Run sample i's (3, H, W) image; `reference`: the op-by-op kornia reference."""
        raise NotImplementedError


OpT = TypeVar("OpT", bound="Op[Any]")
P = TypeVar("P", bound="OpParams")


@dataclasses.dataclass(frozen=True)
class OpStage(Stage, Generic[OpT, P]):
    """The stage of one op: it asks the op for its fast path and kornia paths.

    Attributes:
        op: the op.
        params: its params for the batch.
        in_sizes: (n, 2) input (height, width) per sample.
        out_sizes: (n, 2) output (height, width) per sample.
    """

    op: OpT
    params: P
    in_sizes: torch.Tensor
    out_sizes: torch.Tensor

    def fast_step(self) -> FastStep | None:
        """The op's `fast_step` for these params."""
        return self.op.fast_step(self.params, self.in_sizes)

    def kornia_batch(self, x: torch.Tensor) -> torch.Tensor | None:
        """The op's `kornia_batch` for these params."""
        return self.op.kornia_batch(x, self.params, self.in_sizes)

    def kornia_one(self, x: torch.Tensor, i: int, reference: bool) -> torch.Tensor:
        """The op's per-image kornia `apply`, with sample i's params."""
        return self.op.apply(x, self.params.take([i]))


def on_applied(x: torch.Tensor, applied: torch.Tensor,
               run: Callable[[torch.Tensor, Sequence[int]], torch.Tensor]) -> torch.Tensor:
    """`run(x[rows], rows)` on the rows where `applied`; the other rows pass through."""
    rows = applied.nonzero()[:, 0].tolist()
    if not rows:
        return x
    index = torch.tensor(rows, device=x.device)
    out = x.clone()
    out[index] = run(x[index], rows)
    return out


def fills_by_scale(fill: tuple[float, float, float]) -> dict[float, tuple[float, ...]]:
    """A uint8-unit fill for uint8 images (scale 255) and float32 ones (scale 1)."""
    return {255.0: tuple(float(v) for v in fill), 1.0: tuple(float(v) / 255.0 for v in fill)}
