"""`augserve bench augment --device cuda` on a CPU-only machine.

Without CUDA it exits at once with one line; its harness takes any device, so here it
runs on the CPU on a small batch: the report's keys and ratios, the synchronisation
around every timed call, the kornia call against `Pipeline`, and the DALI pipeline on
the CPU where `nvidia.dali` is installed (an optional dependency: `nvidia-dali-cuda120`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from augserve.server.augment.pipeline import IMAGENET_TRAIN, Pipeline
from augserve.server.bench import augment, augment_gpu
from augserve.server.cli import main

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    return augment.load_photos()


def test_without_cuda_the_bench_exits_with_one_line():
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(
        [sys.executable, "-m", "augserve.server.cli", "bench", "augment", "--device", "cuda"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.splitlines() == [augment_gpu.NO_CUDA]
    assert done.stdout == ""


def test_without_cuda_nothing_is_loaded_before_the_exit(monkeypatch):
    def load_photos(*_args):
        raise AssertionError("photos loaded before the CUDA check")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(augment, "load_photos", load_photos)
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "augment", "--device", "cuda", "--quick"])
    assert exit_.value.code == augment_gpu.NO_CUDA  # sys.exit(str): that line, status 1


def test_ratios_divide_the_named_rates():
    rates = {"fast_cpu": 100.0, "kornia_cuda": 400.0, "dali_gpu": 250.0}
    assert augment_gpu.ratios(rates, "kornia_cuda", "dali_gpu") == {
        "kornia_cuda_over_fast_cpu": 4.0,
        "kornia_cuda_over_dali_gpu": 1.6,
        "dali_gpu_over_fast_cpu": 2.5,
    }
    without_dali = {"fast_cpu": 100.0, "kornia_cuda": 400.0}
    assert augment_gpu.ratios(without_dali, "kornia_cuda", "dali_gpu") == {
        "kornia_cuda_over_fast_cpu": 4.0
    }


def test_every_timed_call_is_between_two_syncs_after_the_warmup():
    events: list[str] = []
    calls = {"a": lambda: events.append("a"), "b": lambda: events.append("b")}
    rates = augment_gpu.time_rounds(calls, n=10, rounds=2, warmup=2,
                                    sync=lambda: events.append("sync"))
    warmup = ["a", "a", "b", "b", "sync"]
    timed = ["sync", "a", "sync", "sync", "b", "sync"] * 2
    assert events == warmup + timed
    assert set(rates) == {"a", "b"} and all(rate > 0 for rate in rates.values())


def test_the_kornia_call_is_the_pipelines_kornia_backend(photos):
    batch = photos[:3]
    got = augment_gpu.kornia_call(batch, CPU)()  # its first call draws with seed 0
    want = Pipeline(IMAGENET_TRAIN, backend="kornia")(batch, seed=0).images
    assert got.shape == (3, 3, 224, 224)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_the_report_on_the_cpu_without_dali(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "nvidia.dali", None)  # its import now fails
    report = augment_gpu.compare(CPU, batch_size=4, rounds=2, warmup=1, cpu_threads=1)
    [line] = capsys.readouterr().out.splitlines()
    assert line.startswith("DALI skipped: nvidia.dali does not import (")
    out = tmp_path / "augment_gpu.json"
    report.write_json(out)
    payload = json.loads(out.read_text())
    figures, ratios = payload["figures"], payload["ratios"]
    assert set(ratios) == {"kornia_cpu_over_fast_cpu"}
    assert ratios["kornia_cpu_over_fast_cpu"] == pytest.approx(
        figures["kornia_cpu_images_per_s"] / figures["fast_cpu_images_per_s"]
    )
    assert figures["fast_cpu_images_per_s"] > 0 and figures["kornia_cpu_images_per_s"] > 0
    assert (figures["batch"], figures["rounds"], figures["warmup"]) == (4, 2, 1)
    assert payload["environment"]["device"] == "cpu"
    assert payload["environment"]["dali"] == "not importable: skipped"


def test_the_dali_pipeline_runs_on_the_cpu_on_the_same_photos(photos):
    pytest.importorskip("nvidia.dali")
    batch = [photos[i % len(photos)] for i in range(8)]
    (out,) = augment_gpu.dali_pipeline(batch, device_id=None).run()
    images = np.asarray(out.as_tensor())
    assert images.shape == (8, 3, 224, 224) and images.dtype == np.float32
    # normalised with ImageNet's mean and std: within (0 - mean) / std .. (1 - mean) / std
    low = min((0 - m) / s for m, s in zip(augment.MEAN, augment.STD, strict=True))
    high = max((1 - m) / s for m, s in zip(augment.MEAN, augment.STD, strict=True))
    assert low - 1e-4 <= images.min() and images.max() <= high + 1e-4
    assert len({images[i].tobytes() for i in range(8)}) == 8  # each sample its own draw


def test_the_dali_bench_call_reports_dali_ratios(photos):
    pytest.importorskip("nvidia.dali")
    report = augment_gpu.compare(CPU, batch_size=4, rounds=1, warmup=1, cpu_threads=1)
    assert set(report.ratios) == {
        "kornia_cpu_over_fast_cpu", "kornia_cpu_over_dali_cpu", "dali_cpu_over_fast_cpu",
    }  # fmt: skip
    assert report.figures["dali_cpu_images_per_s"] > 0
