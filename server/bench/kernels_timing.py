"""Timing helpers for `augserve bench kernels`: interleaved runs, medians."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping


def interleaved_medians(
    candidates: Mapping[str, Callable[[], object]], repeats: int, warmup: int = 2,
    budget_s: float | None = None,
) -> dict[str, float]:
    """Median seconds per call of each candidate, timed round-robin so noise hits all alike.

    Args:
        candidates: name -> zero-argument callable.
        repeats: timed rounds (each round calls every candidate once).
        warmup: untimed calls of each candidate first.
        budget_s: stop early (after at least 3 rounds) once this much time is spent.
    """
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    start = time.perf_counter()
    for round_index in range(repeats):
        for name, fn in candidates.items():
            t0 = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - t0)
        if budget_s is not None and round_index >= 2 and time.perf_counter() - start > budget_s:
            break
    return {name: statistics.median(values) for name, values in samples.items()}
