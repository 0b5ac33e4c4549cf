"""compress_ with each config; unknown configs; config validation."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from augserve.kernels.compress import (
    ChannelPruneConfig,
    Int8Config,
    MagnitudePruneConfig,
    NMSparseConfig,
    WeightOnlyConfig,
    compress_,
)
from augserve.kernels.quant import Int4WeightOnlyLinear, Int8Conv2d, Int8Linear
from augserve.kernels.zoo import digits_cnn, resnet20


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@torch.no_grad()
def test_int8_config_swaps_modules_and_stays_close():
    model = digits_cnn().eval()
    x = torch.rand(8, 1, 8, 8)
    ref = model(x)
    compress_(model, Int8Config())
    assert isinstance(model.fc, Int8Linear) and isinstance(model.features[0], Int8Conv2d)
    assert _rel(model(x), ref) < 0.05


@torch.no_grad()
def test_channel_prune_config_shrinks_resnet20():
    model = resnet20().eval()
    before = sum(p.numel() for p in model.parameters())
    compress_(model, ChannelPruneConfig(0.5, (1, 3, 32, 32)))
    assert sum(p.numel() for p in model.parameters()) < 0.3 * before
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


@torch.no_grad()
def test_nm_and_magnitude_configs():
    model = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4))
    nm = compress_(copy.deepcopy(model), NMSparseConfig(2, 4))
    assert torch.all((nm[0].weight.reshape(-1, 4) != 0).sum(1) <= 2)
    mag = compress_(copy.deepcopy(model), MagnitudePruneConfig(0.75, global_threshold=False))
    assert int((mag[0].weight == 0).sum()) == 96


@torch.no_grad()
def test_weight_only_config_int4():
    model = nn.Sequential(nn.Linear(128, 32), nn.ReLU(), nn.Linear(32, 4))
    compress_(model, WeightOnlyConfig(bits=4, group_size=32))
    assert isinstance(model[0], Int4WeightOnlyLinear) and isinstance(model[2], Int4WeightOnlyLinear)
    assert model(torch.randn(1, 128)).shape == (1, 4)


def test_unknown_config_lists_known_ones():
    @dataclass(frozen=True)
    class Mystery:
        level: int = 1

    with pytest.raises(TypeError, match=r"ChannelPruneConfig.*Int8Config"):
        compress_(nn.Linear(2, 2), Mystery())


def test_configs_validate_user_input():
    with pytest.raises(ValueError, match="ratio"):
        ChannelPruneConfig(ratio=1.5)
    with pytest.raises(ValueError, match="bits"):
        WeightOnlyConfig(bits=3)
    with pytest.raises(ValueError, match="criterion"):
        ChannelPruneConfig(criterion="random")
