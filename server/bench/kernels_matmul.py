"""Int8 matmul GOP/s for `augserve bench kernels`: ours vs fp32, bf16 and torch.ao dynamic.

Beside them, the bare int8 GEMM ours is built on (`quant.int8.gemm_engine`'s: fbgemm's
int32-output GEMM, or `onednn_int8_gemm`, on activations quantized beforehand: no
quantization, no epilogue), timed in the same rounds: the roof our int8 linear could reach
with free quantization, paired against torch.ao as `int8_gemm_only_vs_torchao_m<M>_k<K>`.
`int8_linear_extra_over_gemm_share_m<M>_k<K>` is the share of our linear's time spent
outside that GEMM (quantization, epilogue, dispatch): 1 - gemm / ours, median of rounds.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from functools import partial
from typing import Any

from augserve.server.bench.kernels_timing import interleaved_samples, medians, paired_ratio

IMPLEMENTATIONS = ("int8_ours", "int8_gemm_only", "fp32_torch", "bf16_torch", "torchao_dynamic")


def run_matmul(
    ms: tuple[int, ...], ks: tuple[int, ...], repeats: int
) -> tuple[dict[str, Any], dict[tuple[int, int], float]]:
    """GOP/s per (M, K=N) for the four implementations; keys `matmul_gops_<impl>_m<M>_k<K>`.

    At M=1 the weight-only int8 and int4 linears are measured too.

    Returns:
        (figures, {(M, K): paired speed ratio of ours over torch.ao's dynamic Linear}).

    Ours is `Int8Linear` end to end: float in, per-token quantization, oneDNN VNNI int8
    GEMM, dequant + bias epilogue, float out. torch.ao's dynamic Linear (fbgemm) likewise
    quantizes its input on the fly.
    """
    import torch
    from torch import nn

    from augserve.kernels.quant import (
        Int4WeightOnlyLinear,
        Int8Linear,
        Int8WeightOnlyLinear,
    )

    figures: dict[str, Any] = {}
    paired: dict[tuple[int, int], float] = {}
    torch.manual_seed(0)
    for k in ks:
        linear = nn.Linear(k, k).eval()
        ours = Int8Linear.from_float(linear)
        w8, w4 = Int8WeightOnlyLinear.from_float(linear), Int4WeightOnlyLinear.from_float(linear)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dynamic = torch.ao.quantization.quantize_dynamic(
                nn.Sequential(linear), {nn.Linear}, dtype=torch.qint8
            )
        w_bf16, b_bf16 = linear.weight.detach().bfloat16(), linear.bias.detach().bfloat16()
        w, b = linear.weight.detach(), linear.bias.detach()
        for m in ms:
            x = torch.randn(m, k)
            x_bf16 = x.bfloat16()
            with torch.inference_mode():
                calls = {
                    "int8_ours": partial(ours, x),
                    "int8_gemm_only": _bare_gemm(x, ours.int8_weight()),
                    "fp32_torch": partial(torch.nn.functional.linear, x, w, b),
                    "bf16_torch": partial(torch.nn.functional.linear, x_bf16, w_bf16, b_bf16),
                    "torchao_dynamic": partial(dynamic, x),
                }
                if m == 1:  # memory-bound: weight-only int8 / group-wise int4 (bf16 compute)
                    calls["weight_only_int8"] = partial(w8, x)
                    calls["weight_only_int4_g128"] = partial(w4, x)
                samples = interleaved_samples(calls, repeats, warmup=3, budget_s=6.0)
            seconds = medians(samples)
            paired[(m, k)] = paired_ratio(samples, "torchao_dynamic", "int8_ours")
            if m > 1:
                figures[f"int8_gemm_only_vs_torchao_m{m}_k{k}"] = paired_ratio(
                    samples, "torchao_dynamic", "int8_gemm_only")
                figures[f"int8_linear_extra_over_gemm_share_m{m}_k{k}"] = 1.0 - paired_ratio(
                    samples, "int8_gemm_only", "int8_ours")  # 1 - gemm / ours
            ops = 2.0 * m * k * k
            for name, value in seconds.items():
                figures[f"matmul_gops_{name}_m{m}_k{k}"] = ops / value / 1e9
    return figures, paired


def _bare_gemm(x: Any, weight: Any) -> Callable[[], Any]:
    """The GEMM alone under `int8_linear` for this CPU and shape, on `x` quantized beforehand."""
    import torch

    from augserve.kernels.quant import onednn_int8_gemm, quantize_per_token_u8
    from augserve.kernels.quant.int8 import ACTIVATION_LEVELS, gemm_engine

    n, k = weight.qweight.shape
    if weight.native and gemm_engine(x.shape[0], k, n) == "fbgemm":
        x_u8, _ = torch.ops.augserve_int8.quantize_per_token_u8(x, ACTIVATION_LEVELS)
        return partial(torch.ops.augserve_int8.fbgemm_gemm, x_u8, weight.fbgemm_packed())
    x_u8, _ = quantize_per_token_u8(x)
    return partial(onednn_int8_gemm, x_u8, weight)
