"""RandomGamma's semantics: known values, identity at gamma 1, clamping, spec and replay checks.

Its fast path, kornia path and contract are also covered with every other op through
`cases.OP_CASES` (test_equivalence, test_ops_contract, test_properties, test_spec).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from augserve.server.augment.ops import Normalize, RandomGamma, SpecError
from augserve.server.augment.ops.gamma import GammaParams
from augserve.server.augment.pipeline import Pipeline
from augserve.server.augment.spec import PipelineSpec, parse_pipeline
from augserve.server.errors import InvalidArgument

LEVELS = np.arange(256, dtype=np.uint8)


def ramp() -> np.ndarray:
    """Every uint8 level once per channel: a (16, 16, 3) image."""
    return np.repeat(LEVELS.reshape(16, 16, 1), 3, axis=2)


def with_gamma(gammas: list[float]) -> GammaParams:
    return GammaParams.from_columns([True] * len(gammas), {"gamma": gammas})


@pytest.mark.parametrize("backend", ["fast", "kornia", "reference"])
def test_known_values_uint8(backend):
    pipeline = Pipeline(PipelineSpec((RandomGamma(),), dtype="uint8", layout="NHWC"))
    out = pipeline([ramp(), ramp()], params=(with_gamma([2.0, 0.5]),), backend=backend).images
    want_2 = np.round(255 * (LEVELS / 255.0) ** 2.0)
    want_half = np.round(255 * np.sqrt(LEVELS / 255.0))
    # the fast path's table is exact; kornia computes in float32 (one level at a .5 tie)
    tolerance = 0 if backend == "fast" else 1
    assert np.abs(out[0, :, :, 0].numpy().ravel() - want_2).max() <= tolerance
    assert np.abs(out[1, :, :, 1].numpy().ravel() - want_half).max() <= tolerance
    assert out[0, 4, 0, 0] == 16  # level 64: 255 * (64 / 255) ** 2 = 16.06
    assert out[1, 4, 0, 0] == 128  # level 64: 255 * sqrt(64 / 255) = 127.75


@pytest.mark.parametrize("backend", ["fast", "kornia", "reference"])
@pytest.mark.parametrize("dtype", ["uint8", "float32"])
def test_gamma_one_is_identity(backend, dtype, photos):
    spec = PipelineSpec((RandomGamma(gamma=(1.0, 1.0)),), dtype=dtype, layout="NHWC")
    out = Pipeline(spec)(photos[:3], seed=2, backend=backend).images
    scale = 1 if dtype == "uint8" else 255
    assert torch.allclose(out.double() * scale, torch.from_numpy(np.stack(photos[:3])).double(),
                          atol=1e-3)


def test_sampled_gamma_stays_in_range_and_moves_means(photos):
    op = RandomGamma(p=1.0, gamma=(0.5, 0.6))  # every sample brightens
    result = Pipeline(PipelineSpec((op,), dtype="uint8"))(photos, seed=3, return_params=True)
    gamma = result.params[0].gamma
    assert bool(((gamma >= 0.5) & (gamma <= 0.6)).all())
    before = torch.from_numpy(np.stack(photos)).double().mean()
    assert result.images.double().mean() > before + 10


def test_values_outside_unit_range_are_clamped_first(photos):
    # after Normalize values leave [0, 1]; the op clamps them before the power, on every backend
    spec = PipelineSpec((Normalize(), RandomGamma(gamma=(0.7, 1.5))), dtype="float32")
    pipeline = Pipeline(spec)
    fast = pipeline(photos[:3], seed=9, backend="fast").images
    ref = pipeline(photos[:3], seed=9, backend="reference").images
    assert torch.isfinite(fast).all() and fast.min() >= 0 and fast.max() <= 1
    assert (fast - ref).abs().max() <= 1e-4


def test_named_spec_and_precise_errors():
    spec = parse_pipeline({"ops": [{"named": {"name": "random_gamma",
                                              "params": {"gamma": [0.5, 2]}}, "p": 0.3}]})
    assert spec.ops == (RandomGamma(p=0.3, gamma=(0.5, 2.0)),)
    bad = {
        "pipeline.ops[0] (random_gamma).gamma: expected 0.01 <= min <= max <= 10.0":
            {"gamma": [0.001, 2]},
        "(random_gamma).gamma: expected 0.01 <= min <= max <= 10.0, got [3.0, 2.0]":
            {"gamma": [3, 2]},
        "(random_gamma).gamma: expected a list of numbers": {"gamma": 2},
        "(random_gamma).gama: random_gamma has no such field (known: gamma)": {"gama": [1, 2]},
    }
    for needle, params in bad.items():
        with pytest.raises(InvalidArgument) as info:
            parse_pipeline({"ops": [{"named": {"name": "random_gamma", "params": params}}]})
        assert needle in str(info.value)
    with pytest.raises(InvalidArgument, match=r"ops\[0\] \(mosaic\)\.name: unknown op 'mosaic'"):
        parse_pipeline({"ops": [{"named": {"name": "mosaic"}}]})


@pytest.mark.parametrize("gamma", [0.0, 11.0, float("nan")])
def test_replayed_gamma_out_of_bounds_names_field_and_limit(gamma, photos):
    pipeline = Pipeline(PipelineSpec((RandomGamma(),), dtype="uint8"))
    with pytest.raises(SpecError, match=r"random_gamma: gamma must be finite and within "
                                         r"\[0\.01, 10\.0\]"):
        pipeline(photos[:1], params=(with_gamma([gamma]),))
