"""Weight-only int8 and group-wise int4 linears, for memory-bound batch-1 inference.

Activations stay in floating point; only the weights are compressed, so the win is
bandwidth (1 or 1/2 byte per weight instead of 4). On the CPU the TORCH backend runs
torch's AVX-512 kernels `_weight_int8pack_mm` / `_weight_int4pack_mm_for_cpu` in bf16
(their float32 paths are unoptimized); REFERENCE dequantizes and runs a float32 matmul.
"""

from __future__ import annotations

import torch
from torch import nn

from augserve.kernels.backend import Backend, resolve
from augserve.kernels.quant.int8 import quantize_weight_per_channel


class Int8WeightOnlyLinear(nn.Module):
    """y = x @ (qweight * scale).T + bias with int8 per-channel weights.

    Example:
        >>> q = Int8WeightOnlyLinear.from_float(nn.Linear(64, 32))
        >>> q(torch.randn(1, 64)).shape
        torch.Size([1, 32])
    """

    def __init__(
        self, in_features: int, out_features: int, bias: bool = True,
        backend: Backend | str = Backend.AUTO,
    ) -> None:
        super().__init__()
        self.in_features, self.out_features, self.backend = in_features, out_features, backend
        self.register_buffer("qweight", torch.zeros(out_features, in_features, dtype=torch.int8))
        self.register_buffer("scale", torch.ones(out_features))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)

    @classmethod
    def from_float(
        cls, linear: nn.Linear, backend: Backend | str = Backend.AUTO
    ) -> Int8WeightOnlyLinear:
        """Quantize the weights of a float `nn.Linear`."""
        module = cls(linear.in_features, linear.out_features, linear.bias is not None, backend)
        qweight, scale = quantize_weight_per_channel(linear.weight)
        module.qweight.copy_(qweight)
        module.scale.copy_(scale)
        if linear.bias is not None:
            module.bias.copy_(linear.bias.detach().float())
        return module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Float (..., in) -> float32 (..., out)."""
        lead, x2 = x.shape[:-1], x.reshape(-1, x.shape[-1])
        if resolve(self.backend, x.device) is Backend.REFERENCE:
            out = x2.float() @ (self.qweight.float() * self.scale[:, None]).t()
        else:
            out = torch._weight_int8pack_mm(
                x2.bfloat16(), self.qweight, self.scale.bfloat16()
            ).float()
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*lead, self.out_features)


def quantize_int4_groupwise(
    weight: torch.Tensor, group_size: int = 128
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Asymmetric int4 quantization of a (N, K) weight in groups of `group_size` along K.

    Returns:
        (q uint8 (N, K) with values 0..15, scale (N, K/group), minimum (N, K/group)),
        with weight ~= q * scale + minimum per group.
    """
    n, k = weight.shape
    if group_size not in (32, 64, 128, 256) or k % group_size:
        raise ValueError(f"group_size must be 32/64/128/256 and divide K={k}, got {group_size}")
    groups = weight.detach().float().reshape(n, k // group_size, group_size)
    low, high = groups.amin(-1), groups.amax(-1)
    scale = ((high - low) / 15).clamp_min(1e-8)
    q = torch.round((groups - low[..., None]) / scale[..., None]).clamp_(0, 15)
    return q.to(torch.uint8).reshape(n, k), scale, low


class Int4WeightOnlyLinear(nn.Module):
    """A Linear with group-wise asymmetric int4 weights (two nibbles per stored byte).

    Example:
        >>> q = Int4WeightOnlyLinear.from_float(nn.Linear(128, 16), group_size=64)
        >>> q(torch.randn(1, 128)).shape
        torch.Size([1, 16])
    """

    def __init__(
        self, in_features: int, out_features: int, group_size: int = 128, bias: bool = True,
        backend: Backend | str = Backend.AUTO,
    ) -> None:
        super().__init__()
        if in_features % group_size or in_features % 2:
            raise ValueError(f"in_features={in_features} must be a multiple of {group_size}")
        self.in_features, self.out_features = in_features, out_features
        self.group_size, self.backend = group_size, backend
        groups = in_features // group_size
        packed = torch.zeros(out_features, in_features // 2, dtype=torch.uint8)
        self.register_buffer("packed", packed)
        self.register_buffer("scale", torch.ones(out_features, groups))
        self.register_buffer("minimum", torch.zeros(out_features, groups))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)
        self._cpu_pack: tuple[torch.Tensor, torch.Tensor] | None = None
        self._register_load_state_dict_pre_hook(lambda *a: setattr(self, "_cpu_pack", None))

    @classmethod
    def from_float(
        cls, linear: nn.Linear, group_size: int = 128, backend: Backend | str = Backend.AUTO
    ) -> Int4WeightOnlyLinear:
        """Quantize the weights of a float `nn.Linear` to int4 in groups."""
        module = cls(linear.in_features, linear.out_features, group_size,
                     linear.bias is not None, backend)
        q, scale, low = quantize_int4_groupwise(linear.weight, group_size)
        module.packed.copy_(q[:, 0::2] | (q[:, 1::2] << 4))
        module.scale.copy_(scale)
        module.minimum.copy_(low)
        if linear.bias is not None:
            module.bias.copy_(linear.bias.detach().float())
        return module

    def unpacked(self) -> torch.Tensor:
        """The int4 values as uint8 (N, K), 0..15."""
        return torch.stack([self.packed & 0xF, self.packed >> 4], dim=-1).reshape(
            self.out_features, self.in_features
        )

    def dequantize(self) -> torch.Tensor:
        """The float32 weight q * scale + minimum."""
        q = self.unpacked().float().reshape(self.out_features, -1, self.group_size)
        return (q * self.scale[..., None] + self.minimum[..., None]).reshape(
            self.out_features, self.in_features
        )

    def _packed_cpu(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._cpu_pack is None:
            packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(
                self.unpacked().to(torch.int32), 1
            )
            # torch's convention: w = (q - 8) * scale + zero, so zero = minimum + 8 * scale.
            zeros = self.minimum + 8 * self.scale
            scales_zeros = torch.stack([self.scale.t(), zeros.t()], dim=-1).contiguous()
            self._cpu_pack = (packed, scales_zeros.bfloat16())
        return self._cpu_pack

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Float (..., in) -> float32 (..., out)."""
        lead, x2 = x.shape[:-1], x.reshape(-1, x.shape[-1])
        fast = x.device.type == "cpu" and self.out_features % 16 == 0  # torch's packing needs N%16
        if resolve(self.backend, x.device) is Backend.REFERENCE or not fast:
            out = x2.float() @ self.dequantize().t()
        else:
            packed, scales_zeros = self._packed_cpu()
            out = torch.ops.aten._weight_int4pack_mm_for_cpu(
                x2.bfloat16(), packed, self.group_size, scales_zeros
            ).float()
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*lead, self.out_features)
