"""Int8 matmul: every backend against the plain-torch reference; error bounds vs fp32."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from augserve.kernels.backend import Backend
from augserve.kernels.quant.int8 import (
    ACTIVATION_LEVELS,
    INT8_REL_ERROR_BOUND,
    U8_ZERO_POINT,
    Int8Weight,
    int8_linear,
    int8_matmul,
    int8_matmul_reference,
    onednn_int8_gemm,
    quantize_per_token,
    quantize_per_token_u8,
    quantize_weight_per_channel,
)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_weight_quantization_roundtrip_is_within_half_a_step():
    w = torch.randn(64, 128)
    q, s = quantize_weight_per_channel(w)
    assert q.dtype == torch.int8 and q.abs().max() <= 127
    assert torch.all((q.float() * s[:, None] - w).abs() <= s[:, None] / 2 + 1e-6)


def test_per_token_scales_are_per_row_and_round_to_nearest():
    x = torch.randn(5, 33) * torch.arange(1, 6)[:, None]
    q, s = quantize_per_token(x)
    assert s.shape == (5, 1)
    levels = torch.full((5,), ACTIVATION_LEVELS, dtype=torch.int8)
    assert torch.equal(q.abs().amax(dim=1), levels)
    plain = torch.round(x / (x.abs().amax(1, keepdim=True) / ACTIVATION_LEVELS))
    assert (q.float() - plain).abs().max() <= 1  # differs only within float rounding of ties
    assert torch.all((q.float() * s - x).abs() <= s * 0.5 + 1e-5)


@settings(max_examples=25, deadline=None)
@given(
    m=st.integers(1, 40), k=st.integers(1, 70), n=st.integers(1, 40),
    bias=st.booleans(), relu=st.booleans(),
)
def test_torch_backend_matches_reference(m, k, n, bias, relu):
    """Activations over the whole int8 range, the worst case of AVX2's saturating sums."""
    torch.manual_seed(m * 1000 + k * 10 + n)
    weight = Int8Weight.from_float(torch.randn(n, k))
    xq = torch.randint(-128, 128, (m, k), dtype=torch.int8)
    scale = torch.rand(m, 1) + 0.01
    b = torch.randn(n) if bias else None
    ours = int8_matmul(xq, scale, weight, b, relu, Backend.TORCH)
    ref = int8_matmul_reference(xq, scale, weight.qweight, weight.scale, b, relu)
    # The int32 accumulators are exact; only the float epilogue may round differently.
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("m,k,n", [(1, 7, 3), (32, 512, 256), (65, 96, 130)])
def test_bare_int8_gemm_matches_its_reference(m, k, n):
    torch.manual_seed(m + k + n)
    weight = Int8Weight.from_float(torch.randn(n, k))
    x = torch.randn(m, k)
    xu8, scale_u8 = quantize_per_token_u8(x)
    xq, scale = quantize_per_token(x)
    shifted = xu8.to(torch.int16) - U8_ZERO_POINT
    assert xu8.dtype == torch.uint8 and torch.equal(shifted, xq.to(torch.int16))
    assert torch.equal(scale_u8, scale)
    ours = onednn_int8_gemm(xu8, weight)
    acc = (xu8.double() - U8_ZERO_POINT) @ weight.qweight.double().t()  # exact int32 sums
    torch.testing.assert_close(ours, (acc * weight.scale.double()).float(), rtol=1e-5, atol=1e-4)


def test_int8_linear_torch_and_reference_agree_on_leading_dims():
    weight = Int8Weight.from_float(torch.randn(24, 48))
    x = torch.randn(2, 3, 48)
    ours = int8_linear(x, weight, torch.randn(24), backend="torch")
    ref = int8_linear(x, weight, None, backend="reference")
    assert ours.shape == (2, 3, 24)
    assert _rel(ours - ours.mean(), ref - ref.mean()) < 1.0  # same signal, bias aside
    torch.testing.assert_close(
        int8_linear(x, weight, backend="torch"), ref, rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("m,k,n", [(1, 512, 512), (32, 512, 256), (256, 2048, 64)])
def test_relative_error_vs_fp32_on_random_data(m, k, n):
    torch.manual_seed(k + n)
    w, x, b = torch.randn(n, k) / k**0.5, torch.randn(m, k), torch.randn(n) * 0.1
    ours = int8_linear(x, Int8Weight.from_float(w), b)
    assert _rel(ours, x @ w.t() + b) < INT8_REL_ERROR_BOUND


def test_relative_error_vs_fp32_on_real_layer_data():
    """Weights and activations of a small MLP trained on scikit-learn's bundled digits."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target)
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10)
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    with torch.no_grad():
        hidden = torch.relu(model[0](x))
        for layer, inputs in ((model[0], x), (model[2], hidden)):
            ours = int8_linear(inputs, Int8Weight.from_float(layer.weight), layer.bias)
            assert _rel(ours, layer(inputs)) < INT8_REL_ERROR_BOUND
        logits = int8_linear(
            hidden, Int8Weight.from_float(model[2].weight), model[2].bias
        )
        agree = (logits.argmax(1) == model(x).argmax(1)).float().mean()
    assert agree > 0.99


def test_rejects_wrong_input_dtype():
    weight = Int8Weight.from_float(torch.randn(4, 8))
    with pytest.raises(ValueError, match="int8"):
        int8_matmul(torch.randn(2, 8), torch.ones(2, 1), weight)
