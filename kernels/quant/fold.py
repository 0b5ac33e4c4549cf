"""Batch folding: run `factor` images as one, every convolution as `factor` groups.

oneDNN's int8 (AVX-512 VNNI) convolutions block output channels by 16, so a conv with 8
output channels per group fills half of every vector: on this CPU an 8 -> 8 3x3 conv at
batch 32 costs about 1.5x what the same work costs as a 2-group 16 -> 16 conv at batch 16.
`fold_batch(model, 2)` builds that second form of a model, exactly:

- the input (N, C, H, W) is viewed as (N / f, f * C, H, W) (image `f * k + m` is channel
  block `m` of folded image `k`);
- each `Conv2d` becomes a conv with f times the channels and f times the groups, its weight
  and bias repeated f times (block-diagonal: images never mix);
- each `BatchNorm2d` repeats its affine parameters and running statistics f times;
- each `Linear` first reshapes its input to (-1, in_features), which unfolds (N / f, f * C)
  back into (N, C) once the spatial dims are pooled or flattened.

Only these modules and modules without parameters or buffers (activations, pooling,
containers, flatten, dropout) can be folded; anything else raises. Functional code that
depends on the batch or channel count (e.g. `x.view(batch, -1)`) cannot be checked here:
`quant.model.quantize_model` compares the folded float model with the original on the
calibration batch before it compiles.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

# Output channels per oneDNN int8 convolution block: one vector of int32, 16 with AVX-512,
# 8 with AVX2. On AVX2 an 8-channel conv already fills its vector, and the grouped convs of
# a folded model run 1.9x slower than the plain ones (pruned ResNet-20, batch 32, measured
# on an AVX2 EPYC), so folding is for AVX-512 CPUs only.
ONEDNN_BLOCK = 16 if str(torch.backends.cpu.get_cpu_capability()).startswith("AVX512") else 8


class _UnfoldLinear(nn.Module):
    """A Linear that first unfolds its input back to one row per image."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.linear = linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N / f, f * in_features) -> (N, out_features)."""
        return self.linear(x.reshape(-1, self.linear.in_features))


class BatchFolded(nn.Module):
    """A model whose batch is folded into channels by `factor` (see the module docstring).

    Attributes:
        inner: the folded copy of the model.
        factor: images per folded image; the input batch must be a multiple of it.
    """

    def __init__(self, inner: nn.Module, factor: int) -> None:
        super().__init__()
        self.inner, self.factor = inner, factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run an (N, C, H, W) batch, N a multiple of `factor`; returns the model's output."""
        n, c, h, w = x.shape
        return self.inner(x.reshape(n // self.factor, c * self.factor, h, w))


def _fold_conv(conv: nn.Conv2d, factor: int) -> nn.Conv2d:
    folded = nn.Conv2d(
        conv.in_channels * factor, conv.out_channels * factor, conv.kernel_size, conv.stride,
        conv.padding, conv.dilation, conv.groups * factor, conv.bias is not None,
        conv.padding_mode,
    )
    with torch.no_grad():
        folded.weight.copy_(conv.weight.repeat(factor, 1, 1, 1))
        if conv.bias is not None:
            folded.bias.copy_(conv.bias.repeat(factor))
    return folded.train(conv.training)


def _fold_bn(bn: nn.BatchNorm2d, factor: int) -> nn.BatchNorm2d:
    folded = nn.BatchNorm2d(
        bn.num_features * factor, bn.eps, bn.momentum, bn.affine, bn.track_running_stats
    )
    with torch.no_grad():
        for name, tensor in list(bn.named_parameters(recurse=False)) + list(
            bn.named_buffers(recurse=False)
        ):
            target = getattr(folded, name)
            target.copy_(tensor if tensor.dim() == 0 else tensor.repeat(factor))
    return folded.train(bn.training)


def _fold_child(child: nn.Module, factor: int) -> nn.Module | None:
    if type(child) is nn.Conv2d:
        return _fold_conv(child, factor)
    if type(child) is nn.BatchNorm2d:
        return _fold_bn(child, factor)
    if type(child) is nn.Linear:
        return _UnfoldLinear(child)
    own = list(child.parameters(recurse=False)) + list(child.buffers(recurse=False))
    if own:
        raise ValueError(f"cannot batch-fold a {type(child).__name__} (it has parameters)")
    return None


def foldable(model: nn.Module) -> bool:
    """Whether `fold_batch` supports every module of `model`."""
    supported = (nn.Conv2d, nn.BatchNorm2d, nn.Linear)
    return all(
        type(m) in supported
        or not (list(m.parameters(recurse=False)) or list(m.buffers(recurse=False)))
        for m in model.modules()
    )


def fold_batch(model: nn.Module, factor: int) -> BatchFolded:
    """An exact batch-folded copy of `model` (which is left unchanged).

    Args:
        model: a conv net of Conv2d / BatchNorm2d / Linear and parameter-free modules,
            taking one (N, C, H, W) tensor.
        factor: images per folded image (>= 2).

    Raises:
        ValueError: a module with parameters of another type, or factor < 2.
    """
    if factor < 2:
        raise ValueError(f"factor must be >= 2, got {factor}")
    inner = copy.deepcopy(model)
    for parent in list(inner.modules()):
        for name, child in list(parent.named_children()):
            folded = _fold_child(child, factor)
            if folded is not None:
                setattr(parent, name, folded)
    return BatchFolded(inner, factor).train(model.training)


def narrowest_conv_width(model: nn.Module) -> int | None:
    """The fewest output channels per group of any Conv2d in `model` (None without convs)."""
    widths = [m.out_channels // m.groups for m in model.modules() if isinstance(m, nn.Conv2d)]
    return min(widths) if widths else None


def auto_fold_factor(model: nn.Module) -> int:
    """2 when some conv is narrower than a oneDNN block (16 outputs) and the model folds, else 1.

    Folding pairs pays at those widths (measured on AVX-512 VNNI, see the README); at 16
    and more channels the plain convolution already fills the vector.
    """
    narrowest = narrowest_conv_width(model)
    if narrowest is None or narrowest >= ONEDNN_BLOCK or not foldable(model):
        return 1
    return 2


def pad_batch(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """`x` with its last row repeated until the batch is a multiple of `multiple`."""
    extra = -x.shape[0] % multiple
    if extra == 0:
        return x
    return torch.cat([x, x[-1:].expand(extra, *x.shape[1:])])
