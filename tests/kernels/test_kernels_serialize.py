"""save_compressed / load_compressed round trips (weights-only, no pickle)."""

from __future__ import annotations

import json

import pytest
import torch

from augserve.kernels.compress import ChannelPruneConfig, Int8Config, compress_
from augserve.kernels.resolve import AllowList, ImportRefused
from augserve.kernels.serialize import load_compressed, save_compressed
from augserve.kernels.zoo import resnet20

SPEC = {"architecture": "augserve.kernels.zoo:resnet20", "kwargs": {"num_classes": 10}}


@torch.no_grad()
def test_pruned_resnet20_round_trip(tmp_path):
    model = compress_(resnet20().eval(), ChannelPruneConfig(0.5, (1, 3, 32, 32)))
    save_compressed(model, tmp_path, SPEC)
    spec = json.loads((tmp_path / "spec.json").read_text())
    assert spec["format"] == "augserve_compressed"
    assert spec["modules"]["stem.0"]["args"]["out_channels"] == 8
    loaded = load_compressed(tmp_path)
    x = torch.randn(3, 3, 32, 32)
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


@torch.no_grad()
def test_pruned_and_int8_resnet20_round_trip(tmp_path):
    model = compress_(resnet20().eval(), ChannelPruneConfig(0.5, (1, 3, 32, 32)))
    compress_(model, Int8Config())
    save_compressed(model, tmp_path, {**SPEC, "quantization": {"method": "int8_modules"}})
    loaded = load_compressed(tmp_path)
    assert type(loaded.fc).__name__ == "Int8Linear"
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_refuses_architectures_outside_augserve(tmp_path):
    save_compressed(resnet20(), tmp_path, SPEC)
    spec = json.loads((tmp_path / "spec.json").read_text())
    spec["architecture"] = "os:system"
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    with pytest.raises(ImportRefused, match=r"architecture: 'os:system' is outside the allowed "
                                            r"modules \(augserve, torchvision.models\)"):
        load_compressed(tmp_path)


def test_an_extra_prefix_allows_an_operators_architecture(tmp_path):
    save_compressed(torch.nn.Identity(), tmp_path, {"architecture": "torch.nn:Identity"})
    with pytest.raises(ImportRefused, match="outside"):
        load_compressed(tmp_path)
    loaded = load_compressed(tmp_path, imports=AllowList().with_extra(["torch.nn"]))
    assert type(loaded) is torch.nn.Identity


def test_pt2e_spec_requires_calibration(tmp_path):
    with pytest.raises(ValueError, match="calibration"):
        spec = {**SPEC, "quantization": {"method": "pt2e_x86_inductor"}}
        save_compressed(resnet20(), tmp_path, spec)
