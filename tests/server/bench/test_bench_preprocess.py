"""Smoke test of `augserve bench preprocess`: every ratio written, finite, judged by its target."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np

from augserve.server.bench import preprocess_data as data
from augserve.server.bench.preprocess import TARGETS


def test_quick_run_writes_every_ratio(tmp_path):
    out = tmp_path / "preprocess.json"
    command = [sys.executable, "-m", "augserve.server.cli", "bench", "preprocess", "--quick",
               "--concurrency", "4", "--client-processes", "2", "--json", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(out.read_text())
    assert set(report["ratios"]) == {"server_vs_client_preprocess_c4",
                                     *(set(TARGETS) - {"server_vs_client_preprocess_c32"})}
    for name, value in report["ratios"].items():
        assert math.isfinite(value) and value > 0, name
    figures = report["figures"]
    assert figures["a_server_preprocess_requests_per_s"] > 0
    assert figures["b_client_preprocess_wire_bytes"] > 3 * 224 * 224 * 4  # the fp32 tensor
    assert figures["replica_preprocess_cpu_ms_per_image_alone"] > 0
    assert figures["faces_held_out_accuracy_tta"] >= 0.9
    assert figures["faces_held_out_accuracy_no_tta"] >= 0.9
    assert "augserve bench preprocess" in result.stdout


def test_client_side_preprocessing_matches_the_server_pipeline():
    """The baseline's OpenCV + numpy code computes what the server's pipeline computes."""
    from augserve.server.augment.pipeline import Pipeline
    from augserve.server.images import decode_image_bytes

    jpeg = data.encode_jpeg(data.photos()[0])
    server = Pipeline.from_spec(data.PIPELINE, "fast")(
        [decode_image_bytes(jpeg, 1 << 24, "photo")]).images.numpy()
    client = data.client_preprocess(jpeg)
    assert client.shape == server.shape == (1, 3, data.SIZE, data.SIZE)
    # the fast path resizes in fixed point, numpy in float: a few 1/255 steps after normalize
    assert np.abs(client - server).max() < 4 / 255 / min(data.STD)
