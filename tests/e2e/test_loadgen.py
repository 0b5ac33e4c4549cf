"""`bench infer`'s Python load generator against the session's in-process server."""

from __future__ import annotations

import asyncio
import json

from augserve.server.bench.load import run_loadgen


async def test_the_python_load_generator_measures_a_served_model(server, tmp_path):
    out = tmp_path / "c4.json"
    summary = await asyncio.to_thread(run_loadgen, "python", server.port, 4, 1.0, 0.3, out)
    assert json.loads(out.read_text()) == summary
    assert summary["errors"] == {} and summary["concurrency"] == 4
    assert 0 < summary["measured"] <= summary["completed"] < summary["calls"]  # warm-up too
    assert summary["requests_per_s"] > 0
    assert 0 < summary["p50_ms"] <= summary["p90_ms"] <= summary["p99_ms"] <= summary["max_ms"]
    assert summary["cpu_ms_per_request"] > 0

