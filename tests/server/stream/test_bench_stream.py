"""`augserve bench stream --quick` runs and reports the ratios the issue names."""

from __future__ import annotations

import json
import math

from augserve.server.bench import BENCHMARKS
from augserve.server.cli import bench_parser


def test_bench_stream_quick(ray_session, tmp_path):
    assert "stream" in BENCHMARKS
    parser, module = bench_parser("stream")
    args = parser.parse_args(["--quick", "--pool-size", "1", "--json", str(tmp_path / "r.json")])
    report = module.run(args)
    report.write_json(args.json)
    payload = json.loads((tmp_path / "r.json").read_text())
    assert set(payload["ratios"]) == {
        "stream_vs_standalone", "stream_vs_local_dataloader", "stream_inline_vs_standalone",
        "stream_inline_vs_local_dataloader"}
    assert all(v > 0 for v in payload["ratios"].values())
    figures = payload["figures"]
    assert (figures["pool_size"], figures["batch"]) == (1, 16)  # the flags, and --quick's batch
    ratios = payload["ratios"]
    assert math.isclose(ratios["stream_vs_standalone"],
                        figures["stream_samples_per_s"] / figures["standalone_samples_per_s"])
    assert math.isclose(ratios["stream_inline_vs_local_dataloader"],
                        figures["stream_inline_samples_per_s"]
                        / figures["local_dataloader_samples_per_s"])
    met = ratios["stream_vs_standalone"] >= 0.9
    assert payload["targets_met"] == {"stream_vs_standalone": met}
    assert figures["client_cpu_ms_per_batch"] > 0 and figures["client_cpu_ms_per_batch_inline"] > 0
    assert figures["stream_shared_memory_share"] == 1.0  # loopback: the same-host transport
    assert "stream_vs_standalone" in report.render()
