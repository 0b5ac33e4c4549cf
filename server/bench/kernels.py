"""Int8 matmul GOP/s and whole-model latency: ours vs torch fp32/bf16/torch.ao and PT2E peers.

`augserve bench kernels [--quick] [--json FILE]` prints, from one run:
- GOP/s of int8 linear (ours: the fused C++ op: quantize, fbgemm or oneDNN GEMM,
  epilogue), fp32 and bf16 torch matmul and torch.ao's dynamic-quantized Linear, for
  M in {1, 32, 256} and K = N in {512, 2048};
- batch-1 and batch-32 latency of ResNet-20 (CIFAR) and ResNet-18 (224) as fp32, int8,
  50%-channel-pruned and pruned + int8, beside the peers bf16 autocast + channels_last and
  PT2E + Inductor int8 with freezing;
- load-until-ready seconds of the int8 models, compile included (first) and cached (warm).

The report's `cpu` object names the CPU (model, AMX-INT8, AVX-512 VNNI), the ISA and matmul
implementation oneDNN dispatches to, and which column of targets applies: `amx_int8` on
CPUs with AMX-INT8, `without_amx` elsewhere (`kernels_cpu.TARGETS_BY_ISA`).

Ratios are paired: the median over interleaved rounds of baseline time / our time. The
headline keys take the worse case (over K for the linears, over the two models for the
batch-32 model ratios); the parts are reported beside them. Keys:
int8_linear_vs_torchao_m32, int8_linear_vs_torchao_m256, int8_model_vs_pt2e_b32,
pruned50_int8_vs_pt2e_b32, pruned50_vs_fp32_b32, int8_model_vs_fp32_b32.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any

from augserve.server.bench.kernels_cpu import TARGETS_BY_ISA, cpu_report
from augserve.server.bench.kernels_models import PAIRS
from augserve.server.bench.report import BenchReport


@dataclass
class KernelsReport(BenchReport):
    """The kernels report with the `cpu` object (`kernels_cpu.cpu_report`) beside the figures."""

    cpu: dict[str, Any] = field(default_factory=dict)

    def render(self) -> str:
        """The CPU lines and the column of targets first, then the figures and ratios."""
        head = [f"  cpu.{key}: {value}" for key, value in self.cpu.items()]
        column = self.cpu.get("targets_column", "?")
        head.append(f"  targets: the {column!r} column of issue 21")
        first, *rest = super().render().split("\n")
        return "\n".join([first, *head, *rest])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `augserve bench kernels`."""
    parser.add_argument("--quick", action="store_true",
                        help="smoke mode: K=N=512 only, ResNet-20 only, few repeats, "
                             "no fixed-shape int8 packages")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--repeats", type=int, default=0,
                        help="timed rounds per measurement (0: 30 full, 5 quick)")
    parser.add_argument("--cache-dir", default=None,
                        help="compile cache (default: a fresh temporary one, so the first "
                             "load is a real compile)")


def _ratios(
    linear: dict[tuple[int, int], float], model: dict[str, float], models: tuple[str, ...]
) -> dict[str, float]:
    """The six headline ratios (worst case over K or over models) and their parts."""
    ratios: dict[str, float] = {}
    for m in (32, 256):
        per_k = {k: value for (mm, k), value in sorted(linear.items()) if mm == m}
        for k, value in per_k.items():
            ratios[f"int8_linear_vs_torchao_m{m}_k{k}"] = value
        ratios[f"int8_linear_vs_torchao_m{m}"] = min(per_k.values())
    for key in PAIRS:
        for name in models:
            ratios[f"{key}_b32_{name}"] = model[f"{key}_b32_{name}"]
        ratios[f"{key}_b32"] = min(model[f"{key}_b32_{name}"] for name in models)
    for key, value in model.items():
        if "_b1_" in key:
            ratios[key] = value
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
    figures, linear = run_matmul((1, 32, 256), ks, repeats * 2)
    model_figures, model_ratios = run_models(models, (1, 32), repeats, args.cache_dir,
                                             static=not args.quick)
    figures.update(model_figures)
    cpu = cpu_report()
    report = KernelsReport(
        name="kernels", figures=figures, ratios=_ratios(linear, model_ratios, models), cpu=cpu
    )
    report.targets = dict(TARGETS_BY_ISA[cpu["targets_column"]])
    report.environment = {
        "threads": args.threads,
        "quick": bool(args.quick),
        "torch": torch.__version__,
    }
    return report
