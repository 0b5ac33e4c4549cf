"""One-channel models get a second, all-zero input channel before they are compiled.

Measured with torch 2.13 on an AMX Xeon (also with oneDNN held to AVX-512 VNNI): a
dynamic-batch AOTInductor package of a PT2E-int8 model whose first conv takes one input
channel answers 15-115% off its own converted graph (relative Frobenius error; two
input channels or more, and fixed-shape packages, agree with it to 0.3%).
`widen_single_channel` sidesteps it exactly: the input gets a zero second channel and the
first conv a zero second weight channel, so every output is the same sum (per-channel
weight scales are taken from the real channel, the input scale from the real values).
`quant.model.quantize_model` applies it to one-channel inputs it does not batch-fold (a
folded input already has two channels or more).
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class ZeroChannelPadded(nn.Module):
    """`inner` fed (N, 1, H, W) inputs as (N, 2, H, W): a zero channel appended."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Append the zero channel, then run the widened model."""
        return self.inner(torch.cat([x, torch.zeros_like(x)], dim=1))


def widen_single_channel(
    model: nn.Module, example: torch.Tensor
) -> ZeroChannelPadded | None:
    """The model with a zero second input channel, or None where that does not apply.

    Applies when `example` is (N, 1, H, W) and the first Conv2d of `model` (in module
    order) takes one channel; the widened model is checked against `model` on `example`
    in float, and None is returned if they differ (the first conv was not the input's).
    """
    if example.dim() != 4 or example.shape[1] != 1:
        return None
    inner = copy.deepcopy(model).eval()
    first = next((m for m in inner.modules() if isinstance(m, nn.Conv2d)), None)
    if first is None or first.in_channels != 1 or first.groups != 1:
        return None
    with torch.no_grad():
        weight = torch.cat([first.weight, torch.zeros_like(first.weight)], dim=1)
        first.in_channels = 2
        first.weight = nn.Parameter(weight)
        widened = ZeroChannelPadded(inner).eval()
        try:
            same = torch.allclose(widened(example), model(example), rtol=1e-5, atol=1e-6)
        except RuntimeError:  # the first conv was not the one that reads the input
            return None
    return widened if same else None
