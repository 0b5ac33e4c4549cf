"""Quantization: int8 matmul with fused epilogue, Int8Linear / Int8Conv2d, weight-only int8/int4.

The model-level int8 path (PT2E + Inductor, cached AOT artefacts) is in `model.py`; the batch
folding it applies to convs narrower than a oneDNN block is in `fold.py`.
"""

from augserve.kernels.quant.int8 import (
    Int8Weight,
    int8_linear,
    int8_matmul,
    onednn_int8_gemm,
    quantize_per_token,
    quantize_per_token_u8,
    quantize_weight_per_channel,
)
from augserve.kernels.quant.modules import Int8Conv2d, Int8Linear
from augserve.kernels.quant.weight_only import (
    Int4WeightOnlyLinear,
    Int8WeightOnlyLinear,
    quantize_int4_groupwise,
)

__all__ = [
    "Int4WeightOnlyLinear",
    "Int8Conv2d",
    "Int8Linear",
    "Int8Weight",
    "Int8WeightOnlyLinear",
    "int8_linear",
    "int8_matmul",
    "onednn_int8_gemm",
    "quantize_int4_groupwise",
    "quantize_per_token",
    "quantize_per_token_u8",
    "quantize_weight_per_channel",
]
