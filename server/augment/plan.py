"""Spec + params -> a plan of stages that both backends run with the same semantics.

Consecutive colour ops fold into one stage (one 3x4 matrix per sample); every other
op is a stage of its own. ColorJitter, the one colour op whose values can leave
[0, 1], becomes one clamped stage per step (brightness, contrast, saturation, hue),
as torchvision clamps after each; grayscale and normalize that follow it fold into
the next stage. Geometry stages carry
per-sample boxes or forward maps, computed here once for the batch.
"""

from __future__ import annotations

import dataclasses

import torch

from augserve.server.augment.ops import BoxOp, ColourOp, Op, OpParams, WarpOp
from augserve.server.augment.ops.color import JITTER_STEPS

_EYE4 = torch.eye(4, dtype=torch.float64)


@dataclasses.dataclass(frozen=True)
class Stage:
    """One step of the plan.

    Attributes:
        kind: "box", "warp", "flip", "colour", "blur" or "erase".
        ops: the op (or, for "colour", the run of ops) of this stage.
        params: their params, one per op.
        out_sizes: (n, 2) output (height, width) per sample.
        boxes: "box" only: (n, 4) int64 x0, y0, w, h.
        forward: "warp" only: (n, 3, 3) source -> destination maps.
        clamp: "colour" only: clamp the result to [0, 1] (a jitter step).
        steps: "colour" only: for a jitter step, which of its steps the stage runs.
    """

    kind: str
    ops: tuple[Op, ...]
    params: tuple[OpParams, ...]
    out_sizes: torch.Tensor
    boxes: torch.Tensor | None = None
    forward: torch.Tensor | None = None
    clamp: bool = False
    steps: tuple[str, ...] = ()

    def colour_matrices(self, mean_in: torch.Tensor) -> torch.Tensor:
        """The run's composed (n, 3, 4) matrices on [0, 1] values, given the entering mean RGB."""
        n = mean_in.shape[0]
        m = _EYE4.expand(n, 4, 4).clone()
        for op, params in zip(self.ops, self.params, strict=True):
            mean = (m[:, :3, :3] @ mean_in[:, :, None])[:, :, 0] + m[:, :3, 3]
            step = _EYE4.expand(n, 4, 4).clone()
            if self.steps:
                step[:, :3] = op.matrix(params, mean, self.steps)  # type: ignore[attr-defined]
            else:
                step[:, :3] = op.matrix(params, mean)  # type: ignore[attr-defined]
            m = step @ m
        return m[:, :3]

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
        rows = torch.arange(n).repeat(4)
        tiled = dataclasses.replace(self, params=tuple(p.take(rows) for p in self.params),
                                    out_sizes=self.out_sizes[rows])
        values = tiled.colour_matrices(means).reshape(4, n, 3, 4)
        base = values[0]
        slope = (values[1:, :, :, 3] - base[None, :, :, 3]).permute(1, 2, 0)
        return base, slope

    def needs_mean(self) -> bool:
        """Whether the colour run depends on the image's mean (contrast)."""
        if self.steps:
            return "contrast" in self.steps
        return any(getattr(op, "contrast", 0) for op in self.ops)


def build_plan(
    ops: tuple[Op, ...], params: tuple[OpParams, ...], sizes: torch.Tensor
) -> list[Stage]:
    """Group ops into stages and compute their geometry for input sizes `sizes` (n, 2)."""
    stages: list[Stage] = []
    for op, p in zip(ops, params, strict=True):
        out = op.out_sizes(p, sizes)
        if isinstance(op, ColourOp):
            if op.name == "color_jitter":
                for step in JITTER_STEPS:
                    if getattr(op, step):
                        stages.append(Stage("colour", (op,), (p,), out, clamp=True, steps=(step,)))
            elif stages and stages[-1].kind == "colour" and not stages[-1].clamp:
                last = stages.pop()
                stages.append(dataclasses.replace(last, ops=(*last.ops, op),
                                                  params=(*last.params, p)))
            else:
                stages.append(Stage("colour", (op,), (p,), out))
        elif isinstance(op, BoxOp):
            stages.append(Stage("box", (op,), (p,), out, boxes=op.boxes(p)))  # type: ignore[arg-type]
        elif isinstance(op, WarpOp):
            stages.append(Stage("warp", (op,), (p,), out, forward=op.forward(p, sizes)))
        else:
            stages.append(Stage(op.kind, (op,), (p,), out))
        sizes = out
    return stages


def geometry_forward(op: Op, params: OpParams, sizes: torch.Tensor) -> torch.Tensor | None:
    """The (n, 3, 3) source -> destination maps of a geometric op, None for other ops."""
    if op.kind in ("box", "warp", "flip"):
        return op.forward(params, sizes)  # type: ignore[attr-defined]
    return None
