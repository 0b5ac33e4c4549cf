"""What a model card reports: accuracy, parameters, MACs, size on disk, latency b1 / b32."""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from augserve.kernels.serialize import save_compressed
from augserve.server.jobs.data import Dataset
from augserve.server.jobs.models import count_macs, count_params
from augserve.server.jobs.train import evaluate


@dataclass(frozen=True)
class Measures:
    """One model's figures.

    Attributes:
        accuracy: top-1 on the dataset's held-out split.
        params: parameter (and weight buffer) count.
        macs: multiply-accumulates per image (of the float model; 0 if unknown).
        size_bytes: the served version's files (`compressed/` folder) in bytes.
        latency_b1_ms, latency_b32_ms: median forward time at batch 1 and 32 (-1: skipped).
        package_bytes: for a static int8 model, the compiled int8 package (0 otherwise).
    """

    accuracy: float
    params: int
    macs: int
    size_bytes: int
    latency_b1_ms: float
    latency_b32_ms: float
    package_bytes: int = 0

    def as_dict(self) -> dict[str, Any]:
        """The figures as a plain dict."""
        return asdict(self)


def folder_bytes(path: str | os.PathLike[str]) -> int:
    """Total size of the files under `path`."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def saved_bytes(
    model: nn.Module, spec: Mapping[str, Any], calibration: torch.Tensor | None = None
) -> int:
    """The size `save_compressed` gives `model` on disk (written to a temporary folder)."""
    with tempfile.TemporaryDirectory(prefix="augserve-size-") as tmp:
        save_compressed(model, Path(tmp) / "compressed", spec, calibration)
        return folder_bytes(tmp)


def latency_ms(
    model: nn.Module, input_shape: tuple[int, ...], batch: int, repeats: int = 50,
    budget_s: float = 2.0,
) -> float:
    """Median wall time of one forward pass at `batch`, in ms (after 5 warm-up passes).

    Stops early after `budget_s` seconds of timed passes (at least 5 are timed).
    """
    x = torch.rand(batch, *input_shape)
    times: list[float] = []
    with torch.inference_mode():
        for _ in range(5):
            model(x)
        start = time.perf_counter()
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t0)
            if len(times) >= 5 and time.perf_counter() - start > budget_s:
                break
    return 1000 * statistics.median(times)


def measure(
    runnable: nn.Module, saved: nn.Module, spec: Mapping[str, Any], data: Dataset,
    calibration: torch.Tensor | None = None, latency: bool = True, macs_of: nn.Module | None = None,
    size_bytes: int | None = None,
) -> Measures:
    """Measure a model.

    Args:
        runnable: what serves (e.g. the compiled int8 model): accuracy and latency.
        saved: what `save_compressed` writes: size and parameters.
        spec: the `save_compressed` spec (architecture, kwargs, quantization).
        data: accuracy is on its held-out split.
        calibration: the calibration batch saved with a static int8 model.
        latency: time batch 1 and 32 (else -1).
        macs_of: the float model to count MACs on (default `saved`).
        size_bytes: the size on disk when it is known (an exported source's files), so
            `saved` is not written to measure it.
    """
    shape = data.input_shape
    float_model = macs_of if macs_of is not None else saved
    try:
        macs = count_macs(float_model, (1, *shape))
    except Exception:  # int8 eager modules are not counted; report 0, not a crash
        macs = 0
    package = getattr(runnable, "package_path", None)
    return Measures(
        accuracy=evaluate(runnable, data.test_x, data.test_y),
        params=count_params(saved),
        macs=macs,
        size_bytes=saved_bytes(saved, spec, calibration) if size_bytes is None else size_bytes,
        latency_b1_ms=latency_ms(runnable, shape, 1) if latency else -1.0,
        latency_b32_ms=latency_ms(runnable, shape, 32) if latency else -1.0,
        package_bytes=Path(package).stat().st_size if package else 0,
    )
