"""Int8 matmul GOP/s and whole-model latency: ours vs torch fp32/bf16/torch.ao and PT2E peers.

`augserve bench kernels [--quick] [--json FILE]` prints, from one run:
- GOP/s of int8 linear (ours: quantize + oneDNN VNNI GEMM + epilogue), fp32 and bf16
  torch matmul and torch.ao's dynamic-quantized Linear, for M in {1, 32, 256} and
  K = N in {512, 2048};
- batch-1 and batch-32 latency of ResNet-20 (CIFAR) and ResNet-18 (224) as fp32, int8,
  50%-channel-pruned and pruned + int8, beside the peers bf16 autocast + channels_last and
  PT2E + Inductor int8 with freezing;
- load-until-ready seconds of the int8 models, compile included (first) and cached (warm).

Ratio keys in the report (batch-32 model ratios take the worse of the two models):
int8_linear_vs_torchao_m32, int8_linear_vs_torchao_m256, int8_model_vs_pt2e_b32,
pruned50_int8_vs_pt2e_b32, pruned50_vs_fp32_b32, int8_model_vs_fp32_b32.
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path
from typing import Any

from augserve.server.bench.report import BenchReport

TARGETS: dict[str, tuple[str, float]] = {
    "int8_linear_vs_torchao_m32": (">=", 1.5),
    "int8_linear_vs_torchao_m256": (">=", 1.5),
    "int8_model_vs_pt2e_b32": (">=", 1.0),
    "pruned50_int8_vs_pt2e_b32": (">=", 2.0),
    "pruned50_vs_fp32_b32": (">=", 1.8),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `augserve bench kernels`."""
    parser.add_argument("--quick", action="store_true",
                        help="smoke mode: K=N=512 only, ResNet-20 only, few repeats")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--repeats", type=int, default=0,
                        help="timed rounds per measurement (0: 30 full, 5 quick)")
    parser.add_argument("--cache-dir", default=None,
                        help="compile cache (default: a fresh temporary one, so the first "
                             "load is a real compile)")


def _ratios(figures: dict[str, Any], models: tuple[str, ...]) -> dict[str, float]:
    ratios: dict[str, float] = {}
    for m in (32, 256):
        ks = sorted({int(k.rsplit("_k", 1)[1]) for k in figures if k.startswith("matmul_gops_")})
        per_k = [
            figures[f"matmul_gops_int8_ours_m{m}_k{k}"]
            / figures[f"matmul_gops_torchao_dynamic_m{m}_k{k}"]
            for k in ks
        ]
        for k, value in zip(ks, per_k, strict=True):
            ratios[f"int8_linear_vs_torchao_m{m}_k{k}"] = value
        ratios[f"int8_linear_vs_torchao_m{m}"] = min(per_k)
    pairs = {
        "int8_model_vs_pt2e_b32": ("peer_pt2e_int8", "int8"),
        "pruned50_int8_vs_pt2e_b32": ("peer_pt2e_int8", "pruned50_int8"),
        "pruned50_vs_fp32_b32": ("fp32", "pruned50"),
        "int8_model_vs_fp32_b32": ("fp32", "int8"),
    }
    for key, (base, ours) in pairs.items():
        per_model = []
        for name in models:
            value = figures[f"model_{name}_b32_{base}_ms"] / figures[f"model_{name}_b32_{ours}_ms"]
            ratios[f"{key}_{name}"] = value
            per_model.append(value)
        ratios[key] = min(per_model)
    return ratios


def run(args: argparse.Namespace) -> BenchReport:
    """Run the benchmark and return its report (figures, the six ratios, targets)."""
    import torch

    from augserve.server.bench.kernels_matmul import run_matmul
    from augserve.server.bench.kernels_models import run_models

    torch.set_num_threads(args.threads)
    repeats = args.repeats or (5 if args.quick else 30)
    ks = (512,) if args.quick else (512, 2048)
    models = ("resnet20",) if args.quick else ("resnet20", "resnet18")
    figures = run_matmul((1, 32, 256), ks, repeats * 2)
    figures.update(run_models(models, (1, 32), repeats, args.cache_dir))
    report = BenchReport(name="kernels", figures=figures, ratios=_ratios(figures, models))
    report.targets = dict(TARGETS)
    cpuinfo = Path("/proc/cpuinfo")
    flags = cpuinfo.read_text() if cpuinfo.exists() else ""
    report.environment = {
        "threads": args.threads,
        "quick": bool(args.quick),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cpu_amx": "amx_int8" in flags,
        "cpu_avx512_vnni": "avx512_vnni" in flags,
        "onednn_isa": _onednn_isa(),
    }
    return report


def _onednn_isa() -> str:
    import torch

    return str(torch.backends.cpu.get_cpu_capability())
