"""Run a job in this process: load the source, run the steps, measure, write the version.

`execute(spec, ctx)` is what the Ray task runs; the CLI and the tests may call it directly.
Nothing is written before every step has run and been measured, and the write itself is
atomic (`output.write_version`), so a failed or cancelled job leaves the repository as it was.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from augserve.kernels.resolve import AllowList
from augserve.server.errors import InvalidArgument, NotFound
from augserve.server.imports import allow_list
from augserve.server.jobs import output
from augserve.server.jobs.data import DATASETS, Dataset, load_dataset
from augserve.server.jobs.distill import make_student, run_distill
from augserve.server.jobs.measure import Measures, measure
from augserve.server.jobs.progress import DONE, Context
from augserve.server.jobs.prune import run_prune, sparsity
from augserve.server.jobs.quantize import run_quantize
from augserve.server.jobs.specs import (
    Distill,
    Finetune,
    JobSpec,
    ModelRef,
    Prune,
    Quantize,
    Transfer,
)
from augserve.server.jobs.train import fit
from augserve.server.jobs.transfer import architecture_kwargs, run_transfer
from augserve.server.paths import inside

ARCHITECTURE_FIELD = "source.architecture"


@dataclass
class JobResult:
    """What a finished job returns: the version written (0: none) and its model card."""

    version: int
    card: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """{"version", "card"}."""
        return {"version": self.version, "card": self.card}


def _version_dir(ref: ModelRef) -> Path:
    folder = inside(ref.repository, ref.name, field="source.name")
    if not folder.is_dir():
        raise NotFound(f"source model {ref.name!r} is not in repository {ref.repository!r}")
    versions = sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit())
    wanted = ref.version or (versions[-1] if versions else 0)
    if wanted not in versions:
        raise NotFound(f"source model {ref.name!r} has no version {ref.version or 'at all'}")
    return folder / str(wanted)


def check_spec(spec: JobSpec, imports: AllowList | None = None) -> None:
    """Fail fast, before a job starts: unknown dataset, missing source, bad output target.

    `imports` bounds where a fresh source's architecture may come from (default:
    `augserve.server.imports.allow_list()`).

    Raises:
        ImportRefused: the source's architecture is outside `imports`.
        NotFound: the dataset, the source model (or version), the state_dict file or the
            output repository.
        InvalidArgument: the output model exists with another platform, input or output.
    """
    if spec.dataset not in DATASETS:
        known = sorted(DATASETS)
        raise NotFound(f"dataset {spec.dataset!r} does not exist; known datasets: {known}")
    ref = spec.source
    if ref.name:
        _version_dir(ref)
    elif ref.state_dict and not Path(ref.state_dict).is_file():
        raise NotFound(f"source state_dict {ref.state_dict!r} does not exist")
    else:
        (imports or allow_list()).resolve(ref.architecture, ARCHITECTURE_FIELD)
    if spec.output_repository and not Path(spec.output_repository).is_dir():
        raise NotFound(f"output repository {spec.output_repository!r} is not a folder")
    if spec.output_repository:
        data = load_dataset(spec.dataset)
        config = output.model_config(data.input_shape, data.num_classes)
        output.check_target(Path(spec.output_repository), spec.output_name, config)


def load_source(ref: ModelRef, data: Dataset, imports: AllowList
                ) -> tuple[nn.Module, str, dict[str, Any]]:
    """(eval-mode float model, architecture, factory kwargs) for `ref`.

    Raises:
        NotFound: the model, version or file is missing.
        InvalidArgument: the source cannot be trained further (e.g. compiled int8).
    """
    if ref.name:
        from augserve.server.inference.loading import load_module
        from augserve.server.inference.model_config import read_model_config

        version_dir = _version_dir(ref)
        settings = read_model_config(version_dir.parent)
        if settings.platform == "augserve_compressed":
            saved = json.loads((version_dir / settings.model_filename / "spec.json").read_text())
            if saved.get("quantization"):
                raise InvalidArgument(f"source {ref.describe()} is int8; start from a float model")
            architecture, kwargs = saved["architecture"], dict(saved.get("kwargs", {}))
        elif settings.platform == "state_dict":
            architecture, kwargs = settings.architecture, dict(settings.architecture_kwargs)
        else:
            raise InvalidArgument(
                f"source {ref.describe()} is {settings.platform}; jobs need state_dict or "
                "augserve_compressed sources (an nn.Module they can train)"
            )
        model = load_module(settings, version_dir, allow_pickle=False, imports=imports)
        return model.float().eval(), architecture, kwargs
    kwargs = {"num_classes": data.num_classes, **ref.architecture_kwargs}
    model = imports.resolve(ref.architecture, ARCHITECTURE_FIELD)(**kwargs)
    if ref.state_dict:
        if not Path(ref.state_dict).is_file():
            raise NotFound(f"source state_dict {ref.state_dict!r} does not exist")
        state = torch.load(ref.state_dict, map_location="cpu", weights_only=True)
        try:
            model.load_state_dict(state)
        except RuntimeError as error:
            raise InvalidArgument(f"state_dict does not fit {ref.architecture}: {error}") from None
    return model.eval(), ref.architecture, kwargs


def _classes(model: nn.Module, data: Dataset) -> int:
    with torch.no_grad():
        return int(model(torch.from_numpy(data.test_x[:1])).shape[1])


def execute(spec: JobSpec, ctx: Context, cache_dir: str | None = None,
            imports: AllowList | None = None) -> JobResult:
    """Run `spec`; returns the version written and the model card.

    Architectures are imported only from `imports` (default:
    `augserve.server.imports.allow_list()`).

    Raises:
        JobCancelled: `ctx` reported a cancel (nothing written).
        NotFound / InvalidArgument: a missing dataset or source, or a bad combination.
    """
    started = time.time()
    ctx.emit(force=True, stage="load", message=f"source {spec.source.describe()}")
    data = load_dataset(spec.dataset)
    torch.manual_seed(spec.seed)  # a fresh source's weights depend on the seed only
    imports = imports or allow_list()
    source, architecture, kwargs = load_source(spec.source, data, imports)
    transfers = any(isinstance(s, Transfer) for s in spec.steps)
    if not transfers and _classes(source, data) != data.num_classes:
        raise InvalidArgument(
            f"source has {_classes(source, data)} outputs, dataset {data.name!r} has "
            f"{data.num_classes} classes: use a transfer step"
        )
    base_spec = {"architecture": architecture, "kwargs": kwargs}
    before = measure(source, source, base_spec, data, latency=spec.measure_latency)
    ctx.emit(force=True, stage="load", accuracy=before.accuracy, message="source measured")
    model, runnable, calibration, quantization = copy.deepcopy(source), None, None, None
    for index, step in enumerate(spec.steps):
        ctx.check()
        torch.manual_seed(spec.seed + index)
        if isinstance(step, Finetune):
            model.requires_grad_(True)
            fit(model, data, ctx, "finetune", step.epochs, step.lr, augment=step.augment,
                salt=index)
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
    card = model_card(spec, data, before, after, sparsity(model), time.time() - started)
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
                    "train_images": len(data.train_y), "test_images": len(data.test_y)},
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
