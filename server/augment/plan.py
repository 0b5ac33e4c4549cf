"""Spec + params -> a plan of stages that both backends run with the same semantics.

The planner asks each op for its stages (`Op.stages`) and lets each stage fuse with
the next (`Stage.fuse`); it knows no op by name. Today's fusion: consecutive colour
ops fold into one stage (one 3x4 matrix per sample). ColorJitter, the one colour op
whose values can leave [0, 1], gives one clamped stage per step (brightness,
contrast, saturation, hue), as torchvision clamps after each; clamped stages fuse
with nothing, so grayscale and normalize after it fold into a stage of their own.
"""

from __future__ import annotations

import torch

from augserve.server.augment.ops import Op, OpParams
from augserve.server.augment.ops.stage import Stage

__all__ = ["Stage", "build_plan"]


def build_plan(
    ops: tuple[Op, ...], params: tuple[OpParams, ...], sizes: torch.Tensor
) -> list[Stage]:
    """Group ops into stages for input sizes `sizes` (n, 2), fusing where stages allow."""
    stages: list[Stage] = []
    for op, p in zip(ops, params, strict=True):
        for stage in op.stages(p, sizes):
            fused = stages[-1].fuse(stage) if stages else None
            if fused is None:
                stages.append(stage)
            else:
                stages[-1] = fused
        sizes = op.out_sizes(p, sizes)
    return stages
