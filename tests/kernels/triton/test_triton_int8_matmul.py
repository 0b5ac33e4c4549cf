"""The Triton int8 GEMM, run by the CPU interpreter in a child process.

`TRITON_INTERPRET=1` must be set before Triton is imported, and it changes Triton for the
whole process, so these checks run in their own interpreter and report back as JSON;
the rest of the suite is not affected.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

_SCRIPT = textwrap.dedent(
    """
    import json, torch
    from augserve.kernels.backend import Backend, resolve
    from augserve.kernels.quant.int8 import (
        Int8Weight, int8_linear, int8_matmul_reference, quantize_per_token)
    from augserve.kernels.triton.int8_matmul import int8_matmul_triton

    results = []
    torch.manual_seed(0)
    for m, k, n, bias, relu in [(1, 16, 16, False, False), (37, 96, 50, True, True),
                                (64, 64, 64, True, False), (5, 130, 33, False, True)]:
        w = Int8Weight.from_float(torch.randn(n, k))
        xq, s = quantize_per_token(torch.randn(m, k))
        b = torch.randn(n) if bias else None
        got = int8_matmul_triton(xq, s, w.qweight, w.scale, b, relu)
        ref = int8_matmul_reference(xq, s, w.qweight, w.scale, b, relu)
        results.append({"shape": [m, k, n], "max_abs": float((got - ref).abs().max()),
                        "ref_max": float(ref.abs().max())})
    x = torch.randn(3, 7, 48)
    w = Int8Weight.from_float(torch.randn(20, 48))
    via_dispatch = int8_linear(x, w, None, False, Backend.TRITON)
    ref = int8_linear(x, w, None, False, Backend.REFERENCE)
    print(json.dumps({"cases": results,
                      "dispatch_max_abs": float((via_dispatch - ref).abs().max()),
                      "auto_cpu": resolve("auto", torch.device("cpu")).value}))
    """
)


def test_triton_int8_matmul_matches_reference_in_interpreter():
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(report["cases"]) == 4
    for case in report["cases"]:
        # exact int32 accumulation; the float epilogue may differ by rounding only
        assert case["max_abs"] <= 1e-5 * max(1.0, case["ref_max"]), case
    assert report["dispatch_max_abs"] < 1e-4
    assert report["auto_cpu"] == "torch"  # AUTO never picks Triton on the CPU
    assert "TRITON_INTERPRET" not in os.environ or os.environ["TRITON_INTERPRET"] != "1"
