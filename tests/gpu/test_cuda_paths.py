"""The CUDA paths: the Triton int8 GEMM compiled for the GPU, int8 dispatch, kornia on CUDA.

These need a CUDA device and are skipped without one; `.ci/gpu` runs them, together with
the augmentation equivalence and determinism tests (whose kornia backend computes on CUDA
when a device is present), on a GPU machine. On the CPU the same kernels are covered by
`tests/kernels/triton` (Triton's interpreter) and `tests/augment` (kornia on the CPU).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from augserve.kernels.backend import Backend, resolve
from augserve.kernels.quant.int8 import (
    Int8Weight,
    int8_linear,
    int8_matmul,
    int8_matmul_reference,
    quantize_per_token,
)
from augserve.server.augment.pipeline import IMAGENET_TRAIN, Pipeline
from augserve.server.augment.spec import parse_pipeline
from augserve.server.bench.augment import load_photos

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device (.ci/gpu runs these on one)"
)

CUDA = torch.device("cuda")
GEOMETRY_AND_COLOUR = parse_pipeline({
    "ops": [
        {"rotate": {"degrees": [-20, 20], "fill": [127]}, "p": 0.5},
        {"randomResizedCrop": {"size": [96, 96], "scale": [0.08, 1]}},
        {"horizontalFlip": {}, "p": 0.5},
        {"colorJitter": {"brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.1},
         "p": 0.8},
        {"gaussianBlur": {"kernelSize": 5, "sigma": [0.1, 2]}, "p": 0.5},
        {"normalize": {}},
    ],
    "dtype": "float32",
    "layout": "NCHW",
})


def _on_cuda(weight: Int8Weight) -> Int8Weight:
    return Int8Weight(weight.qweight.to(CUDA), weight.scale.to(CUDA))


@pytest.mark.parametrize(("m", "k", "n"), [(1, 512, 512), (37, 96, 50), (256, 2048, 2048)])
@pytest.mark.parametrize(("bias", "relu"), [(False, False), (True, True)])
def test_triton_int8_matmul_on_cuda_matches_reference(m, k, n, bias, relu):
    from augserve.kernels.triton.int8_matmul import int8_matmul_triton

    torch.manual_seed(0)
    weight = Int8Weight.from_float(torch.randn(n, k))
    xq, scale = quantize_per_token(torch.randn(m, k))
    b = torch.randn(n) if bias else None
    want = int8_matmul_reference(xq, scale, weight.qweight, weight.scale, b, relu)
    got = int8_matmul_triton(
        xq.to(CUDA), scale.to(CUDA), weight.qweight.to(CUDA), weight.scale.to(CUDA),
        None if b is None else b.to(CUDA), relu,
    )  # fmt: skip
    # exact int32 accumulation; the float epilogue may differ by rounding only
    torch.testing.assert_close(got.cpu(), want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))


@pytest.mark.parametrize("backend", [Backend.AUTO, Backend.TORCH])
def test_int8_linear_on_cuda_matches_reference(backend):
    torch.manual_seed(1)
    weight = Int8Weight.from_float(torch.randn(128, 256))
    x = torch.randn(3, 7, 256)
    want = int8_linear(x, weight, backend=Backend.REFERENCE)
    got = int8_linear(x.to(CUDA), _on_cuda(weight), backend=backend)
    assert got.device.type == "cuda"
    torch.testing.assert_close(got.cpu(), want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))


def test_auto_picks_triton_on_cuda_and_the_int_mm_path_agrees():
    assert resolve("auto", CUDA) is Backend.TRITON
    torch.manual_seed(2)
    weight = _on_cuda(Int8Weight.from_float(torch.randn(64, 96)))
    xq, scale = quantize_per_token(torch.randn(40, 96, device=CUDA))
    triton = int8_matmul(xq, scale, weight, backend=Backend.TRITON)
    int_mm = int8_matmul(xq, scale, weight, backend=Backend.TORCH)
    torch.testing.assert_close(triton, int_mm, rtol=1e-5, atol=1e-5 * float(int_mm.abs().max()))


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    return load_photos(256)


@pytest.mark.parametrize("spec", [IMAGENET_TRAIN, GEOMETRY_AND_COLOUR], ids=["imagenet", "full"])
def test_kornia_on_cuda_matches_the_cpu_paths(spec, photos):
    images = [photos[i % len(photos)] for i in range(16)]
    pipeline = Pipeline(spec, backend="kornia")
    on_cuda = pipeline(images, seed=3).images  # the kornia backend defaults to CUDA
    fast = pipeline(images, seed=3, backend="fast").images
    # the whole-pipeline tolerance of tests/augment/test_equivalence.py, in uint8 steps
    std = torch.tensor([0.229, 0.224, 0.225], dtype=torch.float64).view(1, 3, 1, 1)
    steps = ((on_cuda.double() - fast.double()) * 255.0 * std).abs()
    assert float(steps.mean()) <= 0.6 and float(steps.max()) <= 5.0


@pytest.mark.parametrize("spec", [IMAGENET_TRAIN, GEOMETRY_AND_COLOUR], ids=["imagenet", "full"])
def test_kornia_on_cuda_gives_the_same_bytes_whatever_the_batch(spec, photos):
    images = [photos[i % len(photos)] for i in range(64)]
    pipeline = Pipeline(spec, backend="kornia")
    whole = pipeline(images, seed=11, epoch=3).images
    for batch in (1, 7):
        parts = [pipeline(images[s : s + batch], seed=11, epoch=3,
                          sample_indices=np.arange(s, min(s + batch, 64))).images
                 for s in range(0, 64, batch)]
        assert torch.cat(parts).numpy().tobytes() == whole.numpy().tobytes()
