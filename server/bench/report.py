"""The report every benchmark returns: raw figures, ratios against baselines, targets."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class BenchReport:
    """The result of one `augserve bench` run.

    Attributes:
        name: the benchmark's name, e.g. "infer".
        figures: raw measurements keyed by a descriptive name (units in the name).
        ratios: ours over the baseline (or the figure the issue names), keyed by the
            names the benchmark's issue gives.
        targets: for each ratio that has a target, (comparison, threshold), e.g. (">=", 2.0).
        environment: what the figures were measured on (threads, CPU, versions).

    """

    name: str
    figures: dict[str, Any] = field(default_factory=dict)
    ratios: dict[str, float] = field(default_factory=dict)
    targets: dict[str, tuple[str, float]] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)

    def target_met(self, ratio_name: str) -> bool | None:
        """Whether `ratio_name` meets its target; None when it has no target."""
        if ratio_name not in self.targets or ratio_name not in self.ratios:
            return None
        comparison, threshold = self.targets[ratio_name]
        value = self.ratios[ratio_name]
        return value >= threshold if comparison == ">=" else value <= threshold

    def render(self) -> str:
        """A plain-text table of the figures and ratios, for the terminal."""
        lines = [f"== augserve bench {self.name} =="]
        width = max((len(k) for k in [*self.figures, *self.ratios]), default=0)
        for key, value in self.figures.items():
            lines.append(f"  {key:<{width}}  {_format(value)}")
        if self.ratios:
            lines.append("  -- ratios --")
        for key, value in self.ratios.items():
            met = self.target_met(key)
            target = ""
            if met is not None:
                comparison, threshold = self.targets[key]
                target = f"  (target {comparison} {threshold}: {'met' if met else 'MISSED'})"
            lines.append(f"  {key:<{width}}  {value:.3f}{target}")
        return "\n".join(lines)

    def write_json(self, path: Path) -> None:
        """Write the report as JSON, with `ratios` as a top-level object."""
        payload = asdict(self)
        payload["targets_met"] = {k: self.target_met(k) for k in self.targets}
        path.write_text(json.dumps(payload, indent=2, default=str) + "\n")


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}"
    return str(value)


def host_environment() -> dict[str, Any]:
    """The host a figure was measured on: CPU model, cores, the ISA that matters, versions."""
    import os
    import platform

    import torch

    cpuinfo = Path("/proc/cpuinfo")
    text = cpuinfo.read_text() if cpuinfo.exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines()
                  if line.startswith("model name")), platform.processor() or platform.machine())
    flags = set(next((line.split(":", 1)[1].split() for line in text.splitlines()
                      if line.startswith("flags")), []))
    return {
        "cpu": model,
        "cpu_count": os.cpu_count(),
        "isa": [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8")
                if f in flags],
        "torch_cpu_capability": str(torch.backends.cpu.get_cpu_capability()),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
