"""`augserve bench augment --device cuda` on a CUDA device: its report and its kornia call.

Skipped without one; `.ci/gpu` runs this beside the full bench.
"""

from __future__ import annotations

import json

import pytest
import torch

from augserve.server.bench import augment, augment_gpu
from augserve.server.cli import main

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device (.ci/gpu runs these on one)"
)


def test_the_quick_bench_writes_the_cuda_ratios(tmp_path):
    out = tmp_path / "augment_gpu.json"
    assert main(["bench", "augment", "--device", "cuda", "--quick", "--json", str(out)]) == 0
    payload = json.loads(out.read_text())
    assert payload["ratios"]["kornia_cuda_over_fast_cpu"] == pytest.approx(
        payload["figures"]["kornia_cuda_images_per_s"] / payload["figures"]["fast_cpu_images_per_s"]
    )
    assert payload["environment"]["device"] == torch.cuda.get_device_name()


def test_the_kornia_call_on_cuda_matches_it_on_the_cpu():
    batch = augment.load_photos()[:4]
    got = augment_gpu.kornia_call(batch, torch.device("cuda"))()  # both draw with seed 0
    want = augment_gpu.kornia_call(batch, torch.device("cpu"))()
    assert got.device.type == "cpu" and got.shape == want.shape == (4, 3, 224, 224)
    # float32 rounding only: within 0.05 uint8 steps once the normalisation's std is undone
    std = torch.tensor(augment.STD).view(1, 3, 1, 1)
    assert float(((got - want) * std * 255).abs().max()) <= 0.05
