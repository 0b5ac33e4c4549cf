"""The C++ `augserve_int8` ops against the plain-torch references, and the fallback without them."""

from __future__ import annotations

import pytest
import torch

from augserve.kernels.quant import int8, native
from augserve.kernels.quant.int8 import (
    ACTIVATION_LEVELS,
    ENGINE,
    INT8_REL_ERROR_BOUND,
    Int8Weight,
    gemm_engine,
    int8_linear,
    int8_matmul_reference,
    quantize_per_token,
    quantize_per_token_u8,
)

OPS = native.load()
needs_ops = pytest.mark.skipif(OPS is None, reason="augserve_int8 could not be built here")

SHAPES = [(1, 7, 3), (5, 33, 17), (32, 512, 256), (67, 100, 130)]
# K past the 2048 K-block of the AVX2 blocking, M over both threads and not a multiple of 6.
GEMM_SHAPES = [*SHAPES, (203, 2100, 40)]


@needs_ops
@pytest.mark.parametrize("m,k,n", SHAPES)
def test_quantization_is_bit_exact_with_the_reference(m, k, n):
    torch.manual_seed(m + k)
    x = torch.randn(m, k) * torch.rand(m, 1) * 10
    x[0, : min(k, 3)] = 0.0
    q, scale = OPS.quantize_per_token_u8(x, ACTIVATION_LEVELS)
    q_ref, scale_ref = quantize_per_token_u8(x)
    assert torch.equal(q, q_ref) and torch.equal(scale, scale_ref)
    assert int(q.min()) >= 1 and int(q.max()) <= 2 * ACTIVATION_LEVELS + 1


@needs_ops
@pytest.mark.parametrize("m,k,n", GEMM_SHAPES)
def test_fbgemm_gemm_is_exact(m, k, n):
    torch.manual_seed(m * k)
    weight = Int8Weight.from_float(torch.randn(n, k))
    q = torch.randint(1, 128, (m, k), dtype=torch.uint8)  # 7 bits: exact on AVX2 too
    acc = OPS.fbgemm_gemm(q, weight.fbgemm_packed())
    want = q.double() @ weight.qweight.double().t()
    assert acc.dtype == torch.int32 and torch.equal(acc.double(), want)


@needs_ops
@pytest.mark.parametrize("engine", ["fbgemm", "onednn"])
@pytest.mark.parametrize("m,k,n", SHAPES)
@pytest.mark.parametrize("bias,relu", [(True, False), (False, True), (True, True)])
def test_fused_linear_matches_reference(engine, m, k, n, bias, relu):
    torch.manual_seed(m + 7 * k + n)
    weight = Int8Weight.from_float(torch.randn(n, k))
    x, b = torch.randn(m, k), (torch.randn(n) if bias else None)
    if engine == "fbgemm":
        ours = OPS.fbgemm_linear(x, weight.fbgemm_packed(), weight.scale, b, relu,
                                 ACTIVATION_LEVELS)
    else:
        ours = OPS.onednn_linear(x, weight.onednn_packed(), weight.scale, weight.onednn_zeros(),
                                 b, relu, ACTIVATION_LEVELS)
    xq, scale = quantize_per_token(x)
    ref = int8_matmul_reference(xq, scale, weight.qweight, weight.scale, b, relu)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


@needs_ops
def test_int8_linear_runs_the_fused_op_and_keeps_the_error_bound():
    torch.manual_seed(3)
    w, x, b = torch.randn(96, 256) / 16, torch.randn(40, 256), torch.randn(96) * 0.1
    weight = Int8Weight.from_float(w)
    ours = int8_linear(x, weight, b, relu=True)
    assert weight.native is True and (ENGINE in weight._packed)
    assert float((ours - torch.relu(x @ w.t() + b)).norm() / torch.relu(x @ w.t() + b).norm()) \
        < INT8_REL_ERROR_BOUND
    xq, scale = quantize_per_token(x)
    ref = int8_matmul_reference(xq, scale, weight.qweight, weight.scale, b, True)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


def test_gemm_engine_sends_only_small_gemms_to_fbgemm_on_amx(monkeypatch):
    monkeypatch.setattr(int8, "ENGINE", "onednn")
    assert gemm_engine(32, 512, 512) == "fbgemm"
    assert gemm_engine(33, 512, 512) == "onednn"
    assert gemm_engine(1, 1024, 1024) == "onednn"
    monkeypatch.setattr(int8, "ENGINE", "fbgemm")
    assert gemm_engine(4096, 4096, 4096) == "fbgemm"


@needs_ops
@pytest.mark.parametrize("m", [4, 32, 33, 64])
def test_int8_linear_matches_the_reference_on_either_side_of_the_small_gemm_split(m):
    torch.manual_seed(m)
    weight = Int8Weight.from_float(torch.randn(512, 512))
    x, b = torch.randn(m, 512), torch.randn(512)
    ours = int8_linear(x, weight, b, relu=True)
    assert gemm_engine(m, 512, 512) in weight._packed
    xq, scale = quantize_per_token(x)
    ref = int8_matmul_reference(xq, scale, weight.qweight, weight.scale, b, True)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


def test_without_the_ops_int8_linear_runs_torch_ops(monkeypatch):
    monkeypatch.setattr(native, "_STATE", {})
    monkeypatch.setenv("AUGSERVE_NATIVE_INT8", "0")
    assert native.load() is None
    weight = Int8Weight.from_float(torch.randn(24, 48))
    x, b = torch.randn(9, 48), torch.randn(24)
    ours = int8_linear(x, weight, b)
    assert weight.native is False and "fbgemm" not in weight._packed
    xq, scale = quantize_per_token(x)
    ref = int8_matmul_reference(xq, scale, weight.qweight, weight.scale, b)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
