"""The five transfer methods: what each freezes, reuses and re-makes, and how it trains."""

import pytest
import torch
from torch import nn

from augserve.kernels.serialize import load_compressed
from augserve.server.errors import FailedPrecondition
from augserve.server.jobs.cli import TRANSFER_METHODS as CLI_METHODS
from augserve.server.jobs.data import load_dataset
from augserve.server.jobs.execute import execute
from augserve.server.jobs.models import digits_net
from augserve.server.jobs.progress import Context
from augserve.server.jobs.specs import (
    TRANSFER_METHODS,
    JobSpec,
    JobSpecError,
    ModelRef,
    Transfer,
)
from augserve.server.jobs.train import evaluate
from augserve.server.jobs.transfer import FROZEN_METHODS, build, run_transfer

SHAPE = (3, 8, 8)


def _source(classes=5):
    torch.manual_seed(0)
    model = digits_net(classes, 4, hidden=8)
    for m in model.modules():  # BN statistics that a train-mode pass would change
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model


def _fresh(classes=5):
    return digits_net(classes, 4, hidden=8)


def test_the_cli_offers_exactly_the_spec_methods():
    assert CLI_METHODS == TRANSFER_METHODS
    with pytest.raises(JobSpecError, match=r"transfer\.method must be one of"):
        Transfer("feature")  # the old names are gone, with no aliases


@pytest.mark.parametrize("method", TRANSFER_METHODS)
def test_each_method_builds_and_trains_one_epoch_at_k_1(method):
    data = load_dataset("digits_5_9_few")
    few = type(data)(data.name, data.train_x[::20], data.train_y[::20], data.test_x[:50],
                     data.test_y[:50], 5, "k=1")
    assert sorted(few.train_y.tolist()) == [0, 1, 2, 3, 4]
    model = run_transfer(_source(), Transfer(method, epochs=1, augment=True), few,
                         Context(), _fresh())
    assert model(torch.zeros(2, *SHAPE)).shape == (2, 5)
    assert 0.0 <= evaluate(model, few.test_x, few.test_y) <= 1.0


@pytest.mark.parametrize("method", FROZEN_METHODS)
def test_frozen_methods_leave_the_backbone_unchanged(method):
    source = _source()
    data = load_dataset("digits_5_9_few")
    model = run_transfer(source, Transfer(method, epochs=2, lr=0.1), data, Context(), _fresh())
    before = source.features.state_dict()
    after = model.features.state_dict()
    assert set(after) == set(before)  # no weights appear or vanish (pooling has none)
    for key, value in before.items():
        torch.testing.assert_close(after[key], value, rtol=0, atol=0, msg=key)
    assert not any(p.requires_grad for p in model.features.parameters())
    assert all(p.requires_grad for p in model.fc.parameters())


def test_full_finetune_trains_the_backbone_too():
    source = _source()
    model = run_transfer(source, Transfer("full_finetune", epochs=1), load_dataset(
        "digits_5_9_few"), Context(), _fresh())
    assert not torch.equal(model.features[0].weight, source.features[0].weight)


def test_feature_extraction_drops_the_pooling_and_gap_transfer_keeps_it():
    source = _source()
    flat = build(source, Transfer("feature_extraction"), 5, _fresh(), SHAPE)
    gap = build(source, Transfer("gap_transfer"), 5, _fresh(), SHAPE)
    # width 4: 2 * 4 channels of 4 x 4 conv maps, against 8 pooled features
    assert isinstance(flat.fc, nn.Linear) and flat.fc.in_features == 8 * 4 * 4
    assert isinstance(gap.fc, nn.Linear) and gap.fc.in_features == 8
    assert not any(isinstance(m, nn.AdaptiveAvgPool2d) for m in flat.modules())
    assert any(isinstance(m, nn.AdaptiveAvgPool2d) for m in source.modules())  # a copy


def test_fc_transfer_starts_from_the_source_fc_weights():
    source = _source()
    same = build(source, Transfer("fc_transfer"), 5, _fresh(), SHAPE)
    for key, value in source.fc.state_dict().items():  # every layer, the last one too
        torch.testing.assert_close(same.fc.state_dict()[key], value, rtol=0, atol=0)
    more = build(source, Transfer("fc_transfer"), 7, _fresh(7), SHAPE)
    torch.testing.assert_close(more.fc[0].weight, source.fc[0].weight, rtol=0, atol=0)
    assert more.fc[2].out_features == 7  # the last Linear re-made for 7 classes


def test_scratch_is_the_fresh_model():
    fresh = _fresh()
    assert build(_source(), Transfer("scratch"), 5, fresh, SHAPE) is fresh


def test_a_source_without_pooling_or_head_is_a_failed_precondition():
    flat = nn.Sequential(nn.Flatten(), nn.Linear(192, 5))
    with pytest.raises(FailedPrecondition, match="fully-connected head `fc`"):
        build(flat, Transfer("gap_transfer"), 5, _fresh(), SHAPE)

    class NoPool(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten())
            self.fc = nn.Linear(144, 5)

        def forward(self, x):
            return self.fc(self.features(x))

    with pytest.raises(FailedPrecondition, match="no AdaptiveAvgPool2d"):
        build(NoPool(), Transfer("feature_extraction"), 5, _fresh(), SHAPE)
    with pytest.raises(FailedPrecondition, match="no AdaptiveAvgPool2d"):
        build(NoPool(), Transfer("gap_transfer"), 5, _fresh(), SHAPE)


def test_a_feature_extraction_version_reloads_as_it_was_trained(tmp_path):
    torch.save(_source().state_dict(), tmp_path / "source.pth")
    ref = ModelRef(state_dict=str(tmp_path / "source.pth"),
                   architecture_kwargs={"width": 4, "hidden": 8})
    spec = JobSpec(ref, (Transfer("feature_extraction", epochs=2),), "digits_5_9_few",
                   str(tmp_path), "flat", measure_latency=False)
    result = execute(spec, Context())
    model = load_compressed(tmp_path / "flat" / "1" / "compressed")
    assert model.fc.in_features == 8 * 4 * 4
    data = load_dataset("digits_5_9_few")
    assert evaluate(model, data.test_x, data.test_y) == result.card["accuracy"]["after"]
