"""Run a job in this process: load the source, run the steps, measure, write the version.

`execute(spec, ctx)` is what the Ray task runs; the CLI and the tests may call it directly.
Nothing is written before every step has run and been measured, and the write itself is
atomic (`output.write_version`), so a failed or cancelled job leaves the repository as it was.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from augserve.kernels.resolve import AllowList
from augserve.server.errors import FailedPrecondition, InvalidArgument, NotFound
from augserve.server.imports import allow_list
from augserve.server.jobs import output
from augserve.server.jobs.data import Dataset, load_dataset, open_job_data, resolve_dataset
from augserve.server.jobs.distill import make_student, run_distill
from augserve.server.jobs.measure import Measures, folder_bytes, measure
from augserve.server.jobs.progress import DONE, Context
from augserve.server.jobs.prune import run_prune, sparsity
from augserve.server.jobs.quantize import run_quantize
from augserve.server.jobs.sources import (
    ARCHITECTURE_FIELD,
    MODULE,
    SourceInfo,
    check_input,
    check_steps,
    inspect_source,
    load_source,
)
from augserve.server.jobs.specs import Distill, Finetune, JobSpec, Prune, Quantize, Transfer
from augserve.server.jobs.train import fit
from augserve.server.jobs.transfer import architecture_kwargs, run_transfer


@dataclass
class JobResult:
    """What a finished job returns: the version written (0: none) and its model card."""

    version: int
    card: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """{"version", "card"}."""
        return {"version": self.version, "card": self.card}


def check_spec(spec: JobSpec, imports: AllowList | None = None,
               datasets: Mapping[str, Any] | None = None) -> SourceInfo:
    """Fail fast, before a job starts; returns what the source is.

    Args:
        spec: the job.
        imports: where architectures may come from (default:
            `augserve.server.imports.allow_list()`).
        datasets: the server's registered datasets (name -> `DatasetSpec`).

    Raises:
        ImportRefused: an architecture outside `imports`.
        NotFound: the dataset, the source model (or version, zoo name), the state_dict
            file or the output repository.
        FailedPrecondition: the steps cannot transform the source (with the reason), or a
            dataset table is invalid.
        InvalidArgument: the output model exists with another platform, input or output.
    """
    resolve_dataset(spec.dataset, datasets or {})
    if spec.validation_dataset:
        resolve_dataset(spec.validation_dataset, datasets or {}, "validation_dataset")
    info = inspect_source(spec.source, imports or allow_list())
    check_steps(info, spec.steps, spec.source.describe())
    if spec.output_repository and not Path(spec.output_repository).is_dir():
        raise NotFound(f"output repository {spec.output_repository!r} is not a folder")
    if resolve_dataset(spec.dataset, datasets or {}) is None:  # a digits split: cheap to check
        data = load_dataset(str(spec.dataset))
        check_input(info.input_shape, data.input_shape, data.name)
        if spec.output_repository:
            config = output.model_config(data.input_shape, data.num_classes)
            output.check_target(Path(spec.output_repository), spec.output_name, config)
    return info


def _classes(model: nn.Module, data: Dataset) -> int:
    with torch.no_grad():
        return int(model(torch.from_numpy(data.test_x[:1])).shape[1])


def check_gate(spec: JobSpec, before: float, after: float) -> dict[str, Any] | None:
    """The model card's gate entry; FailedPrecondition when the job missed it.

    The gate applies to compression jobs (`JobSpec.compresses`); others get None.
    """
    if not spec.compresses:
        return None
    drop = before - after
    if drop > spec.max_accuracy_drop + 1e-9:
        raise FailedPrecondition(
            f"accuracy gate missed: validation top-1 fell from {before:.4f} (source) to "
            f"{after:.4f} ({spec.method}), a drop of {drop:.4f} > max_accuracy_drop "
            f"{spec.max_accuracy_drop}; nothing was written")
    return {"max_accuracy_drop": spec.max_accuracy_drop, "measured_drop": round(drop, 6),
            "passed": True}


def execute(spec: JobSpec, ctx: Context, cache_dir: str | None = None,
            imports: AllowList | None = None,
            datasets: Mapping[str, Any] | None = None) -> JobResult:
    """Run `spec`; returns the version written and the model card.

    Architectures are imported only from `imports` (default:
    `augserve.server.imports.allow_list()`); `datasets` are the server's registered
    datasets (name -> `DatasetSpec`).

    Raises:
        JobCancelled: `ctx` reported a cancel (nothing written).
        NotFound / InvalidArgument: a missing dataset or source, or a bad combination.
        FailedPrecondition: an untransformable source, images that do not fit the
            model, or a missed accuracy gate (nothing written).
    """
    started = time.time()
    ctx.emit(force=True, stage="load", message=f"source {spec.source.describe()}")
    imports = imports or allow_list()
    info = check_spec(spec, imports, datasets)
    data = open_job_data(spec.dataset, info.input_shape, datasets, spec.validation_dataset,
                         spec.validation_fraction, spec.seed, spec.train_pipeline,
                         spec.eval_pipeline)
    torch.manual_seed(spec.seed)  # a fresh source's weights depend on the seed only
    source, kwargs = load_source(spec.source, info, data.num_classes, imports)
    architecture = info.architecture
    transfers = any(isinstance(s, Transfer) for s in spec.steps)
    if not transfers and _classes(source, data) != data.num_classes:
        raise InvalidArgument(
            f"source has {_classes(source, data)} outputs, dataset {data.name!r} has "
            f"{data.num_classes} classes: use a transfer step"
        )
    base_spec = {"architecture": architecture, "kwargs": kwargs}
    source_bytes = folder_bytes(info.version_dir) if info.kind != MODULE else None
    before = measure(source, source, base_spec, data, latency=spec.measure_latency,
                     size_bytes=source_bytes)
    ctx.emit(force=True, stage="load", accuracy=before.accuracy, message="source measured")
    model, runnable, calibration, quantization = copy.deepcopy(source), None, None, None
    for index, step in enumerate(spec.steps):
        ctx.check()
        torch.manual_seed(spec.seed + index)
        if isinstance(step, Finetune):
            model.requires_grad_(True)
            fit(model, data, ctx, "finetune", step.epochs, step.lr, augment=step.augment,
                batch_size=step.batch_size, salt=index, evaluate_every=step.evaluate_every)
        elif isinstance(step, Prune):
            model = run_prune(model, step, data, ctx)
        elif isinstance(step, Distill):
            student = model
            if step.student_width:
                student = make_student(step.student_width, data.num_classes, spec.seed)
                kwargs = {"num_classes": data.num_classes, "width": step.student_width}
                architecture = "augserve.server.jobs.models:digits_net"
            model = run_distill(source, student, step, data, ctx)
        elif isinstance(step, Transfer):
            factory = imports.resolve(architecture, ARCHITECTURE_FIELD)
            fresh = factory(**architecture_kwargs(kwargs, step, data.num_classes))
            kwargs = architecture_kwargs(kwargs, step, data.num_classes)
            model = run_transfer(model, step, data, ctx, fresh)
        elif isinstance(step, Quantize):
            quantized = run_quantize(model, step, data, ctx, cache_dir)
            model, runnable = quantized.float_model, quantized.model
            calibration, quantization = quantized.calibration, quantized.quantization
    ctx.check()
    ctx.emit(force=True, stage="measure", message="measuring the new model")
    save_spec = {"architecture": architecture, "kwargs": kwargs, "quantization": quantization}
    after = measure(runnable or model, model, save_spec, data, calibration,
                    latency=spec.measure_latency)
    gate = check_gate(spec, before.accuracy, after.accuracy)
    card = model_card(spec, data, before, after, sparsity(model), time.time() - started)
    card["gate"] = gate
    ctx.check()
    version = 0
    if spec.output_repository:
        ctx.emit(force=True, stage="write", message=f"writing {spec.output_name}")
        version = output.write_version(
            Path(spec.output_repository), spec.output_name, model,
            {**save_spec, "job": {"method": spec.method}}, card,
            output.model_config(data.input_shape, data.num_classes), calibration,
        )
    ctx.emit(force=True, state=DONE, stage="done", accuracy=after.accuracy,
             message=f"wrote {spec.output_name} version {version}" if version else "done")
    return JobResult(version, card)


def model_card(
    spec: JobSpec, data: Dataset, before: Measures, after: Measures, zeros: float,
    seconds: float,
) -> dict[str, Any]:
    """The model card: method, settings, dataset, and the figures before and after."""
    return {
        "method": spec.method,
        "settings": spec.to_dict(),
        "source": spec.source.describe(),
        "dataset": {"name": data.name, "description": data.description,
                    "train_images": len(data.train_y), "test_images": len(data.test_y),
                    "input_shape": list(data.input_shape)},
        "accuracy": {"before": before.accuracy, "after": after.accuracy},
        "params": {"before": before.params, "after": after.params},
        "macs": {"before": before.macs, "after": after.macs},
        "size_bytes": {"before": before.size_bytes, "after": after.size_bytes},
        "int8_package_bytes": after.package_bytes,
        "latency_ms": {
            "before": {"batch_1": before.latency_b1_ms, "batch_32": before.latency_b32_ms},
            "after": {"batch_1": after.latency_b1_ms, "batch_32": after.latency_b32_ms},
        },
        "weight_sparsity": zeros,
        "job_seconds": round(seconds, 2),
        "torch": torch.__version__,
    }
