"""Which CPU `augserve bench kernels` measured, and so which column of targets applies.

`cpu_report()` returns the `cpu` object of the bench's JSON: the model name, whether
AMX-INT8 and AVX-512 VNNI are present (/proc/cpuinfo flags), torch's CPU capability, the
engine under our int8 linear, and what oneDNN dispatches to. The last comes from running one
small int8 `qlinear` in a child process with `ONEDNN_VERBOSE=1` and reading its log: the ISA
line (`cpu,isa:...`) and the implementation of the matmul primitive (`brg:avx512_core_amx`,
`gemm:jit`, ...).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from augserve.server.bench import lifecycle

#: The targets of issue 21, per ISA: AMX-INT8 machines, and every other CPU.
TARGETS_BY_ISA: dict[str, dict[str, tuple[str, float]]] = {
    "amx_int8": {
        "int8_linear_vs_torchao_m32": (">=", 1.5),
        "int8_linear_vs_torchao_m256": (">=", 1.5),
        "int8_model_vs_pt2e_b32": (">=", 1.1),
        "pruned50_int8_vs_pt2e_b32": (">=", 2.0),
        "pruned50_vs_fp32_b32": (">=", 1.8),
    },
    "without_amx": {
        "int8_linear_vs_torchao_m32": (">=", 1.0),
        "int8_linear_vs_torchao_m256": (">=", 1.0),
        "int8_model_vs_pt2e_b32": (">=", 1.0),
        "pruned50_int8_vs_pt2e_b32": (">=", 2.0),
        "pruned50_vs_fp32_b32": (">=", 1.8),
    },
}

_PROBE = (
    "import torch; from augserve.kernels.quant import Int8Weight, onednn_int8_gemm; "
    "w = Int8Weight.from_float(torch.randn(64, 64)); "
    "onednn_int8_gemm(torch.full((4, 64), 70, dtype=torch.uint8), w)"
)


def _cpuinfo() -> tuple[str, set[str]]:
    path = Path("/proc/cpuinfo")
    text = path.read_text() if path.exists() else ""
    lines = text.splitlines()
    model = next((line.split(":", 1)[1].strip() for line in lines
                  if line.startswith("model name")), "unknown")
    flags = next((line.split(":", 1)[1].split() for line in lines
                  if line.startswith("flags")), [])
    return model, set(flags)


def parse_onednn_verbose(log: str) -> dict[str, str]:
    """The ISA and the matmul implementation named in a `ONEDNN_VERBOSE=1` log."""
    found = {"onednn_isa": "unknown", "onednn_matmul_impl": "unknown"}
    for line in log.splitlines():
        parts = line.split(",")
        if "info" in parts and any(p.startswith("isa:") for p in parts):
            found["onednn_isa"] = next(p for p in parts if p.startswith("isa:"))[4:]
        if len(parts) > 6 and parts[2] == "primitive" and parts[3] == "exec" and "matmul" in parts:
            found["onednn_matmul_impl"] = parts[parts.index("matmul") + 1]
    return found


def _onednn_dispatch() -> dict[str, str]:
    env = {**os.environ, "ONEDNN_VERBOSE": "1"}
    try:
        done = lifecycle.run([sys.executable, "-c", _PROBE], timeout_s=120, env=env)
    except (OSError, subprocess.SubprocessError) as exc:
        return {"onednn_isa": f"unknown ({exc})", "onednn_matmul_impl": "unknown"}
    return parse_onednn_verbose(done.stdout + done.stderr)


def cpu_report() -> dict[str, Any]:
    """The `cpu` object: model, AMX-INT8 / AVX-512 VNNI, oneDNN's ISA, the target column."""
    import torch

    from augserve.kernels.quant.int8 import ENGINE, SMALL_GEMM, SMALL_WEIGHT

    model, flags = _cpuinfo()
    amx = "amx_int8" in flags
    return {
        "model": model,
        "amx_int8": amx,
        "avx512_vnni": "avx512_vnni" in flags,
        "avx_vnni": "avx_vnni" in flags,
        "torch_cpu_capability": str(torch.backends.cpu.get_cpu_capability()),
        "int8_linear_engine": ENGINE if ENGINE == "fbgemm" else (
            f"onednn; fbgemm where K*N <= {SMALL_WEIGHT} and M*K*N <= {SMALL_GEMM}"),
        **_onednn_dispatch(),
        "targets_column": "amx_int8" if amx else "without_amx",
    }
