"""Channel and filter importance scores for structured pruning: L1, L2 and BN scale.

A *filter* score ranks the output channels of a Conv/Linear (dim 0 of its weight); a
*channel* score ranks its input channels (dim 1). Higher means more important.
"""

from __future__ import annotations

import torch
from torch import nn


def filter_scores(weight: torch.Tensor, norm: str = "l1") -> torch.Tensor:
    """Per-output-channel norm of a (out, in, ...) weight; returns float32 (out,).

    Example:
        >>> filter_scores(torch.tensor([[1.0, -2.0], [0.5, 0.5]]))
        tensor([3., 1.])
    """
    flat = weight.detach().float().reshape(weight.shape[0], -1)
    if norm == "l1":
        return flat.abs().sum(dim=1)
    if norm == "l2":
        return flat.pow(2).sum(dim=1).sqrt()
    raise ValueError(f"norm must be 'l1' or 'l2', got {norm!r}")


def channel_scores(weight: torch.Tensor, norm: str = "l1") -> torch.Tensor:
    """Per-input-channel norm of a (out, in, ...) weight; returns float32 (in,)."""
    return filter_scores(weight.detach().transpose(0, 1), norm)


def bn_scale_scores(bn: nn.modules.batchnorm._BatchNorm) -> torch.Tensor:
    """|gamma| of a BatchNorm (the network-slimming criterion); returns float32 (C,)."""
    if bn.weight is None:
        raise ValueError("BatchNorm without affine weight has no scale to score")
    return bn.weight.detach().float().abs()
