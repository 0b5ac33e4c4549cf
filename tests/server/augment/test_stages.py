"""The planner asks ops for stages: colour runs fuse, and an op without fast or batched
kornia code falls back to its per-image reference on both backends."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np
import pytest
import torch

from augserve.server.augment.ops import (
    ColorJitter,
    Grayscale,
    HorizontalFlip,
    Normalize,
    Op,
    OpParams,
    RandomGamma,
)
from augserve.server.augment.ops.color import ColourStage
from augserve.server.augment.pipeline import Pipeline
from augserve.server.augment.plan import build_plan
from augserve.server.augment.rng import Keys
from augserve.server.augment.spec import PipelineSpec


@dataclasses.dataclass(frozen=True)
class InvertParams(OpParams):
    """Only `applied`."""


@dataclasses.dataclass(frozen=True)
class Invert(Op[InvertParams]):
    """1 - x, with only a per-image reference: no fast_step, no kornia_batch."""

    name: ClassVar[str] = "invert"
    params_type: ClassVar[type[OpParams]] = InvertParams

    def sample(self, keys: Keys, sizes: torch.Tensor) -> InvertParams:
        return InvertParams(self.draw_applied(keys))

    def apply(self, image: torch.Tensor, params: InvertParams) -> torch.Tensor:
        return 1 - image if bool(params.applied[0]) else image


def plan_of(*ops: Op) -> list:
    n = 2
    sizes = torch.tensor([[32, 32]] * n)
    keys = Keys.for_op(1, 0, np.arange(n), 0)
    params = tuple(op.sample(keys, sizes) for op in ops)
    return build_plan(ops, params, sizes)


def test_colour_ops_fuse_and_clamped_jitter_steps_do_not():
    assert len(plan_of(Grayscale(), Normalize())) == 1
    stages = plan_of(ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1),
                     Grayscale(), Normalize())
    assert [s.clamp for s in stages] == [True] * 4 + [False]
    assert all(isinstance(s, ColourStage) for s in stages)
    # an op that is not a colour matrix ends the run
    assert len(plan_of(Grayscale(), RandomGamma(), Normalize())) == 3
    assert len(plan_of(Grayscale(), HorizontalFlip(), Normalize())) == 3


@pytest.mark.parametrize("backend", ["fast", "kornia", "reference"])
def test_op_without_fast_or_batched_path_falls_back_to_its_reference(backend, photos, mixed):
    spec = PipelineSpec((Grayscale(p=0.5), Invert(p=0.5), HorizontalFlip(p=0.5)), dtype="uint8",
                        layout="NHWC")
    alone = PipelineSpec((Invert(p=0.5),), dtype="uint8", layout="NHWC")
    for images in (photos, mixed):
        result = Pipeline(alone)(images, seed=4, return_params=True, backend=backend)
        applied = result.params[0].applied.tolist()
        assert any(applied) and not all(applied)
        for out, image, on in zip(result.images, images, applied, strict=True):
            np.testing.assert_array_equal(out.numpy(), 255 - image if on else image)
        fast = Pipeline(spec)(images, seed=4, backend=backend).images
        ref = Pipeline(spec)(images, seed=4, backend="reference").images
        for a, b in zip(fast, ref, strict=True):
            assert (a.int() - b.int()).abs().max() <= 1
