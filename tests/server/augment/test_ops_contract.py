"""The contract every op keeps: smoke, p = 0, cardinality, per-sample keys."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from augserve.server.augment.ops import BoxOp, OpParams, SpecError
from augserve.server.augment.pipeline import Pipeline
from augserve.server.augment.rng import Keys
from augserve.server.augment.spec import PipelineSpec

from .cases import OP_CASES


def sizes_of(images: list[np.ndarray]) -> torch.Tensor:
    return torch.tensor([im.shape[:2] for im in images], dtype=torch.int64)


@pytest.mark.parametrize("name", sorted(OP_CASES))
class TestOpContract:
    def test_smoke_both_backends(self, name, mixed):
        op = OP_CASES[name]
        pipeline = Pipeline(PipelineSpec((op,), dtype="float32", layout="NHWC"))
        for backend in ("fast", "kornia"):
            result = pipeline(mixed, seed=1, return_params=True, backend=backend)
            outs = list(result.images) if isinstance(result.images, torch.Tensor) else result.images
            assert len(outs) == len(mixed)
            want = op.out_sizes(result.params[0], sizes_of(mixed))
            for out, (h, w) in zip(outs, want.tolist(), strict=True):
                assert tuple(out.shape) == (h, w, 3)
                assert torch.isfinite(out.float()).all()

    def test_cardinality_and_params_type(self, name, mixed):
        op = OP_CASES[name]
        params = op.sample(Keys.for_op(3, 0, np.arange(len(mixed)), 0), sizes_of(mixed))
        assert isinstance(params, op.params_type)
        assert isinstance(params, OpParams)
        assert len(params) == len(mixed)
        for value in dataclasses.asdict(params).values():
            assert value.shape == (len(mixed),)
        rebuilt = op.params_type.from_columns(params.applied.tolist(),
                                              {k: v.tolist() for k, v in params.columns().items()})
        for key, value in params.columns().items():
            assert torch.equal(getattr(rebuilt, key), value)

    def test_p_zero_is_identity(self, name, mixed):
        op = OP_CASES[name]
        if op.requires_p_one:
            with pytest.raises(SpecError, match="p"):
                dataclasses.replace(op, p=0.0)
            return
        off = dataclasses.replace(op, p=0.0)
        params = off.sample(Keys.for_op(5, 0, np.arange(len(mixed)), 0), sizes_of(mixed))
        assert not params.applied.any()
        spec = PipelineSpec((off,), dtype="uint8", layout="NHWC")
        outs = Pipeline(spec)(mixed, seed=5, backend="fast").images
        if isinstance(op, BoxOp):  # a fixed-size op still resizes the whole image
            from augserve.server.augment.ops import Resize

            plain = Pipeline(PipelineSpec((Resize(size=op.size),), "uint8", "NHWC"))(mixed).images
            assert torch.equal(outs, plain)
            return
        for out, image in zip(outs, mixed, strict=True):
            np.testing.assert_array_equal(out.numpy(), image)

    def test_keys_are_per_sample(self, name, mixed):
        op = OP_CASES[name]
        sizes = sizes_of(mixed)
        whole = op.sample(Keys.for_op(9, 2, np.arange(4), 0), sizes)
        alone = op.sample(Keys.for_op(9, 2, np.array([2]), 0), sizes[2:3])
        for key, value in dataclasses.asdict(whole).items():
            assert torch.equal(value[2:3], getattr(alone, key))
