"""`bench kernels`' CPU object: oneDNN's verbose log parsed into its ISA and matmul kernel."""

from __future__ import annotations

from augserve.server.bench.kernels_cpu import TARGETS_BY_ISA, parse_onednn_verbose

LOG = """onednn_verbose,v1,info,oneDNN v3.12.0 (commit 80afa71049cd69a3df32adcccb623b12cd7baa22)
onednn_verbose,v1,info,cpu,runtime:OpenMP,nthr:2
onednn_verbose,v1,info,cpu,isa:Intel AVX2
onednn_verbose,v1,primitive,exec,cpu,reorder,jit:uni,undef,src:s8::blocked:ba::f0,,64x64,0.08
onednn_verbose,v1,primitive,exec,cpu,matmul,gemm:jit,undef,src:u8:a:blocked:ab::f0,,4x64:64x64,4.5
"""


def test_parse_names_isa_and_matmul_implementation():
    assert parse_onednn_verbose(LOG) == {
        "onednn_isa": "Intel AVX2", "onednn_matmul_impl": "gemm:jit",
    }
    assert parse_onednn_verbose("nothing here")["onednn_isa"] == "unknown"


def test_both_columns_hold_the_same_ratios():
    amx, other = TARGETS_BY_ISA["amx_int8"], TARGETS_BY_ISA["without_amx"]
    assert amx.keys() == other.keys()
    assert amx["int8_linear_vs_torchao_m32"] == (">=", 1.5)
    assert other["int8_linear_vs_torchao_m32"] == (">=", 1.0)
