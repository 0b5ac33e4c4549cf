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

from augserve.server.bench.h2load import h2load_path
from augserve.server.bench.loadgen import summarize

RATIOS = ("served_vs_inprocess_c32", "p99_over_batch_compute_c32", "c1_p50_added_ms")


@pytest.mark.parametrize("loadgen", ["h2load", "python"])
def test_quick_run_writes_every_ratio(tmp_path, loadgen):
    if loadgen == "h2load" and not h2load_path() and not os.environ.get("CI"):
        pytest.skip("h2load is not installed (apt install nghttp2-client); CI installs it")
    out = tmp_path / "infer.json"
    command = [
        sys.executable, "-m", "augserve.server.cli", "bench", "infer",
        "--quick", "--baseline", "none", "--loadgen", loadgen, "--json", str(out),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(out.read_text())
    assert report["environment"]["load_generator"] == loadgen
    for name in RATIOS:
        assert math.isfinite(report["ratios"][name]), name
        assert report["targets"][name][0] in (">=", "<=")
        assert report["targets_met"][name] in (True, False)
    assert "served_vs_rayserve_c32" not in report["ratios"]
    figures = report["figures"]
    assert figures["augserve_c32_requests_per_s"] > 0
    assert figures["augserve_c1_p50_ms"] > 0
    # 32 requests outstanding on 2 replicas: the batcher must merge them (mean above 1),
    # and never beyond max_batch_size.
    assert 1 < figures["augserve_c32_mean_batch_size"] <= 32
    assert figures["inprocess_images_per_s"] > 0
    # the tail of the model's own batch time: the p99 of calls over their mean
    assert 0 < figures["inprocess_batch_p99_over_mean"] < math.inf
    assert "augserve bench infer" in result.stdout


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
