"""Smoke tests of `augserve bench infer`: the report's keys, and the load generator's summary."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

from augserve.server.bench import infer_report
from augserve.server.bench.h2load import h2load_path
from augserve.server.bench.infer_report import targets
from augserve.server.bench.loadgen import summarize
from augserve.server.bench.report import BenchReport

RATIOS = ("served_vs_inprocess_c32", "p99_over_batch_compute_c32", "c1_p50_added_ms")


def _run_quick(tmp_path, *flags: str, timeout: float) -> tuple[dict, str]:
    out = tmp_path / "infer.json"
    command = [sys.executable, "-m", "augserve.server.cli", "bench", "infer", "--quick",
               "--baseline", "none", *flags, "--json", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "augserve bench infer" in result.stdout
    return json.loads(out.read_text()), result.stdout


def _check_every_ratio(report: dict, loadgen: str) -> None:
    assert report["environment"]["load_generator"] == loadgen
    for name in RATIOS:
        value = report["ratios"][name]
        assert math.isfinite(value), name
        comparison, threshold = report["targets"][name]
        assert (comparison, threshold) == targets(32)[name]
        met = value >= threshold if comparison == ">=" else value <= threshold
        assert report["targets_met"][name] is met, (name, value)
    figures = report["figures"]
    assert figures["augserve_c32_requests_per_s"] > 0
    assert figures["augserve_c1_p50_ms"] > 0
    # 32 requests outstanding on 2 replicas: the batcher must merge them (mean above 1),
    # and never beyond max_batch_size.
    assert 1 < figures["augserve_c32_mean_batch_size"] <= 32
    assert figures["inprocess_images_per_s"] > 0
    # the tail of the model's own batch time: the p99 of calls over their mean
    assert 0 < figures["inprocess_batch_p99_over_mean"] < math.inf


def test_summary_counts_only_the_measured_window():
    # Four calls: one in the warm-up, two inside [10, 20], one answered after the end.
    starts = np.array([9.0, 10.0, 15.0, 19.5])
    ends = np.array([10.5, 10.002, 15.004, 20.5])
    summary = summarize(starts, ends, (10.0, 20.0), Counter({"UNAVAILABLE": 1}))
    assert summary["completed"] == 3  # answers that arrived in the window
    assert summary["measured"] == 2  # calls both sent and answered in it
    assert summary["requests_per_s"] == 0.3
    assert math.isclose(summary["p50_ms"], 3.0)
    assert summary["errors"] == {"UNAVAILABLE": 1}


def test_summary_of_an_empty_window_has_no_percentiles():
    summary = summarize(np.array([]), np.array([]), (0.0, 1.0), Counter())
    assert summary["measured"] == 0
    assert "p50_ms" not in summary


def test_default_ratio_keys_keep_their_names():
    assert set(targets(32)) == {
        "served_vs_inprocess_c32", "served_vs_rayserve_c32", "p99_over_batch_compute_c32",
        "c1_p50_added_ms", "tls_auth_vs_plain_c32",
    }  # fmt: skip


def _phase(rate: float, p50: float, p99: float) -> dict:
    return {"requests_per_s": rate, "calls": 100, "p50_ms": p50, "p99_ms": p99,
            "cpu_ms_per_request": 0.1}  # fmt: skip


def test_quick_secured_run_with_h2load_writes_every_ratio(tmp_path):
    # One server start for both halves: plain rounds, then the TLS + token ones, both driven
    # by h2load (the Python load generator is run in tests/e2e/test_loadgen.py).
    if not h2load_path() and not os.environ.get("CI"):
        pytest.skip("h2load is not installed (apt install nghttp2-client); CI installs it")
    report, _ = _run_quick(tmp_path, "--tls", "--auth", "--loadgen", "h2load", timeout=180)
    assert set(report["ratios"]) == {*RATIOS, "tls_auth_vs_plain_c32"}  # no peer: none
    _check_every_ratio(report, "h2load")
    ratio = report["ratios"]["tls_auth_vs_plain_c32"]
    assert isinstance(ratio, float) and 0 < ratio < math.inf
    assert report["targets"]["tls_auth_vs_plain_c32"] == [">=", 0.9]
    assert report["environment"]["secured_server"] == "tls_auth"
    assert report["figures"]["augserve_tls_auth_c32_requests_per_s"] > 0


def test_ratio_keys_and_values_follow_the_run():
    ceiling = {"rps": 400.0, "batch_ms": 5.0, "cpu_ms_per_image": 1.0,
               "replica_layout_call_ms": [1.0, 1.0, 2.0]}  # fmt: skip
    measured = infer_report.Measured(
        concurrency=8,
        served=[_phase(200.0, 4.0, 12.0), _phase(300.0, 5.0, 20.0)],
        ceilings=[ceiling, {**ceiling, "rps": 500.0}],
        cpu={"server": 1.0, "replicas": 2.0, "ray_other": 0.5},
        batches=(800, 100, 100 * 5_000_000, 100 * 1_000_000),  # 8 rows, 5 ms per batch
        c1=[_phase(100.0, 3.0, 4.0), _phase(100.0, 2.5, 4.0)],
        b1=[2.0, 2.0],
        c1_batches=(200, 200, 200 * 2_000_000, 200 * 500_000),
        peers={"rayserve": _phase(50.0, 10.0, 30.0)},
    )
    report = BenchReport("infer")
    infer_report.fill(report, measured)
    ratios = report.ratios
    assert set(ratios) == {"served_vs_inprocess_c8", "p99_over_batch_compute_c8",
                           "c1_p50_added_ms", "served_vs_rayserve_c8"}  # fmt: skip
    assert math.isclose(ratios["served_vs_inprocess_c8"], (200 / 400 + 300 / 500) / 2)
    assert math.isclose(ratios["p99_over_batch_compute_c8"], 20.0 / 5.0)  # the worst round
    assert math.isclose(ratios["c1_p50_added_ms"], 0.75)  # median of 1.0 and 0.5
    assert math.isclose(ratios["served_vs_rayserve_c8"], 240.0 / 50.0)  # 200 calls in 5/6 s
    assert report.targets["served_vs_inprocess_c8"] == (">=", 0.7)
    assert report.figures["augserve_c8_mean_batch_size"] == 8.0
    assert report.figures["rayserve_c8_requests_per_s"] == 50.0


def test_secured_rounds_give_a_paired_ratio_and_figures():
    ceiling = {"rps": 400.0, "batch_ms": 5.0, "cpu_ms_per_image": 1.0,
               "replica_layout_call_ms": [1.0, 1.0, 2.0]}  # fmt: skip
    measured = infer_report.Measured(
        concurrency=32,
        served=[_phase(200.0, 4.0, 12.0)],
        ceilings=[ceiling],
        cpu={"server": 1.0, "replicas": 2.0, "ray_other": 0.5},
        batches=(800, 100, 100 * 5_000_000, 100 * 1_000_000),
        c1=[_phase(100.0, 3.0, 4.0)],
        b1=[2.0],
        c1_batches=(200, 200, 200 * 2_000_000, 200 * 500_000),
        secured=[
            (_phase(200.0, 4.0, 10.0), _phase(160.0, 5.0, 14.0)),  # 0.8
            (_phase(300.0, 4.0, 11.0), _phase(285.0, 4.5, 12.0)),  # 0.95
            (_phase(250.0, 4.0, 12.0), _phase(225.0, 4.2, 13.0)),  # 0.9
        ],
    )
    report = BenchReport("infer")
    infer_report.fill(report, measured)
    assert math.isclose(report.ratios["tls_auth_vs_plain_c32"], 0.9)  # the median pair
    assert report.targets["tls_auth_vs_plain_c32"] == (">=", 0.9)
    assert report.target_met("tls_auth_vs_plain_c32") is True
    figures = report.figures
    # 300 calls over 100/160 + 100/285 + 100/225 seconds
    assert math.isclose(figures["augserve_tls_auth_c32_requests_per_s"],
                        300 / (100 / 160 + 100 / 285 + 100 / 225))  # fmt: skip
    assert figures["augserve_tls_auth_c32_p50_ms"] == 4.5
    assert figures["augserve_tls_auth_c32_p99_ms"] == 14.0
    assert figures["augserve_plain_paired_c32_p99_ms"] == 12.0
    measured.secured = [(_phase(200.0, 4.0, 10.0), _phase(150.0, 5.0, 14.0))]
    missed = BenchReport("infer")
    infer_report.fill(missed, measured)
    assert missed.target_met("tls_auth_vs_plain_c32") is False


def test_no_secured_rounds_no_secured_key():
    ceiling = {"rps": 400.0, "batch_ms": 5.0, "cpu_ms_per_image": 1.0,
               "replica_layout_call_ms": [1.0]}  # fmt: skip
    report = BenchReport("infer")
    infer_report.fill(report, infer_report.Measured(
        32, [_phase(200.0, 4.0, 12.0)], [ceiling], {"server": 1.0, "replicas": 1.0,
        "ray_other": 0.0}, (800, 100, 5 * 10**8, 10**8), [_phase(100.0, 3.0, 4.0)], [2.0],
        (200, 200, 4 * 10**8, 10**8),
    ))  # fmt: skip
    assert "tls_auth_vs_plain_c32" not in report.ratios
    assert "tls_auth_vs_plain_c32" not in report.targets
