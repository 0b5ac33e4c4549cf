"""Int8 x int8 -> int32 matmul with per-channel weight and per-token activation scales.

The epilogue (dequantize by `x_scale[m] * w_scale[n]`, add bias, optional ReLU) is fused:
on the CPU the int8 GEMM is oneDNN's VNNI/AMX `qlinear` with the weight scales applied
inside it and one `addcmul` pass for the per-token scale and the bias; on CUDA it is our
Triton kernel (or `torch._int_mm`). `REFERENCE` computes the exact int32 accumulator in
float64 and applies the same epilogue in float32.

Activations are quantized symmetrically per row to [-L, L], weights symmetrically per output
channel to [-127, 127]. L (`ACTIVATION_LEVELS`) is 127 on CPUs with VNNI (AVX-512 VNNI,
AVX-VNNI, AMX), whose u8 x s8 dot products accumulate in int32. Without VNNI, oneDNN's AVX2
kernels sum pairs of u8 x s8 products in saturating int16 (`vpmaddubsw`): 2 x 255 x 127
overflows, and results go wrong (3.7% relative error on random data, 12 points of accuracy
on a CNN, measured on an AVX2-only AMD EPYC). There L is 63, so a pair stays below 2^15
(the reduced range fbgemm and torch.ao use on x86 for the same reason), and `int8_matmul`
on activations given in the full range splits them into two exact GEMMs. For rows with
|x| <= A and K inputs, the relative error of the result against the fp32 matmul is bounded
by about sqrt(K) * (A/2L) * |w| / |y| per element; on random and real layer data it stays
under `INT8_REL_ERROR_BOUND` (tested) with either L.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import torch

from augserve.kernels.backend import Backend, resolve
from augserve.kernels.quant import native

#: The relative Frobenius error of `int8_linear` against fp32 that the tests hold.
INT8_REL_ERROR_BOUND = 0.02

_EPS = 1e-8
#: Whether this CPU's int8 dot products accumulate without saturating (VNNI or AMX).
VNNI = bool(torch.cpu._is_vnni_supported() or torch.cpu._is_amx_tile_supported())
#: Activation levels each side of zero: the full int8 range with VNNI, 7 bits without.
ACTIVATION_LEVELS = 127 if VNNI else 63
#: The zero point of activations shifted into uint8 for oneDNN: [1, 255] or [1, 127].
U8_ZERO_POINT = ACTIVATION_LEVELS + 1
#: The int8 GEMM under the C++ `int8_linear`: oneDNN where AMX tiles beat everything, else
#: fbgemm (its AVX2 / AVX-512 kernels are faster than oneDNN's there, measured on an EPYC).
ENGINE = "onednn" if torch.cpu._is_amx_tile_supported() else "fbgemm"
#: On AMX, small GEMMs still go to fbgemm's AVX-512 VNNI kernels, which skip oneDNN's fixed
#: cost per call: weights of at most this many elements (K * N) ...
SMALL_WEIGHT = 1 << 18
#: ... times rows (M * K * N) up to this. Measured on a 2-core AMX Xeon, K = N = 512: fbgemm
#: 20 / 28 / 40 us against oneDNN's 35 / 35 / 45 us at M = 1 / 8 / 32, and slower from
#: M = 64; at K = N >= 1024 oneDNN won at every M, 1 included.
SMALL_GEMM = 1 << 23


def gemm_engine(m: int, k: int, n: int) -> str:
    """Which GEMM the C++ `int8_linear` runs for (M, K) @ (K, N): "onednn" or "fbgemm"."""
    if ENGINE == "onednn" and k * n <= SMALL_WEIGHT and m * k * n <= SMALL_GEMM:
        return "fbgemm"
    return ENGINE


def quantize_weight_per_channel(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel int8 quantization of a (N, K) weight.

    Returns:
        (qweight int8 (N, K), scale float32 (N,)) with weight ~= qweight * scale[:, None].
    """
    if weight.dim() != 2:
        raise ValueError(f"weight must be 2-D (N, K), got shape {tuple(weight.shape)}")
    w = weight.detach().float()
    scale = w.abs().amax(dim=1).clamp_min(_EPS) / 127.0
    qweight = torch.round(w / scale[:, None]).clamp_(-127, 127).to(torch.int8)
    return qweight, scale


def quantize_per_token(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Dynamic symmetric per-row int8 quantization of a (M, K) activation.

    Rounding is half-up: xq = floor(x * L / amax + 0.5), in [-L, L] (L = `ACTIVATION_LEVELS`).

    Returns:
        (xq int8 (M, K), scale float32 (M, 1)) with x ~= xq * scale.
    """
    shifted, scale = quantize_per_token_u8(x)
    return (shifted.to(torch.int16) - U8_ZERO_POINT).to(torch.int8), scale


def quantize_per_token_u8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`quantize_per_token`'s integers shifted into uint8, as `onednn_int8_gemm` takes them.

    oneDNN's u8 x s8 kernels take them with one scalar zero point for every row
    (`U8_ZERO_POINT`).

    Returns:
        (xu8 uint8 (M, K), scale float32 (M, 1)) with x ~= (xu8 - U8_ZERO_POINT) * scale.
    """
    # x/s + 128.5 truncated is round-half-up, which differs from torch.round only on
    # exact .5 ties. Measured here: abs + amax is vectorized (linalg.vector_norm(inf) and
    # aminmax are not: 5-20x slower), and a multiply then an in-place add beat one
    # broadcasting addcmul by 20-35% over the whole quantization.
    x = x.float()
    amax = x.abs().amax(dim=-1, keepdim=True).clamp_min_(_EPS)
    shifted = torch.mul(x, ACTIVATION_LEVELS / amax).add_(U8_ZERO_POINT + 0.5)
    return shifted.to(torch.uint8), amax / ACTIVATION_LEVELS


@dataclass(eq=False)
class Int8Weight:
    """A per-channel int8 weight (N, K) and its scales, with lazily packed backend layouts.

    Attributes:
        qweight: int8 (N, K).
        scale: float32 (N,).
    """

    qweight: torch.Tensor
    scale: torch.Tensor
    _packed: dict[str, object] = field(default_factory=dict, repr=False)
    #: Whether the C++ ops run this weight: None until `prepare` has been tried.
    native: bool | None = field(default=None, repr=False)

    @classmethod
    def from_float(cls, weight: torch.Tensor) -> Int8Weight:
        """Quantize a float (N, K) weight per output channel."""
        return cls(*quantize_weight_per_channel(weight))

    def onednn_packed(self) -> torch.Tensor:
        """The weight in oneDNN's blocked VNNI layout (packed once, then reused)."""
        if "onednn" not in self._packed:
            self._packed["onednn"] = torch.ops.onednn.qlinear_prepack(self.qweight, None)
        return self._packed["onednn"]

    def fbgemm_packed(self) -> object:
        """The weight packed for fbgemm by the C++ ops, with its column sums (packed once)."""
        if "fbgemm" not in self._packed:
            self._packed["fbgemm"] = native.load().fbgemm_pack(self.qweight.contiguous())
        return self._packed["fbgemm"]

    def onednn_zeros(self) -> torch.Tensor:
        """The all-zero weight zero points oneDNN's `qlinear` takes (symmetric weights)."""
        zeros = self._packed.get("zeros")
        if zeros is None or zeros.numel() != self.scale.numel():
            zeros = self._packed["zeros"] = torch.zeros(self.scale.numel(), dtype=torch.int64)
        return zeros

    def prepare(self) -> bool:
        """Build (first time on a machine) the C++ ops and pack for `gemm_engine`'s GEMMs.

        Returns False where the ops are unavailable.

        Called when `Int8Linear` builds its weight, so neither the compile nor the packing
        happens inside a timed call.
        """
        self.native = self.qweight.device.type == "cpu" and native.load() is not None
        if self.native:
            n, k = self.qweight.shape
            if ENGINE == "onednn":
                self.onednn_packed()
            if gemm_engine(1, k, n) == "fbgemm":
                self.fbgemm_packed()
        return self.native

    def dequantize(self) -> torch.Tensor:
        """The float32 weight qweight * scale."""
        return self.qweight.float() * self.scale[:, None]


def _epilogue(
    acc: torch.Tensor, x_scale: torch.Tensor, w_scale: torch.Tensor | None,
    bias: torch.Tensor | None, relu: bool,
) -> torch.Tensor:
    out = acc * w_scale if w_scale is not None else acc
    out = torch.addcmul(bias.float(), out, x_scale) if bias is not None else out.mul_(x_scale)
    return out.relu_() if relu else out


def int8_matmul_reference(
    xq: torch.Tensor, x_scale: torch.Tensor, wq: torch.Tensor, w_scale: torch.Tensor,
    bias: torch.Tensor | None = None, relu: bool = False,
) -> torch.Tensor:
    """Plain-torch reference: exact int32 accumulation (via float64), then the epilogue."""
    acc = (xq.double() @ wq.double().t()).float()
    return _epilogue(acc, x_scale.float(), w_scale.float(), bias, relu)


def int8_matmul(
    xq: torch.Tensor, x_scale: torch.Tensor, weight: Int8Weight,
    bias: torch.Tensor | None = None, relu: bool = False,
    backend: Backend | str = Backend.AUTO,
) -> torch.Tensor:
    """(xq @ qweight.T) * x_scale * w_scale + bias, then ReLU if asked; float32 (M, N).

    Args:
        xq: int8 (M, K) activations.
        x_scale: float32 (M, 1) per-row scales.
        weight: the packed per-channel int8 weight (N, K).
        bias: optional (N,) bias.
        relu: apply ReLU in the epilogue.
        backend: AUTO, TORCH, TRITON or REFERENCE.
    """
    if xq.dtype != torch.int8 or xq.dim() != 2 or xq.shape[1] != weight.qweight.shape[1]:
        raise ValueError(
            f"xq must be int8 (M, {weight.qweight.shape[1]}), got {xq.dtype} {tuple(xq.shape)}"
        )
    chosen = resolve(backend, xq.device)
    if chosen is Backend.REFERENCE:
        return int8_matmul_reference(xq, x_scale, weight.qweight, weight.scale, bias, relu)
    if chosen is Backend.TRITON:
        from augserve.kernels.triton.int8_matmul import int8_matmul_triton

        return int8_matmul_triton(xq, x_scale, weight.qweight, weight.scale, bias, relu)
    if xq.device.type == "cpu" and VNNI:
        xu8 = xq.view(torch.uint8).add(128)  # bitwise shift into u8 (two's complement)
        return _epilogue(onednn_int8_gemm(xu8, weight, 128), x_scale, None, bias, relu)
    if xq.device.type == "cpu":
        return _epilogue(_split_gemm(xq, weight), x_scale, None, bias, relu)
    return _int_mm_cuda(xq, x_scale, weight, bias, relu)


def _split_gemm(xq: torch.Tensor, weight: Int8Weight) -> torch.Tensor:
    """The GEMM of int8 `xq` by the weight (scaled), exact without VNNI over [-128, 127].

    xq + 128 = 2 * high + low with high in [0, 127] and low in {0, 1}: two GEMMs whose
    pairs of u8 x s8 products stay below 2^15, so neither saturates.
    """
    xu8 = xq.view(torch.uint8).add(128)
    high = onednn_int8_gemm(xu8 >> 1, weight, 64)  # (high - 64) @ w: 2x of it is (2 high - 128)
    return high.mul_(2).add_(onednn_int8_gemm(xu8 & 1, weight, 0))


def onednn_int8_gemm(xu8: torch.Tensor, weight: Int8Weight,
                     zero_point: int = U8_ZERO_POINT) -> torch.Tensor:
    """The bare CPU int8 GEMM under `int8_linear`: float32 (xu8 - zero_point) @ qweight.T * w_scale.

    oneDNN's VNNI (or AMX; AVX2 without VNNI) `qlinear` on activations already quantized
    and shifted into uint8, with the per-channel weight scales applied inside it; no
    per-token scale, bias or ReLU. Without VNNI, xu8 must stay in [0, 127] to be exact
    (see the module docstring). `augserve bench kernels` times it alone as the roof of
    our int8 linear.
    """
    return torch.ops.onednn.qlinear_pointwise(
        xu8, 1.0, zero_point, weight.onednn_packed(), weight.scale, weight.onednn_zeros(),
        None, 1.0, 0, torch.float32, "none", [], "",
    )


def _onednn_u8(
    xu8: torch.Tensor, x_scale: torch.Tensor, weight: Int8Weight,
    bias: torch.Tensor | None, relu: bool,
) -> torch.Tensor:
    return _epilogue(onednn_int8_gemm(xu8, weight), x_scale, None, bias, relu)


def _int_mm_cuda(
    xq: torch.Tensor, x_scale: torch.Tensor, weight: Int8Weight,
    bias: torch.Tensor | None, relu: bool,
) -> torch.Tensor:
    m = xq.shape[0]
    padded = torch.nn.functional.pad(xq, (0, 0, 0, max(0, 17 - m)))  # _int_mm needs M > 16
    acc = torch._int_mm(padded, weight.qweight.t())[:m].float()
    return _epilogue(acc, x_scale, weight.scale, bias, relu)


def int8_linear(
    x: torch.Tensor, weight: Int8Weight, bias: torch.Tensor | None = None,
    relu: bool = False, backend: Backend | str = Backend.AUTO,
) -> torch.Tensor:
    """A linear layer in int8: per-token quantization of `x`, int8 GEMM, fused epilogue.

    Args:
        x: float (..., K).
        weight: per-channel int8 weight (N, K).
        bias: optional (N,).
        relu: apply ReLU in the epilogue.
        backend: AUTO, TORCH, TRITON or REFERENCE.

    Returns:
        float32 (..., N).

    Example:
        >>> w = Int8Weight.from_float(torch.randn(8, 16))
        >>> int8_linear(torch.randn(4, 16), w).shape
        torch.Size([4, 8])
    """
    flat = x.dim() == 2  # skip two reshapes (aten calls, microseconds each) when 2-D
    x2 = x if flat else x.reshape(-1, x.shape[-1])
    chosen = resolve(backend, x.device)
    fused = _fused_cpu(x2, weight, bias, relu) if chosen is Backend.TORCH else None
    if fused is not None:
        if flat:
            return fused
        out = fused
    elif chosen is Backend.TORCH and x.device.type == "cpu":
        xu8, scale = quantize_per_token_u8(x2)
        out = _onednn_u8(xu8, scale, weight, bias, relu)
    else:
        xq, scale = quantize_per_token(x2)
        out = int8_matmul(xq, scale, weight, bias, relu, chosen)
    return out if flat else out.reshape(*x.shape[:-1], out.shape[-1])


def _fused_cpu(
    x2: torch.Tensor, weight: Int8Weight, bias: torch.Tensor | None, relu: bool
) -> torch.Tensor | None:
    """The C++ op: quantization, `ENGINE`'s GEMM and the epilogue in one call; None if absent."""
    if x2.device.type != "cpu" or x2.shape[0] == 0:
        return None
    op = fused_cpu_op(weight, bias, relu)
    return None if op is None else op(x2)


def fused_cpu_op(
    weight: Int8Weight, bias: torch.Tensor | None, relu: bool
) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """`x2 -> int8_linear(x2, weight, bias, relu)` as one call of the C++ op, or None.

    For a CPU float (M >= 1, K) input only. Everything but `x2` is bound once, so a caller
    that keeps the result (`Int8Linear`) pays one Python call per forward: at M = 32,
    K = N = 512 the argument handling of `int8_linear` costs about a quarter of the op.
    """
    if not (weight.prepare() if weight.native is None else weight.native):
        return None
    if bias is not None and (bias.dtype != torch.float32 or not bias.is_contiguous()):
        bias = bias.float().contiguous()
    ops = torch.ops.augserve_int8
    n, k = weight.qweight.shape
    fbgemm = None
    if gemm_engine(1, k, n) == "fbgemm":
        fbgemm = partial(_fbgemm_op, ops.fbgemm_linear, weight.fbgemm_packed(), weight.scale,
                         bias, relu)
    if ENGINE == "fbgemm":
        return fbgemm
    onednn = partial(_onednn_op, ops.onednn_linear, weight.onednn_packed(), weight.scale,
                     weight.onednn_zeros(), bias, relu)
    if fbgemm is None:
        return onednn
    return partial(_by_rows, fbgemm, onednn, SMALL_GEMM // (k * n))


def _by_rows(
    small: Callable[[torch.Tensor], torch.Tensor], large: Callable[[torch.Tensor], torch.Tensor],
    max_small_rows: int, x2: torch.Tensor,
) -> torch.Tensor:
    return small(x2) if x2.shape[0] <= max_small_rows else large(x2)


def _fbgemm_op(
    op: Callable[..., torch.Tensor], packed: object, scale: torch.Tensor,
    bias: torch.Tensor | None, relu: bool, x2: torch.Tensor,
) -> torch.Tensor:
    return op(x2, packed, scale, bias, relu, ACTIVATION_LEVELS)


def _onednn_op(
    op: Callable[..., torch.Tensor], packed: torch.Tensor, scale: torch.Tensor,
    zeros: torch.Tensor, bias: torch.Tensor | None, relu: bool, x2: torch.Tensor,
) -> torch.Tensor:
    return op(x2, packed, scale, zeros, bias, relu, ACTIVATION_LEVELS)
