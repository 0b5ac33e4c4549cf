"""Int8Linear / Int8Conv2d and the weight-only int8 / int4 linears against references."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from augserve.kernels.quant import (
    Int4WeightOnlyLinear,
    Int8Conv2d,
    Int8Linear,
    Int8WeightOnlyLinear,
    quantize_int4_groupwise,
)
from augserve.kernels.quant.int8 import INT8_REL_ERROR_BOUND, int8_linear


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@torch.no_grad()
def test_int8_linear_module_torch_vs_reference_and_fp32():
    linear = nn.Linear(96, 40)
    x = torch.randn(7, 96)
    fast = Int8Linear.from_float(linear, relu=True, backend="torch")(x)
    ref = Int8Linear.from_float(linear, relu=True, backend="reference")(x)
    torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-5)
    assert _rel(fast, torch.relu(linear(x))) < INT8_REL_ERROR_BOUND


@torch.no_grad()
@pytest.mark.parametrize("stride,padding,bias", [(1, 1, True), (2, 0, False)])
def test_int8_conv_matches_reference_and_fp32(stride, padding, bias):
    conv = nn.Conv2d(8, 16, 3, stride, padding, bias=bias)
    x = torch.randn(2, 8, 11, 11)
    fast = Int8Conv2d.from_float(conv, backend="torch")(x)
    ref = Int8Conv2d.from_float(conv, backend="reference")(x)
    assert fast.shape == conv(x).shape
    torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-5)
    assert _rel(fast, conv(x)) < INT8_REL_ERROR_BOUND


def test_int8_conv_rejects_grouped():
    with pytest.raises(ValueError, match="groups"):
        Int8Conv2d.from_float(nn.Conv2d(4, 4, 3, groups=2))


@torch.no_grad()
def test_int8_linear_state_dict_reload_repacks():
    a, b = Int8Linear.from_float(nn.Linear(32, 16)), Int8Linear.from_float(nn.Linear(32, 16))
    x = torch.randn(3, 32)
    b(x)  # packs b's weight
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(b(x), a(x))


@torch.no_grad()
def test_int8_linear_bound_op_matches_int8_linear_and_resets_on_apply():
    linear = nn.Linear(48, 24)
    module = Int8Linear.from_float(linear, relu=True)
    x = torch.randn(5, 48)
    want = int8_linear(x, module.int8_weight(), module.bias, relu=True)
    first, second = module(x), module(x)  # the second call runs the bound op
    torch.testing.assert_close(first, want, rtol=0, atol=0)
    torch.testing.assert_close(second, want, rtol=0, atol=0)
    torch.testing.assert_close(module(x.view(5, 1, 48)), want.view(5, 1, 24), rtol=0, atol=0)
    module.to("cpu")
    assert module._fast is None
    torch.testing.assert_close(module(x), want, rtol=0, atol=0)


@torch.no_grad()
@pytest.mark.parametrize("m", [1, 8])
def test_weight_only_int8_fast_vs_reference(m):
    linear = nn.Linear(256, 64)
    x = torch.randn(m, 256)
    fast = Int8WeightOnlyLinear.from_float(linear, "torch")(x)
    ref = Int8WeightOnlyLinear.from_float(linear, "reference")(x)
    assert _rel(fast, ref) < 0.01  # bf16 activations in the fast kernel
    assert _rel(ref, linear(x)) < INT8_REL_ERROR_BOUND


def test_int4_groupwise_quantization_error_is_half_a_step():
    w = torch.randn(32, 256)
    q, scale, low = quantize_int4_groupwise(w, 64)
    assert q.max() <= 15
    deq = (q.float().reshape(32, 4, 64) * scale[..., None] + low[..., None]).reshape(32, 256)
    step = scale.repeat_interleave(64, dim=1)
    assert torch.all((deq - w).abs() <= step / 2 + 1e-5)


@torch.no_grad()
@pytest.mark.parametrize("out_features", [64, 24])  # 24: torch's packing needs N%16, fallback
def test_weight_only_int4_fast_vs_reference(out_features):
    linear = nn.Linear(256, out_features)
    x = torch.randn(2, 256)
    fast = Int4WeightOnlyLinear.from_float(linear, 128, "torch")
    ref = Int4WeightOnlyLinear.from_float(linear, 128, "reference")
    assert torch.equal(fast.unpacked(), ref.unpacked())
    assert _rel(fast(x), ref(x)) < 0.01
    assert _rel(ref(x), linear(x)) < 0.15  # 4-bit weights


def test_int4_rejects_bad_group_size():
    with pytest.raises(ValueError, match="group_size"):
        quantize_int4_groupwise(torch.randn(4, 100), 64)
