"""The CPU fast path against kornia, op by op and for whole pipelines.

Tolerances, in uint8 steps (1/255 of the [0, 1] range; normalized outputs are
multiplied back by std first). The reference is kornia's functional ops applied op by
op on float tensors (`adjust_*` clamping after each colour-jitter step).

- kornia backend (batched: one grid_sample for all box crops, one matrix per colour
  step) vs reference, every op: max <= 0.01 (float32 rounding).
- fast vs reference (and vs the kornia backend), every op but ColorJitter: max <= 1.
  The fast path keeps geometry in uint8 (rounding <= 0.5) and uses OpenCV's
  fixed-point weights (< 0.3).
- ColorJitter: mean <= 0.5, max <= 3.5. Its fast path stores each step whose clamp
  can act (factor > 1, or a hue turn) as uint8, one rounding per such step; steps
  whose clamp cannot act fold into the next matrix. Where no clamp acts: max <= 1.
- whole pipelines: mean <= 0.6, max <= 5.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from augserve.server.augment.ops import ColorJitter, Normalize
from augserve.server.augment.ops.color import JitterParams, NormParams
from augserve.server.augment.pipeline import IMAGENET_TRAIN, Pipeline
from augserve.server.augment.spec import PipelineSpec

from .cases import OP_CASES
from .test_determinism import FULL

STD = torch.tensor([0.229, 0.224, 0.225], dtype=torch.float64)


def steps(result: torch.Tensor | list[torch.Tensor], dtype: str, normalized: bool) -> torch.Tensor:
    """All outputs flattened, in uint8 steps (NCHW)."""
    parts = result if isinstance(result, list) else list(result)
    scale = 1.0 if dtype == "uint8" else 255.0
    flat = []
    for part in parts:
        x = part.double() * scale
        if normalized:
            x = x * STD.view(3, 1, 1)
        flat.append(x.flatten())
    return torch.cat(flat)


def compare(spec: PipelineSpec, images: list[np.ndarray], other: str) -> torch.Tensor:
    pipeline = Pipeline(spec)
    normalized = any(op.name == "normalize" for op in spec.ops)
    fast = pipeline(images, seed=4, backend="fast").images
    ref = pipeline(images, seed=4, backend=other).images
    return (steps(fast, spec.dtype, normalized) - steps(ref, spec.dtype, normalized)).abs()


# normalize needs a float output: the spec refuses uint8 with it
CASES = [(name, dtype) for name in sorted(OP_CASES) for dtype in ("float32", "uint8")
         if (name, dtype) != ("normalize", "uint8")]


@pytest.mark.parametrize(("name", "dtype"), CASES)
def test_op_matches_kornia(name, dtype, photos, mixed):
    spec = PipelineSpec((OP_CASES[name],), dtype=dtype)
    for images in (photos, mixed):
        for other in ("kornia", "reference"):
            diff = compare(spec, images, other)
            if name == "color_jitter":
                assert diff.mean() <= 0.5
                assert diff.max() <= 3.5
            else:
                assert diff.max() <= 1.0 + 1e-4


def test_colour_jitter_folds_into_one_matrix_when_no_clamp_can_act(photos):
    # factors <= 1 and no hue turn keep values in [0, 1]: the four steps and the
    # normalize are one matrix, rounded once
    op = ColorJitter(p=1.0, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1)
    spec = PipelineSpec((op, Normalize()), dtype="float32")
    n = len(photos)
    rng = np.random.default_rng(0)
    factors = {k: rng.uniform(0.6, 1.0, n).tolist() for k in ("brightness", "contrast",
                                                                "saturation")}
    params = (JitterParams.from_columns([True] * n, {**factors, "hue": [0.0] * n}),
              NormParams.from_columns([True] * n, {}))
    pipeline = Pipeline(spec)
    fast = steps(pipeline(photos, params=params, backend="fast").images, "float32", True)
    ref = steps(pipeline(photos, params=params, backend="reference").images, "float32", True)
    assert (fast - ref).abs().max() <= 1e-3  # no uint8 rounding at all: float32 only


@pytest.mark.parametrize("spec", [IMAGENET_TRAIN, FULL], ids=["imagenet", "full"])
def test_whole_pipeline_matches_kornia(spec, photos, mixed):
    for images in (photos, mixed):
        for other in ("kornia", "reference"):
            diff = compare(spec, images, other)
            assert diff.mean() <= 0.6
            assert diff.max() <= 5.0


@pytest.mark.parametrize("name", sorted(OP_CASES))
def test_kornia_backend_matches_reference(name, photos, mixed):
    spec = PipelineSpec((OP_CASES[name],), dtype="float32")
    for images in (photos, mixed):
        pipeline = Pipeline(spec)
        normalized = name == "normalize"
        batched = steps(pipeline(images, seed=6, backend="kornia").images, "float32", normalized)
        ref = steps(pipeline(images, seed=6, backend="reference").images, "float32", normalized)
        # the same sampling and clamps, batched or not: float32 rounding only
        assert (batched - ref).abs().max() <= 0.01
