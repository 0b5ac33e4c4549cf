"""Dependency groups and physical channel removal: residuals, concatenation, flatten."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from augserve.kernels.prune import ChannelGraph, PrunePlan, mask_modules
from augserve.kernels.zoo import resnet18, resnet20


def _randomize_bn(model: nn.Module) -> nn.Module:
    torch.manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_()
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def _prune_and_mask(model: nn.Module, x: torch.Tensor, ratio: float, criterion: str = "l1"):
    graph = ChannelGraph(model, (x[:1],))
    plan = graph.plan(ratio, criterion)
    masked = mask_modules(copy.deepcopy(model), graph.removed(plan))
    removed = graph.removed(plan)
    graph.apply(plan)
    return removed, masked


@torch.no_grad()
@pytest.mark.parametrize("criterion", ["l1", "bn"])
def test_resnet20_pruned_equals_masked_original(criterion):
    model = _randomize_bn(resnet20())
    x = torch.randn(4, 3, 32, 32)
    before = sum(p.numel() for p in model.parameters())
    _, masked = _prune_and_mask(model, x, 0.5, criterion)
    torch.testing.assert_close(model(x), masked(x), rtol=1e-4, atol=1e-5)
    assert sum(p.numel() for p in model.parameters()) < 0.3 * before
    # channels tied by the residual additions were pruned together
    stage = model.stages[0]
    widths = {model.stem[0].out_channels, stage[0].conv2.out_channels, stage[2].conv2.out_channels}
    assert widths == {8}
    assert model.fc.in_features == model.stages[2][2].conv2.out_channels == 32


@torch.no_grad()
def test_resnet20_kept_channel_features_match():
    model = _randomize_bn(resnet20())
    x = torch.randn(2, 3, 32, 32)
    removed, masked = _prune_and_mask(model, x, 0.5)
    kept = [i for i in range(64) if i not in removed[("fc", "in")]]
    assert len(kept) == 32
    torch.testing.assert_close(model.features(x), masked.features(x)[:, kept], rtol=1e-4, atol=1e-5)


@torch.no_grad()
def test_resnet18_groups_and_pruned_model():
    model = _randomize_bn(resnet18(num_classes=10))
    x = torch.randn(1, 3, 64, 64)
    graph = ChannelGraph(model, (x,))
    residual = next(
        g for g in graph.groups if any(d.node.name == "stem.0" and d.dim == "out" for d in g.deps)
    )
    names = {d.node.name for d in residual.deps}
    assert {"stem.0", "stem.1", "stages.0.0.conv2", "stages.0.1.conv2", "stages.1.0.conv1"} <= names
    frozen = [g for g in graph.groups if not g.prunable]
    assert {d.node.name for g in frozen for d in g.deps} == {"stem.0", "fc"}  # input, output
    plan = graph.plan(0.5)
    masked = mask_modules(copy.deepcopy(model), graph.removed(plan))
    graph.apply(plan)
    with pytest.raises(ValueError, match="already applied"):
        graph.plan(0.5)
    torch.testing.assert_close(model(x), masked(x), rtol=1e-4, atol=1e-4)
    assert model.stages[3][1].conv2.out_channels == 256


class _CatNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(3, 6, 1)
        self.bn = nn.BatchNorm2d(14)
        self.c = nn.Conv2d(14, 10, 3, padding=1)
        self.fc = nn.Linear(10 * 4 * 4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn(torch.cat([self.a(x), self.b(x)], dim=1)))
        y = torch.nn.functional.adaptive_avg_pool2d(self.c(y), 4)
        return self.fc(torch.flatten(y, 1))


@torch.no_grad()
def test_concat_and_flatten_offsets():
    model = _randomize_bn(_CatNet())
    x = torch.randn(2, 3, 8, 8)
    _, masked = _prune_and_mask(model, x, 0.5)
    assert (model.a.out_channels, model.b.out_channels) == (4, 3)
    assert model.bn.num_features == model.c.in_channels == 7
    assert model.fc.in_features == 5 * 16  # flatten repeats each channel 16 times
    torch.testing.assert_close(model(x), masked(x), rtol=1e-4, atol=1e-5)


def test_plan_check_rejects_bad_plans():
    model = resnet20().eval()
    graph = ChannelGraph(model, (torch.randn(1, 3, 32, 32),))
    frozen = next(i for i, g in enumerate(graph.groups) if not g.prunable)
    prunable = next(i for i, g in enumerate(graph.groups) if g.prunable)
    with pytest.raises(ValueError, match="frozen"):
        graph.check(PrunePlan(((frozen, (0,)),)))
    with pytest.raises(ValueError, match="sorted"):
        graph.check(PrunePlan(((prunable, (3, 1)),)))
    with pytest.raises(ValueError, match="ratio"):
        graph.plan(1.0)
    assert hash(graph.groups[prunable]) == hash(copy.deepcopy(graph.groups[prunable]))


def test_round_to_keeps_multiples():
    model = resnet20().eval()
    graph = ChannelGraph(model, (torch.randn(1, 3, 32, 32),))
    plan = graph.plan(0.7, round_to=8)
    assert all(len(kept) % 8 == 0 for _, kept in plan.keep)


class _DepthwiseNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.bn2 = nn.BatchNorm2d(16)
        self.pw = nn.Conv2d(16, 8, 1)
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(8 * 4 * 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn(self.a(x)))
        y = torch.relu(self.bn2(self.dw(y)))
        return self.fc(self.flatten(self.pool(self.pw(y))))


@torch.no_grad()
def test_depthwise_conv_follows_its_input_group():
    model = _randomize_bn(_DepthwiseNet())
    x = torch.randn(2, 3, 8, 8)
    _, masked = _prune_and_mask(model, x, 0.5)
    assert (model.dw.in_channels, model.dw.out_channels, model.dw.groups) == (8, 8, 8)
    assert (model.pw.in_channels, model.fc.in_features) == (8, 4 * 16)
    torch.testing.assert_close(model(x), masked(x), rtol=1e-4, atol=1e-5)
