"""The CUDA paths: the Triton int8 GEMM compiled for the GPU, int8 dispatch, kornia's device.

These need a CUDA device and are skipped without one; `.ci/gpu` runs them, together with
the augmentation equivalence and determinism tests (whose kornia backend computes on CUDA
when a device is present), on a GPU machine. On the CPU the same kernels are covered by
`tests/kernels/triton` (Triton's interpreter) and `tests/server/augment` (kornia on the CPU).
"""

from __future__ import annotations

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
from augserve.server.augment.kornia_backend import default_device

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device (.ci/gpu runs these on one)"
)

CUDA = torch.device("cuda")


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


def test_the_kornia_backend_computes_on_cuda():
    # tests/server/augment/test_equivalence.py and test_determinism.py, which .ci/gpu runs beside
    # this file, then hold kornia on CUDA to the CPU fast path and to byte-identical batches.
    assert default_device() == CUDA
