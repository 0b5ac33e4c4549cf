"""`Int8Linear` and `Int8Conv2d`: drop-in int8 modules over `int8_linear`.

Both keep their state as plain tensors (int8 weight, float32 scales, float32 bias), so a
`state_dict` of a quantized model is weights-only and loads without pickle. `Int8Conv2d`
lowers the convolution to a GEMM by im2col, with one activation scale per output pixel.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from augserve.kernels.backend import Backend, resolve
from augserve.kernels.quant.int8 import (
    Int8Weight,
    fused_cpu_op,
    int8_linear,
    quantize_weight_per_channel,
)


class Int8Linear(nn.Module):
    """A Linear layer with per-channel int8 weights and per-token dynamic int8 activations.

    Example:
        >>> q = Int8Linear.from_float(nn.Linear(16, 8))
        >>> q(torch.randn(2, 16)).shape
        torch.Size([2, 8])
    """

    def __init__(
        self, in_features: int, out_features: int, bias: bool = True,
        relu: bool = False, backend: Backend | str = Backend.AUTO,
    ) -> None:
        super().__init__()
        self.in_features, self.out_features, self.relu = in_features, out_features, relu
        self.backend = backend
        self.register_buffer("qweight", torch.zeros(out_features, in_features, dtype=torch.int8))
        self.register_buffer("scale", torch.ones(out_features))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)
        self._weight: Int8Weight | None = None
        # The bound C++ op for CPU 2-D inputs (`fused_cpu_op`); reset with the weight.
        self._fast: Callable[[torch.Tensor], torch.Tensor] | None = None
        self._register_load_state_dict_pre_hook(self._invalidate)

    def _invalidate(self, *args: object) -> None:
        self._weight = self._fast = None

    def _apply(self, fn: Callable[..., object], recurse: bool = True) -> Int8Linear:
        # .to() / .cuda() / .half() replace the buffers the bound op holds.
        self._fast = None
        return super()._apply(fn, recurse)

    @classmethod
    def from_float(
        cls, linear: nn.Linear, relu: bool = False, backend: Backend | str = Backend.AUTO
    ) -> Int8Linear:
        """Quantize a float `nn.Linear` (optionally fusing a following ReLU)."""
        has_bias = linear.bias is not None
        module = cls(linear.in_features, linear.out_features, has_bias, relu, backend)
        qweight, scale = quantize_weight_per_channel(linear.weight)
        module.qweight.copy_(qweight)
        module.scale.copy_(scale)
        if linear.bias is not None:
            module.bias.copy_(linear.bias.detach().float())
        return module.to(linear.weight.device)

    def int8_weight(self) -> Int8Weight:
        """The packed weight, rebuilt after a state_dict load."""
        if self._weight is None or self._weight.qweight is not self.qweight:
            self._weight = Int8Weight(self.qweight, self.scale)
            if resolve(self.backend, self.qweight.device) is Backend.TORCH:
                self._weight.prepare()  # build / pack now, not inside the first timed call
        return self._weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Float (..., in_features) -> float32 (..., out_features)."""
        fast = self._fast
        if fast is not None and x.is_cpu and x.dim() == 2 and x.shape[0] > 0:
            return fast(x)
        weight = self.int8_weight()
        if fast is None and x.is_cpu and resolve(self.backend, x.device) is Backend.TORCH:
            self._fast = fused_cpu_op(weight, self.bias, self.relu)
        return int8_linear(x, weight, self.bias, self.relu, self.backend)

    def extra_repr(self) -> str:
        """in/out features, relu and backend."""
        return f"{self.in_features}, {self.out_features}, relu={self.relu}, backend={self.backend}"


class Int8Conv2d(nn.Module):
    """A Conv2d (groups=1) in int8: im2col, per-pixel activation scales, int8 GEMM.

    Example:
        >>> q = Int8Conv2d.from_float(nn.Conv2d(3, 8, 3, padding=1))
        >>> q(torch.randn(2, 3, 8, 8)).shape
        torch.Size([2, 8, 8, 8])
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: tuple[int, int],
        stride: tuple[int, int] = (1, 1), padding: tuple[int, int] = (0, 0),
        dilation: tuple[int, int] = (1, 1), bias: bool = True, relu: bool = False,
        backend: Backend | str = Backend.AUTO,
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride = tuple(kernel_size), tuple(stride)
        self.padding, self.dilation = tuple(padding), tuple(dilation)
        self.linear = Int8Linear(
            in_channels * kernel_size[0] * kernel_size[1], out_channels, bias, relu, backend
        )

    @classmethod
    def from_float(
        cls, conv: nn.Conv2d, relu: bool = False, backend: Backend | str = Backend.AUTO
    ) -> Int8Conv2d:
        """Quantize a float `nn.Conv2d`; raises ValueError for grouped or string padding."""
        if conv.groups != 1 or isinstance(conv.padding, str) or conv.padding_mode != "zeros":
            raise ValueError("Int8Conv2d supports groups=1 and numeric zero padding only")
        module = cls(
            conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
            conv.dilation, conv.bias is not None, relu, backend,
        )
        flat = nn.Linear(module.linear.in_features, conv.out_channels, conv.bias is not None)
        with torch.no_grad():
            flat.weight.copy_(conv.weight.reshape(conv.out_channels, -1))
            if conv.bias is not None:
                flat.bias.copy_(conv.bias)
        module.linear = Int8Linear.from_float(flat, relu, backend)
        return module.to(conv.weight.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Float (B, C, H, W) -> float32 (B, out_channels, H', W')."""
        b, _, h, w = x.shape
        kh, kw = self.kernel_size
        oh = (h + 2 * self.padding[0] - self.dilation[0] * (kh - 1) - 1) // self.stride[0] + 1
        ow = (w + 2 * self.padding[1] - self.dilation[1] * (kw - 1) - 1) // self.stride[1] + 1
        cols = F.unfold(x, self.kernel_size, self.dilation, self.padding, self.stride)
        out = self.linear(cols.transpose(1, 2))  # (B, L, out)
        return out.transpose(1, 2).reshape(b, self.out_channels, oh, ow)

    def extra_repr(self) -> str:
        """Shape and geometry."""
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}"
        )
