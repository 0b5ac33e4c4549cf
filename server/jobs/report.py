"""The compression report (five models), measured in one process.

`compression_report` trains the fp32 baseline, then runs four jobs from it, each written
as a model version with its card: channel-pruned to 50% and fine-tuned, int8, pruned +
int8, and a distilled student. It prints a table and writes JSON and a PNG plot. The
transfer study (`augserve transfer report`) is `augserve.server.jobs.transfer_study`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from augserve.server.jobs.execute import execute
from augserve.server.jobs.progress import Context
from augserve.server.jobs.specs import (
    Distill,
    Finetune,
    JobSpec,
    ModelRef,
    Prune,
    Quantize,
    Step,
)


@dataclass(frozen=True)
class ReportSettings:
    """Sizes of the report's runs (the tests shrink them).

    Attributes:
        width: the baseline's first conv width (2x in the later convs).
        epochs: the baseline's training epochs.
        prune_stages, prune_epochs: gradual schedule; fine-tune epochs per stage.
        student_width, distill_epochs: the student.
        latency: measure latency (batch 1 and 32).
    """

    width: int = 32
    epochs: int = 12
    prune_stages: int = 2
    prune_epochs: int = 4
    student_width: int = 12
    distill_epochs: int = 20
    latency: bool = True


COMPRESSION_MODELS = ("fp32", "pruned", "int8", "pruned_int8", "student")


def _job(
    repository: Path, name: str, source: ModelRef, steps: tuple[Step, ...], dataset: str,
    settings: ReportSettings, ctx: Context,
) -> dict[str, Any]:
    # The report measures each drop against its own targets, so no job's gate stops it.
    spec = JobSpec(source, steps, dataset, str(repository), name, 0, settings.latency,
                   max_accuracy_drop=1.0)
    result = execute(spec, ctx)
    return {**result.card, "model": name, "version": result.version}


def compression_report(
    repository: Path, settings: ReportSettings = ReportSettings(),
    report: Callable[..., bool] | None = None, resnet18: bool = False,
) -> dict[str, Any]:
    """Run the five-model report, writing each model as a version into `repository`.

    `resnet18` adds the ResNet-18 rows (`augserve.server.jobs.resnet18_case`, a few
    minutes more): fp32 and pruned 50% + int8 at 224 x 224, behind the jobs' 1-point gate.

    Returns:
        {"models": {key: card}, "int8_top1_drop", "pruned_top1_drop",
        "student_over_teacher_accuracy", "student_over_teacher_macs", "targets": {...}}
        and, with `resnet18`, "resnet18" (the case's summary, or {"error": why} where the
        gate refused the compressed model) and the target "resnet18_gate_passed".
    """
    ctx = Context(0, report or (lambda event: False))
    fp32 = ModelRef(architecture_kwargs={"width": settings.width})
    cards = {"fp32": _job(repository, "digits_fp32", fp32, (Finetune(settings.epochs, 3e-3),),
                          "digits", settings, ctx)}
    base = ModelRef(str(repository), "digits_fp32", cards["fp32"]["version"])
    prune = Prune("channel", 0.5, stages=settings.prune_stages,
                  finetune_epochs=settings.prune_epochs)
    cards["pruned"] = _job(repository, "digits_pruned", base, (prune,), "digits", settings, ctx)
    cards["int8"] = _job(repository, "digits_int8", base, (Quantize(),), "digits", settings, ctx)
    pruned = ModelRef(str(repository), "digits_pruned", cards["pruned"]["version"])
    cards["pruned_int8"] = _job(
        repository, "digits_pruned_int8", pruned, (Quantize(),), "digits", settings, ctx
    )
    distill = Distill(student_width=settings.student_width, epochs=settings.distill_epochs)
    cards["student"] = _job(repository, "digits_student", base, (distill,), "digits", settings, ctx)
    acc = {k: c["accuracy"]["after"] for k, c in cards.items()}
    macs = cards["student"]["macs"]
    out = {
        "models": cards,
        **reloaded_figures(repository, cards, settings.latency),
        "int8_top1_drop": round(100 * (acc["fp32"] - acc["int8"]), 3),
        "pruned_top1_drop": round(100 * (acc["fp32"] - acc["pruned"]), 3),
        "pruned_int8_top1_drop": round(100 * (acc["fp32"] - acc["pruned_int8"]), 3),
        "student_over_teacher_accuracy": round(acc["student"] / acc["fp32"], 4),
        "student_over_teacher_macs": round(macs["after"] / macs["before"], 4),
    }
    out["targets"] = {
        "int8_within_1_point": out["int8_top1_drop"] <= 1.0,
        "pruned_within_1_point": out["pruned_top1_drop"] <= 1.0,
        "student_97_percent_accuracy": out["student_over_teacher_accuracy"] >= 0.97,
        "student_quarter_flops": out["student_over_teacher_macs"] <= 0.25,
    }
    if resnet18:
        from augserve.server.errors import FailedPrecondition
        from augserve.server.jobs.resnet18_case import resnet18_rows

        try:
            out["resnet18"] = resnet18_rows(repository / "resnet18", report=report,
                                            latency=settings.latency)
        except FailedPrecondition as error:  # the gate refused it: report that, honestly
            out["resnet18"] = {"error": str(error)}
        out["targets"]["resnet18_gate_passed"] = bool(
            out["resnet18"].get("gate", {}).get("passed"))
    return out


def reloaded_figures(
    repository: Path, cards: dict[str, Any], latency: bool, rounds: int = 15
) -> dict[str, Any]:
    """Reload every written version as the server does and measure it again.

    Latency: per round, each model in turn at batch 1 and 32 (interleaved, so machine
    load affects all alike); the median over rounds. Returns {"latency_ms": {key: {...}},
    "reloaded_accuracy": {key: top-1 of the reloaded version}}.
    """
    import statistics

    from augserve.kernels.serialize import load_compressed
    from augserve.server.jobs.data import load_dataset
    from augserve.server.jobs.measure import latency_ms
    from augserve.server.jobs.train import evaluate

    data = load_dataset("digits")
    models = {
        key: load_compressed(repository / card["model"] / str(card["version"]) / "compressed")
        for key, card in cards.items()
    }
    accuracy = {k: evaluate(m, data.test_x, data.test_y) for k, m in models.items()}
    times: dict[str, dict[str, list[float]]] = {k: {"batch_1": [], "batch_32": []} for k in models}
    for _ in range(rounds if latency else 0):
        for key, model in models.items():
            for batch in (1, 32):
                times[key][f"batch_{batch}"].append(
                    latency_ms(model, data.input_shape, batch, repeats=20, budget_s=0.5)
                )
    return {
        "latency_ms": {
            k: {b: statistics.median(v) if v else -1.0 for b, v in t.items()}
            for k, t in times.items()
        },
        "reloaded_accuracy": accuracy,
    }


def compression_table(result: dict[str, Any]) -> str:
    """The five models as a text table, then the target ratios."""
    lines = [f"{'model':<12} {'top-1':>7} {'params':>8} {'MACs':>9} {'size KiB':>9} "
             f"{'b1 ms':>7} {'b32 ms':>7} {'int8 pkg KiB':>12}"]
    for key, card in result["models"].items():
        size = card["size_bytes"]["after"] / 1024
        lat = result["latency_ms"][key]
        lines.append(
            f"{key:<12} {100 * card['accuracy']['after']:>6.2f}% {card['params']['after']:>8,} "
            f"{card['macs']['after']:>9,} {size:>9.1f} {lat['batch_1']:>7.3f} "
            f"{lat['batch_32']:>7.3f} {card['int8_package_bytes'] / 1024:>12.1f}"
        )
    for key in ("int8_top1_drop", "pruned_top1_drop", "pruned_int8_top1_drop",
                "student_over_teacher_accuracy", "student_over_teacher_macs"):
        lines.append(f"{key:<32} {result[key]}")
    if "resnet18" in result:
        lines += resnet18_table(result["resnet18"])
    lines += [f"target {k:<30} {'met' if v else 'NOT met'}" for k, v in result["targets"].items()]
    return "\n".join(lines)


def resnet18_table(case: dict[str, Any]) -> list[str]:
    """The ResNet-18 rows: fp32 and pruned int8 at 224 x 224, the gate, latency."""
    if "error" in case:
        return [f"resnet18: {case['error']}"]
    shape = "x".join(map(str, case["dataset"]["input_shape"]))
    lines = [f"ResNet-18 {shape}, {case['dataset']['description']}",
             f"{'model':<20} {'top-1':>7} {'params':>11} {'MACs':>14} {'size KiB':>9} "
             f"{'b1 ms':>8} {'b32 ms':>9}"]
    for key, which in (("fp32", "before"), ("pruned_int8", "after")):
        lat = case["latency_ms"].get(key, {})
        lines.append(
            f"resnet18_{key:<11} {100 * case['top1'][key]:>6.2f}% {case['params'][which]:>11,} "
            f"{case['macs'][which]:>14,} {case['size_bytes'][key] / 1024:>9.1f} "
            f"{lat.get('batch_1', -1.0):>8.2f} {lat.get('batch_32', -1.0):>9.2f}")
    gate = case["gate"]
    verdict = "passed" if gate["passed"] else "missed"
    lines.append(f"resnet18 gate: drop {100 * gate['measured_drop']:.2f} points, max "
                 f"{100 * gate['max_accuracy_drop']:.0f}, {verdict}")
    return lines


def write_outputs(result: dict[str, Any], json_path: Path | None, png_path: Path | None) -> None:
    """Write the result as JSON and a PNG bar chart."""
    if json_path:
        json_path.write_text(json.dumps(result, indent=2) + "\n")
    if png_path:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        cards = result["models"]
        keys = list(cards)
        panels = [
            ("top-1 accuracy (%)", [100 * cards[k]["accuracy"]["after"] for k in keys]),
            ("parameters", [cards[k]["params"]["after"] for k in keys]),
            ("size on disk (KiB)", [cards[k]["size_bytes"]["after"] / 1024 for k in keys]),
            ("latency batch 1 (ms)", [result["latency_ms"][k]["batch_1"] for k in keys]),
            ("latency batch 32 (ms)", [result["latency_ms"][k]["batch_32"] for k in keys]),
            ("MACs per image", [cards[k]["macs"]["after"] for k in keys]),
        ]
        figure, axes = plt.subplots(2, 3, figsize=(13, 7))
        for axis, (title, values) in zip(axes.flat, panels, strict=True):
            bars = axis.bar(keys, values, color="tab:blue")
            axis.bar_label(bars, fmt="%.4g", fontsize=8)
            axis.set_title(title)
            if title.startswith("top-1"):  # differences of a point must show
                axis.set_ylim(max(0.0, min(values) - 3), 100.5)
            axis.tick_params(axis="x", rotation=30)
        figure.tight_layout()
        figure.savefig(png_path, dpi=100)
        plt.close(figure)
