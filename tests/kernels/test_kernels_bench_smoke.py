"""`augserve bench kernels --quick --json`: runs end to end and reports the six ratios."""

from __future__ import annotations

import json
import math
import subprocess
import sys

RATIOS = (
    "int8_linear_vs_torchao_m32",
    "int8_linear_vs_torchao_m256",
    "int8_model_vs_pt2e_b32",
    "pruned50_int8_vs_pt2e_b32",
    "pruned50_vs_fp32_b32",
    "int8_model_vs_fp32_b32",
)


def test_bench_kernels_quick_json(tmp_path):
    out = tmp_path / "kernels.json"
    done = subprocess.run(
        [sys.executable, "-m", "augserve.server.cli", "bench", "kernels", "--quick",
         "--repeats", "3", "--json", str(out)],
        capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "int8_model_vs_pt2e_b32" in done.stdout
    report = json.loads(out.read_text())
    ratios = report["ratios"]
    for key in RATIOS:
        value = ratios[key]
        assert math.isfinite(value) and value > 0, (key, value)
    # The headline keys are the worst case of their parts (--quick: K=512, ResNet-20 only).
    for m in (32, 256):
        assert ratios[f"int8_linear_vs_torchao_m{m}"] == ratios[f"int8_linear_vs_torchao_m{m}_k512"]
    assert ratios["int8_model_vs_pt2e_b32"] == ratios["int8_model_vs_pt2e_b32_resnet20"]
    for key, (comparison, threshold) in report["targets"].items():
        met = ratios[key] >= threshold if comparison == ">=" else ratios[key] <= threshold
        assert report["targets_met"][key] is met, key
    assert report["figures"]["load_resnet20_int8_first_was_cache_hit"] is False
    figures = report["figures"]
    assert figures["load_resnet20_int8_restart_cache_hit"] is True
    assert figures["load_resnet20_int8_warm_s"] < figures["load_resnet20_int8_first_s"]
    cpu = report["cpu"]  # which CPU, and so which column of targets
    assert cpu["model"] and isinstance(cpu["amx_int8"], bool)
    assert isinstance(cpu["avx512_vnni"], bool) and cpu["onednn_isa"] != "unknown"
    column = "amx_int8" if cpu["amx_int8"] else "without_amx"
    assert cpu["targets_column"] == column and f"{column!r} column" in done.stdout
    assert report["targets"]["int8_model_vs_pt2e_b32"][1] == (1.1 if cpu["amx_int8"] else 1.0)
    for m in (32, 256):  # the bare GEMM's roof, beside ours
        assert figures[f"int8_linear_extra_over_gemm_share_m{m}_k512"] < 1
        assert figures[f"matmul_gops_int8_gemm_only_m{m}_k512"] > 0
        assert figures[f"int8_gemm_only_vs_torchao_m{m}_k512"] > 0
