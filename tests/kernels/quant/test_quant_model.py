"""Whole-model int8 (PT2E + AOTInductor): accuracy vs fp32, compile cache, serving format."""

from __future__ import annotations

import torch

from augserve.kernels.compress import ChannelPruneConfig, compress_
from augserve.kernels.quant.model import CompiledModel, ModelInt8Config, quantize_model
from augserve.kernels.serialize import load_compressed, save_compressed
from augserve.kernels.zoo import digits_cnn, resnet20


@torch.no_grad()
def test_pruned_pt2e_int8_model_saves_compiles_once_and_serves(tmp_path):
    torch.manual_seed(0)
    model = compress_(digits_cnn().eval(), ChannelPruneConfig(0.5, (1, 1, 8, 8)))
    calibration = torch.rand(16, 1, 8, 8)
    spec = {
        "architecture": "augserve.kernels.zoo:digits_cnn",
        "quantization": {"method": "pt2e_x86_inductor", "max_batch": 64},
    }
    save_compressed(model, tmp_path / "model", spec, calibration)
    cache = tmp_path / "cache"

    cold = load_compressed(tmp_path / "model", cache_dir=cache)
    warm = load_compressed(tmp_path / "model", cache_dir=cache)  # a restart
    assert isinstance(cold, CompiledModel) and not cold.cache_hit and warm.cache_hit
    assert warm.load_seconds < 0.25 * cold.load_seconds
    assert len(list((cache / "aoti").glob("*.pt2"))) == 1

    x = torch.rand(5, 1, 8, 8)  # a batch size it was not calibrated with
    ref = model(x)
    got = warm(x)
    torch.testing.assert_close(got, cold(x))
    assert float((got - ref).norm() / ref.norm()) < 0.05
    assert warm(x[:1]).shape == (1, 10)


def test_config_validates_and_cache_key_follows_weights(tmp_path):
    import pytest

    with pytest.raises(ValueError, match="max_batch"):
        ModelInt8Config(max_batch=1)
    from augserve.kernels.quant.model import _digest

    model, x = resnet20().eval(), torch.randn(2, 3, 32, 32)
    config = ModelInt8Config(cache_dir=str(tmp_path))
    key = _digest(model, (x,), config)
    with torch.no_grad():
        model.fc.bias.add_(1.0)
    assert _digest(model, (x,), config) != key
    assert _digest(model, (x,), config) == _digest(model, (x,), config)
    assert quantize_model.__doc__


@torch.no_grad()
def test_narrow_model_compiles_batch_folded_and_serves_odd_batches(tmp_path):
    torch.manual_seed(0)
    model = compress_(resnet20().eval(), ChannelPruneConfig(0.5, (1, 3, 32, 32)))
    calibration = torch.randn(7, 3, 32, 32)  # odd: padded to the fold
    config = ModelInt8Config(cache_dir=str(tmp_path), batch_fold=2)  # auto: AVX-512 only
    compiled = quantize_model(model, (calibration,), config)
    assert compiled.batch_fold == 2
    for n in (1, 3, 32):
        x = torch.randn(n, 3, 32, 32)
        ref, got = model(x), compiled(x)
        assert got.shape == (n, 10)
        assert float((got - ref).norm() / ref.norm()) < 0.05
    from augserve.kernels.quant.model import _digest

    # folded and unfolded packages are cached apart (the unfolded compile: the other tests)
    assert compiled.package_path.name.startswith(_digest(model, (calibration,), config, 2))
    assert _digest(model, (calibration,), config, 1) != _digest(model, (calibration,), config, 2)


@torch.no_grad()
def test_a_static_batch_gets_its_own_package_and_the_same_answers(tmp_path):
    import pytest

    with pytest.raises(ValueError, match="static_batches"):
        ModelInt8Config(max_batch=8, static_batches=(9,))
    torch.manual_seed(1)
    model = digits_cnn().eval()
    calibration = torch.rand(6, 1, 8, 8)  # fewer rows than the static batch: repeated
    spec = {
        "architecture": "augserve.kernels.zoo:digits_cnn",
        "quantization": {"method": "pt2e_x86_inductor", "max_batch": 64},
    }
    save_compressed(model, tmp_path / "model", spec, calibration)
    cache = tmp_path / "cache"
    cold = load_compressed(tmp_path / "model", cache_dir=cache, static_batches=(8, 512))
    assert set(cold.static) == {8} and not cold.cache_hit  # 512 > max_batch: left out
    assert len(list((cache / "aoti").glob("*.pt2"))) == 2
    warm = load_compressed(tmp_path / "model", cache_dir=cache, static_batches=(8,))
    assert warm.cache_hit and set(warm.static) == {8}
    plain = load_compressed(tmp_path / "model", cache_dir=cache)
    assert plain.cache_hit and plain.static == {}
    x = torch.rand(8, 1, 8, 8)
    got, dynamic = warm(x), plain(x)
    torch.testing.assert_close(got, dynamic, rtol=1e-4, atol=1e-4)
    ref = model(x)
    assert float((got - ref).norm() / ref.norm()) < 0.05
    assert warm(x[:3]).shape == (3, 10)  # other sizes: the dynamic package


@torch.no_grad()
def test_one_channel_models_compile_widened_and_match_fp32_at_every_batch(tmp_path):
    from torch import nn

    from augserve.kernels.quant.single_channel import widen_single_channel

    torch.manual_seed(2)
    model = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 64, 10),
    ).eval()
    calibration = torch.rand(32, 1, 8, 8)
    widened = widen_single_channel(model, calibration)
    assert widened is not None and torch.allclose(widened(calibration), model(calibration))
    assert widen_single_channel(resnet20().eval(), torch.rand(2, 3, 32, 32)) is None
    compiled = quantize_model(model, (calibration,), ModelInt8Config(cache_dir=str(tmp_path)))
    for n in (1, 5, 32):  # before the widening: 115% off fp32 (a dynamic-batch package bug)
        x = torch.rand(n, 1, 8, 8)
        ref = model(x)
        assert float((compiled(x) - ref).norm() / ref.norm()) < 0.05
