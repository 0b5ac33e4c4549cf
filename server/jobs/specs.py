"""Job specs: frozen dataclasses, checked at construction, with a JSON form for the RPC.

A job takes a source model, runs steps on it in order, and writes the result as a new
version of a model in a repository. Combinations are step lists:

    >>> spec = JobSpec(
    ...     source=ModelRef(repository="/models", name="digits_fp32"),
    ...     steps=(Prune(sparsity=0.5, finetune_epochs=4), Quantize()),
    ...     output_repository="/models", output_name="digits_pruned_int8")
    >>> JobSpec.from_dict(spec.to_dict()) == spec
    True
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from augserve.server.errors import InvalidArgument
from augserve.server.jobs.models import ARCHITECTURE
from augserve.server.paths import check_name


class JobSpecError(InvalidArgument):
    """A job spec field is missing, unknown or out of range; the message names it."""


@dataclass(frozen=True)
class ModelRef:
    """Where a job's source model comes from.

    One of: a repository model (`repository` + `name`, newest version unless `version`),
    a weights-only state_dict file (`state_dict` + `architecture` or `zoo`), or neither: a
    fresh `architecture(**architecture_kwargs)` or zoo model (to train a baseline with a
    `Finetune` step). `zoo` names an architecture of `augserve.server.jobs.sources.ZOO`
    ("resnet18", "resnet20", "digits_net", ...) and brings its input shape;
    `input_shape` (C, H, W) overrides the shape a source's config or zoo entry gives.
    """

    repository: str = ""
    name: str = ""
    version: int = 0
    state_dict: str = ""
    architecture: str = ARCHITECTURE
    architecture_kwargs: Mapping[str, Any] = field(default_factory=dict)
    zoo: str = ""
    input_shape: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.name and (self.state_dict or self.zoo):
            raise JobSpecError(
                "source: give a repository model, or a state_dict file / zoo model, not both")
        shape = tuple(self.input_shape)
        if shape and (len(shape) != 3 or not all(isinstance(d, int) and d > 0 for d in shape)):
            raise JobSpecError(f"source.input_shape must be [C, H, W] > 0, got {list(shape)}")
        object.__setattr__(self, "input_shape", shape)
        if self.name and not self.repository:
            raise JobSpecError("source: a model name needs its repository")
        if self.name:
            check_name(self.name, "source.name")
        if ":" not in self.architecture:
            raise JobSpecError("source.architecture must be 'package.module:factory'")
        object.__setattr__(self, "architecture_kwargs", dict(self.architecture_kwargs))

    def describe(self) -> str:
        """A one-line description for the model card."""
        if self.name:
            return f"{self.repository}/{self.name} v{self.version or 'latest'}"
        if self.state_dict:
            return f"{self.state_dict} ({self.zoo or self.architecture})"
        if self.zoo:
            return f"zoo {self.zoo}({dict(self.architecture_kwargs)})"
        return f"fresh {self.architecture}({dict(self.architecture_kwargs)})"


@dataclass(frozen=True)
class Finetune:
    """Train the current model (or a fresh baseline): `epochs` of Adam, batches of `batch_size`.

    `evaluate_every`: held-out top-1 after every that many epochs and after the last (1:
    every epoch; more saves the evaluations of a large model and validation set).
    """

    epochs: int = 3
    lr: float = 1e-3
    augment: bool = False
    batch_size: int = 64
    evaluate_every: int = 1

    def __post_init__(self) -> None:
        _positive(self, "epochs", "lr", "batch_size", "evaluate_every")


@dataclass(frozen=True)
class Prune:
    """Prune to a target, on a gradual schedule of `stages`, fine-tuning after each stage.

    Attributes:
        method: "channel" (structured: remove channels of every dependency group),
            "global" (unstructured magnitude, one threshold) or "layer" (per layer).
        sparsity: the fraction removed: of the channels (channel) or of the weights.
        target_flops: if > 0, the fraction of the MACs to keep (channel only); the
            channel ratio is searched to meet it and `sparsity` is ignored.
        stages: pruning steps; stage i reaches the fraction of the target given by a
            cubic schedule (Zhu & Gupta), so the last stage reaches the target.
        finetune_epochs: epochs of fine-tuning after each stage.
        lr: fine-tuning learning rate.
        batch_size: fine-tuning images per step.
        evaluate_every: held-out top-1 after every that many fine-tuning epochs and the last.
    """

    method: str = "channel"
    sparsity: float = 0.5
    target_flops: float = 0.0
    stages: int = 1
    finetune_epochs: int = 3
    lr: float = 1e-3
    batch_size: int = 64
    evaluate_every: int = 1

    def __post_init__(self) -> None:
        if self.method not in ("channel", "global", "layer"):
            raise JobSpecError(
                f"prune.method must be channel, global or layer, got {self.method!r}")
        if not 0.0 <= self.sparsity < 1.0:
            raise JobSpecError(f"prune.sparsity must be in [0, 1), got {self.sparsity}")
        if not 0.0 <= self.target_flops < 1.0:
            raise JobSpecError(f"prune.target_flops must be in [0, 1), got {self.target_flops}")
        if self.target_flops and self.method != "channel":
            raise JobSpecError("prune.target_flops needs method 'channel'")
        _positive(self, "batch_size", "evaluate_every")
        if self.stages < 1 or self.finetune_epochs < 0 or self.lr <= 0:
            raise JobSpecError("prune: stages >= 1, finetune_epochs >= 0 and lr > 0")


@dataclass(frozen=True)
class Quantize:
    """Post-training int8 of conv and linear layers, calibrated on the job's dataset.

    Attributes:
        method: "static": PT2E with the x86 Inductor quantizer (per-channel weights,
            activation observers calibrated on `calibration_batches` x `batch_size`
            training images), compiled with AOTInductor; "dynamic": eager `Int8Conv2d`
            / `Int8Linear` (per-channel weights, per-token activation scales at run time).
        calibration_batches: batches of training images the observers see.
        batch_size: images per calibration batch.
    """

    method: str = "static"
    calibration_batches: int = 4
    batch_size: int = 64

    def __post_init__(self) -> None:
        if self.method not in ("static", "dynamic"):
            raise JobSpecError(f"quantize.method must be static or dynamic, got {self.method!r}")
        _positive(self, "calibration_batches", "batch_size")


@dataclass(frozen=True)
class Distill:
    """Knowledge distillation (Hinton): loss = α T² KL(soft_t || soft_s) + (1 - α) CE.

    The teacher is the job's source model. The student is a fresh `digits_net` of
    `student_width` (with the dataset's class count), or, with `student_width` 0, the
    current model (e.g. after a `Prune` step). Training batches are streamed through the
    augmentation pipeline when `augment` is set.
    """

    student_width: int = 12
    temperature: float = 4.0
    alpha: float = 0.7
    epochs: int = 20
    lr: float = 3e-3
    augment: bool = True

    def __post_init__(self) -> None:
        _positive(self, "temperature", "epochs", "lr")
        if self.student_width < 0 or not 0.0 <= self.alpha <= 1.0:
            raise JobSpecError("distill: student_width >= 0 and alpha in [0, 1]")


#: The transfer methods, each under its own name (see `augserve.server.jobs.transfer`).
TRANSFER_METHODS = ("feature_extraction", "gap_transfer", "fc_transfer", "full_finetune",
                    "scratch")


@dataclass(frozen=True)
class Transfer:
    """Build f_new for the dataset's task from the source model's weights.

    Attributes:
        method: "feature_extraction" (frozen backbone without its global pooling, a new
            Linear classifier on the flattened conv maps), "gap_transfer" (frozen backbone,
            a new Linear head after global average pooling), "fc_transfer" (frozen
            backbone, the source's fully-connected layers reused and retrained; the last
            one re-made if the class count differs), "full_finetune" (every layer trained,
            the backbone at `lr * backbone_lr_scale`) or "scratch" (the same architecture
            from random weights: the baseline).
        epochs: training epochs.
        lr: the head's learning rate.
        backbone_lr_scale: the backbone's learning rate relative to `lr` (full_finetune).
        augment: stream the training batches through the augmentation pipeline (random
            shifts and small rotations), for every method alike.
    """

    method: str = "feature_extraction"
    epochs: int = 60
    lr: float = 3e-3
    backbone_lr_scale: float = 0.1
    augment: bool = False

    def __post_init__(self) -> None:
        if self.method not in TRANSFER_METHODS:
            raise JobSpecError(
                f"transfer.method must be one of {', '.join(TRANSFER_METHODS)}, "
                f"got {self.method!r}"
            )
        _positive(self, "epochs", "lr", "backbone_lr_scale")


STEPS: dict[str, type] = {
    "finetune": Finetune, "prune": Prune, "quantize": Quantize, "distill": Distill,
    "transfer": Transfer,
}
Step = Finetune | Prune | Quantize | Distill | Transfer


@dataclass(frozen=True)
class JobSpec:
    """A whole job: source, steps in order, dataset, output model.

    Attributes:
        source: the model the steps start from (and the teacher of a `Distill` step).
        steps: at least one; a `Quantize` step must be the last.
        dataset: a digits name of `augserve.server.jobs.data.DATASETS`, a dataset the
            server registers (`[stream.datasets]`, the built-ins "photos" and
            "lfw_subset"), or a `DatasetSpec` table ({"kind": "folder", "path": ...}).
        output_repository: the repository folder the new version goes into ("" writes
            nothing: the result is measured and returned only).
        output_name: the model (folder) that gets the new version.
        seed: seeds initialisation, shuffling and augmentation.
        measure_latency: time the models at batch 1 and 32 for the model card.
        validation_dataset: a separate validation set (named like `dataset`); "" splits
            `dataset` instead (the digits names keep their fixed split).
        validation_fraction: the share of each class held out for validation (split
            seeded by `seed`).
        train_pipeline, eval_pipeline: augmentation pipeline specs (JSON form) for the
            training batches and for evaluation; None takes the defaults of
            `augserve.server.jobs.image_data` (sized to the model's input).
        max_accuracy_drop: the gate of a compression job (prune, quantize, distill): the
            validation top-1 may fall at most this much (0.01 = 1 point) below the
            source's, else the job fails and writes nothing.
        workers: training loops run on this many Ray Train workers (DDP, each on its own
            shard of the training set; `augserve.server.jobs.distributed`); 1 trains in
            the job's own process.
    """

    source: ModelRef
    steps: tuple[Step, ...]
    dataset: str | Mapping[str, Any] = "digits"
    output_repository: str = ""
    output_name: str = ""
    seed: int = 0
    measure_latency: bool = True
    validation_dataset: str | Mapping[str, Any] = ""
    validation_fraction: float = 0.2
    train_pipeline: Mapping[str, Any] | None = None
    eval_pipeline: Mapping[str, Any] | None = None
    max_accuracy_drop: float = 0.01
    workers: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", tuple(self.steps))
        if not isinstance(self.workers, int) or self.workers < 1:
            raise JobSpecError(f"workers must be an integer >= 1, got {self.workers!r}")
        if not self.steps:
            raise JobSpecError("a job needs at least one step")
        for index, step in enumerate(self.steps):
            if not isinstance(step, tuple(STEPS.values())):
                raise JobSpecError(f"steps[{index}]: unknown step {type(step).__name__}")
            if isinstance(step, Quantize) and index != len(self.steps) - 1:
                raise JobSpecError("a quantize step must be the last step")
        if bool(self.output_repository) != bool(self.output_name):
            raise JobSpecError("give both output_repository and output_name, or neither")
        if self.output_name:
            check_name(self.output_name, "output_name")
        for name in ("dataset", "validation_dataset"):
            if not isinstance(getattr(self, name), str | Mapping):
                raise JobSpecError(f"{name} must be a name or a dataset table")
        if not 0.0 < self.validation_fraction < 1.0:
            raise JobSpecError(
                f"validation_fraction must be in (0, 1), got {self.validation_fraction}")
        if not 0.0 <= self.max_accuracy_drop <= 1.0:
            raise JobSpecError(
                f"max_accuracy_drop must be in [0, 1] (a fraction), got {self.max_accuracy_drop}")

    @property
    def compresses(self) -> bool:
        """Whether the accuracy gate applies: a prune, quantize or distill step, no transfer."""
        return any(isinstance(s, Prune | Quantize | Distill) for s in self.steps) and not any(
            isinstance(s, Transfer) for s in self.steps)

    @property
    def method(self) -> str:
        """The steps as "prune -> quantize"."""
        return " -> ".join(_kind(step) for step in self.steps)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: steps as [{"prune": {...}}, ...]."""
        out = dataclasses.asdict(self)
        out["steps"] = [{_kind(s): dataclasses.asdict(s)} for s in self.steps]
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> JobSpec:
        """Build a spec from its JSON form; raises JobSpecError naming a bad field."""
        if not isinstance(raw, Mapping):
            raise JobSpecError(f"job spec: expected an object, got {type(raw).__name__}")
        raw = dict(raw)
        try:
            steps = []
            for index, entry in enumerate(raw.pop("steps", [])):
                if not isinstance(entry, Mapping) or len(entry) != 1:
                    raise JobSpecError(f"steps[{index}] must be {{kind: settings}}")
                (kind, settings), = entry.items()
                if kind not in STEPS:
                    raise JobSpecError(
                        f"steps[{index}]: unknown step {kind!r}; known: {list(STEPS)}")
                steps.append(STEPS[kind](**(settings or {})))
            source = ModelRef(**raw.pop("source", {}))
            return cls(source=source, steps=tuple(steps), **raw)
        except TypeError as error:  # an unknown field, or a value of the wrong type
            raise JobSpecError(f"job spec: {error}") from None


def _kind(step: object) -> str:
    return next(k for k, v in STEPS.items() if isinstance(step, v))


def _positive(obj: object, *names: str) -> None:
    for name in names:
        if getattr(obj, name) <= 0:
            raise JobSpecError(f"{_kind(obj)}.{name} must be > 0, got {getattr(obj, name)}")
