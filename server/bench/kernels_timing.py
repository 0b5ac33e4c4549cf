"""Timing helpers for `augserve bench kernels`: interleaved rounds, medians, paired ratios.

This machine is shared, so the load changes from second to second. Every round calls each
candidate once, back to back; a ratio is the median over rounds of the per-round ratio,
so both sides of a comparison always saw the same load.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping


def interleaved_samples(
    candidates: Mapping[str, Callable[[], object]], repeats: int, warmup: int = 2,
    budget_s: float | None = None,
) -> dict[str, list[float]]:
    """Seconds per call of each candidate, one sample per round, timed round-robin.

    Args:
        candidates: name -> zero-argument callable.
        repeats: timed rounds (each round calls every candidate once).
        warmup: untimed calls of each candidate first.
        budget_s: stop early (after at least 5 rounds) once this much time is spent.
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
        if budget_s is not None and round_index >= 4 and time.perf_counter() - start > budget_s:
            break
    return samples


def medians(samples: Mapping[str, list[float]]) -> dict[str, float]:
    """The median of each candidate's samples."""
    return {name: statistics.median(values) for name, values in samples.items()}


def paired_ratio(samples: Mapping[str, list[float]], baseline: str, ours: str) -> float:
    """Median over rounds of baseline_time / ours_time (> 1 means ours is faster)."""
    pairs = zip(samples[baseline], samples[ours], strict=True)
    return statistics.median(b / o for b, o in pairs)
