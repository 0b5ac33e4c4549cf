"""Batch folding (`quant.fold`): exact against the unfolded model, refuses what it cannot fold."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from augserve.kernels.compress import ChannelPruneConfig, compress_
from augserve.kernels.quant.fold import (
    ONEDNN_BLOCK,
    BatchFolded,
    auto_fold_factor,
    fold_batch,
    foldable,
    narrowest_conv_width,
    pad_batch,
)
from augserve.kernels.zoo import DigitsCNN, resnet20


def _randomize_bn(model: nn.Module) -> nn.Module:
    # Default BN statistics (0 / 1) would hide a wrong repeat of them.
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return model


@torch.no_grad()
@pytest.mark.parametrize("factor", [2, 4])
def test_folded_pruned_resnet20_equals_the_original(factor):
    torch.manual_seed(0)
    model = compress_(_randomize_bn(resnet20()).eval(), ChannelPruneConfig(0.5, (1, 3, 32, 32)))
    folded = fold_batch(model, factor).eval()
    assert isinstance(folded, BatchFolded) and folded.factor == factor
    x = torch.randn(8, 3, 32, 32)
    torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-5)
    conv = folded.inner.stem[0]
    assert conv.groups == factor and conv.out_channels == factor * model.stem[0].out_channels
    # The original is untouched.
    assert model.stem[0].groups == 1


@torch.no_grad()
def test_folded_digits_cnn_with_mlp_head_and_conv_bias_equals_the_original():
    torch.manual_seed(0)
    model = _randomize_bn(DigitsCNN(width=8, hidden=16)).eval()
    x = torch.rand(6, 1, 8, 8)
    torch.testing.assert_close(fold_batch(model, 2)(x), model(x), rtol=1e-4, atol=1e-5)


def test_auto_factor_folds_only_narrow_convs_and_refuses_unknown_parameters():
    pruned = compress_(resnet20().eval(), ChannelPruneConfig(0.5, (1, 3, 32, 32)))
    folds = 2 if ONEDNN_BLOCK == 16 else 1  # AVX-512 blocks are 16 channels, AVX2's 8
    assert narrowest_conv_width(pruned) == 8 and auto_fold_factor(pruned) == folds
    assert narrowest_conv_width(resnet20()) == 16 and auto_fold_factor(resnet20()) == 1
    assert narrowest_conv_width(nn.Linear(3, 3)) is None and auto_fold_factor(nn.Linear(3, 3)) == 1

    odd = nn.Sequential(nn.Conv2d(3, 8, 3), nn.GroupNorm(2, 8))
    assert not foldable(odd) and auto_fold_factor(odd) == 1
    with pytest.raises(ValueError, match="GroupNorm"):
        fold_batch(odd, 2)
    with pytest.raises(ValueError, match="factor"):
        fold_batch(pruned, 1)


def test_pad_batch_repeats_the_last_row():
    x = torch.arange(3.0).reshape(3, 1)
    assert pad_batch(x, 2).flatten().tolist() == [0.0, 1.0, 2.0, 2.0]
    assert pad_batch(x, 3) is x
    assert pad_batch(x[:1], 4).flatten().tolist() == [0.0] * 4
