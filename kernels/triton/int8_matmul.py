"""Triton int8 x int8 -> int32 GEMM with the dequant / bias / ReLU epilogue fused.

out[m, n] = relu?(acc[m, n] * x_scale[m] * w_scale[n] + bias[n]), acc accumulated in int32
over K tiles with `tl.dot`. One program computes one BLOCK_M x BLOCK_N output tile.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _int8_matmul_kernel(
    x_ptr, w_ptr, out_ptr, xs_ptr, ws_ptr, bias_ptr,
    M, N, K,
    stride_xm, stride_xk, stride_wn, stride_wk, stride_om, stride_on,
    HAS_BIAS: tl.constexpr, RELU: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
    for k0 in range(0, K, BLOCK_K):
        kk = k0 + rk
        x = tl.load(
            x_ptr + rm[:, None] * stride_xm + kk[None, :] * stride_xk,
            mask=(rm[:, None] < M) & (kk[None, :] < K), other=0,
        )
        w = tl.load(
            w_ptr + rn[None, :] * stride_wn + kk[:, None] * stride_wk,
            mask=(rn[None, :] < N) & (kk[:, None] < K), other=0,
        )
        acc += tl.dot(x, w, out_dtype=tl.int32)
    xs = tl.load(xs_ptr + rm, mask=rm < M, other=0.0)
    ws = tl.load(ws_ptr + rn, mask=rn < N, other=0.0)
    out = acc.to(tl.float32) * ws[None, :] * xs[:, None]
    if HAS_BIAS:
        out += tl.load(bias_ptr + rn, mask=rn < N, other=0.0)[None, :]
    if RELU:
        out = tl.maximum(out, 0.0)
    tl.store(
        out_ptr + rm[:, None] * stride_om + rn[None, :] * stride_on, out,
        mask=(rm[:, None] < M) & (rn[None, :] < N),
    )


def int8_matmul_triton(
    xq: torch.Tensor, x_scale: torch.Tensor, wq: torch.Tensor, w_scale: torch.Tensor,
    bias: torch.Tensor | None = None, relu: bool = False,
    block_m: int = 32, block_n: int = 64, block_k: int = 64,
) -> torch.Tensor:
    """Fused int8 GEMM + epilogue in Triton; same contract as `int8_matmul_reference`.

    Args:
        xq: int8 (M, K).
        x_scale: float32 (M, 1) or (M,).
        wq: int8 (N, K).
        w_scale: float32 (N,).
        bias: optional float (N,).
        relu: clamp the result at zero.
        block_m: tile rows (a power of two, >= 16).
        block_n: tile columns (a power of two, >= 16).
        block_k: reduction tile (a power of two, >= 16).

    Returns:
        float32 (M, N).
    """
    m, k = xq.shape
    n = wq.shape[0]
    out = torch.empty(m, n, dtype=torch.float32, device=xq.device)
    xs = x_scale.reshape(-1).float().contiguous()
    ws = w_scale.float().contiguous()
    b = bias.float().contiguous() if bias is not None else ws
    grid = (triton.cdiv(m, block_m), triton.cdiv(n, block_n))
    _int8_matmul_kernel[grid](
        xq, wq, out, xs, ws, b, m, n, k,
        xq.stride(0), xq.stride(1), wq.stride(0), wq.stride(1), out.stride(0), out.stride(1),
        HAS_BIAS=bias is not None, RELU=relu,
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k,
    )
    return out
