"""A job's source model: what it is, whether the steps can transform it, and loading it.

A source is a repository model version (every platform the server loads, read through
`augserve.server.inference.loading.load_module`), a weights-only state_dict file plus an
architecture, a zoo model by its short name, or a fresh architecture. Every architecture
is imported through the server's allow-list (`augserve.server.imports.allow_list()`).

What a step can do with a source depends on what loading it gives:

| source | kind | steps |
| --- | --- | --- |
| state_dict, float `augserve_compressed`, zoo, state_dict file, fresh | module | every step |
| `torch_export`, `torchscript` | opaque | only a first `distill` into a fresh student |
| int8 `augserve_compressed` | int8 | none: start from a float version |

An opaque module has no eager architecture to rebuild, so it cannot be pruned
structurally, fine-tuned, transferred or saved; it can only teach.

Example:
    >>> inspect_source(ModelRef(zoo="resnet18"), allow_list()).input_shape
    (3, 224, 224)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from augserve.kernels.resolve import AllowList
from augserve.server.errors import FailedPrecondition, NotFound
from augserve.server.imports import allow_list
from augserve.server.jobs.models import ARCHITECTURE
from augserve.server.jobs.specs import Distill, ModelRef, Step
from augserve.server.paths import inside

ARCHITECTURE_FIELD = "source.architecture"

#: Zoo models by short name: (architecture, input shape C x H x W).
ZOO: dict[str, tuple[str, tuple[int, int, int]]] = {
    "resnet18": ("augserve.kernels.zoo:resnet18", (3, 224, 224)),
    "resnet20": ("augserve.kernels.zoo:resnet20", (3, 32, 32)),
    "digits_net": (ARCHITECTURE, (3, 8, 8)),
    "digits_cnn": ("augserve.kernels.zoo:digits_cnn", (1, 8, 8)),
    "faces_cnn": ("augserve.kernels.zoo:faces_cnn", (3, 64, 64)),
}
#: The input shape of each zoo architecture, under both of its import names.
_SHAPES = {arch: shape for arch, shape in ZOO.values()}
_SHAPES.update({arch.replace("augserve.kernels.zoo", "augserve.server.zoo"): shape
                for arch, shape in ZOO.values()})

MODULE, OPAQUE, INT8 = "module", "opaque", "int8"


@dataclass(frozen=True)
class SourceInfo:
    """What a source is, read without loading its weights.

    Attributes:
        kind: MODULE (an eager module every step can change), OPAQUE (torch.export or
            TorchScript: only a teacher) or INT8 (already quantized).
        architecture: the factory ("package.module:name"; "" for an opaque module).
        kwargs: the factory's kwargs.
        input_shape: one sample's shape (C, H, W), or () when nothing says it.
        platform: the repository platform ("" for a file, zoo or fresh source).
        version_dir: the repository version folder (None otherwise).
    """

    kind: str
    architecture: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    input_shape: tuple[int, ...] = ()
    platform: str = ""
    version_dir: Path | None = None


def version_dir(ref: ModelRef) -> Path:
    """The version folder `ref` names (its newest version unless `ref.version`).

    Raises:
        NotFound: the model is not in the repository, or has no such version.
    """
    folder = inside(ref.repository, ref.name, field="source.name")
    if not folder.is_dir():
        raise NotFound(f"source model {ref.name!r} is not in repository {ref.repository!r}")
    versions = sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit())
    wanted = ref.version or (versions[-1] if versions else 0)
    if wanted not in versions:
        raise NotFound(f"source model {ref.name!r} has no version {ref.version or 'at all'}")
    return folder / str(wanted)


def _sample_shape(settings: Any) -> tuple[int, ...]:
    dims = tuple(int(d) for d in settings.inputs[0].dims) if settings.inputs else ()
    if settings.max_batch_size == 0 and len(dims) == 4:
        dims = dims[1:]  # without batching, the first dim is the batch
    return dims if len(dims) == 3 and min(dims) > 0 else ()


def _repository_source(ref: ModelRef) -> SourceInfo:
    from augserve.server.inference.model_config import read_model_config

    folder = version_dir(ref)
    settings = read_model_config(folder.parent)
    shape = tuple(ref.input_shape) or _sample_shape(settings)
    platform = settings.platform
    if platform == "augserve_compressed":
        saved = json.loads((folder / settings.model_filename / "spec.json").read_text())
        kind = INT8 if saved.get("quantization") or _has_int8(saved) else MODULE
        return SourceInfo(kind, saved["architecture"], dict(saved.get("kwargs", {})), shape,
                          platform, folder)
    if platform == "state_dict":
        return SourceInfo(MODULE, settings.architecture, dict(settings.architecture_kwargs),
                          shape, platform, folder)
    if platform in ("torch_export", "torchscript"):
        return SourceInfo(OPAQUE, "", {}, shape, platform, folder)
    raise FailedPrecondition(
        f"source {ref.describe()} is a pickled module ({platform}); jobs never unpickle "
        "code: serve it as state_dict, augserve_compressed or torch_export")


def _has_int8(saved: dict[str, Any]) -> bool:
    return any(m.get("type", "").startswith("Int") for m in saved.get("modules", {}).values())


def inspect_source(ref: ModelRef, imports: AllowList | None = None) -> SourceInfo:
    """Describe `ref` without loading weights; the architecture is checked against `imports`.

    Raises:
        NotFound: an unknown zoo name, model, version or state_dict file.
        FailedPrecondition: a pickled repository module.
        ImportRefused: the architecture is outside `imports`.
    """
    imports = imports or allow_list()
    if ref.name:
        info = _repository_source(ref)
        if info.architecture:
            imports.resolve(info.architecture, ARCHITECTURE_FIELD)
        return info
    architecture = ref.architecture
    if ref.zoo:
        if ref.zoo not in ZOO:
            raise NotFound(f"source.zoo {ref.zoo!r} is not a zoo model; known: {sorted(ZOO)}")
        architecture = ZOO[ref.zoo][0]
    if ref.state_dict and not Path(ref.state_dict).is_file():
        raise NotFound(f"source state_dict {ref.state_dict!r} does not exist")
    imports.resolve(architecture, ARCHITECTURE_FIELD)
    shape = tuple(ref.input_shape) or _SHAPES.get(architecture, ())
    return SourceInfo(MODULE, architecture, dict(ref.architecture_kwargs), shape)


def check_steps(info: SourceInfo, steps: tuple[Step, ...], describe: str) -> None:
    """Raise FailedPrecondition, saying why, if the steps cannot transform this source."""
    if info.kind == MODULE:
        return
    first = steps[0]
    if isinstance(first, Distill) and first.student_width > 0:
        return  # the source only teaches; the student is a fresh eager module
    if info.kind == INT8:
        raise FailedPrecondition(
            f"source {describe} is int8 (quantized); it can only teach a fresh student "
            "(distill with student_width > 0): start other steps from a float version")
    what = ("a TorchScript module: TorchScript cannot be pruned structurally, fine-tuned "
            "or re-saved" if info.platform == "torchscript" else
            "a torch.export program: an exported graph has no eager architecture to prune, "
            "fine-tune, quantize again or save")
    step = type(first).__name__.lower()
    raise FailedPrecondition(
        f"source {describe} is {what}; its first step ({step}) cannot run on it. "
        "It can only teach a fresh student (a first distill step with student_width > 0), "
        "or serve it as state_dict / augserve_compressed")


class Opaque(nn.Module):
    """An exported or scripted module as a teacher: `train()` / `eval()` do not recurse.

    An exported graph refuses `eval()`; its mode was fixed when it was exported. Its batch
    dimension may be bounded too, so inputs run in chunks of `max_batch` (the model
    config's `max_batch_size`; 0: whole).
    """

    def __init__(self, module: nn.Module, max_batch: int = 0) -> None:
        super().__init__()
        self.module = module
        self.max_batch = max_batch

    def train(self, mode: bool = True) -> Opaque:
        """Record the mode only (the wrapped graph keeps its own)."""
        self.training = mode
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The wrapped module's output (in chunks of `max_batch` rows)."""
        if not self.max_batch or len(x) <= self.max_batch:
            return self.module(x)
        return torch.cat([self.module(part) for part in x.split(self.max_batch)])


def load_source(ref: ModelRef, info: SourceInfo, num_classes: int, imports: AllowList
                ) -> tuple[nn.Module, dict[str, Any]]:
    """(eval-mode model, factory kwargs) for `ref`, as `inspect_source` described it.

    A fresh, zoo or state_dict-file source is built with `num_classes` unless its kwargs
    say otherwise.

    Raises:
        FailedPrecondition: the state_dict does not fit the architecture.
    """
    if info.version_dir is not None:
        from augserve.server.inference.loading import load_module
        from augserve.server.inference.model_config import read_model_config

        settings = read_model_config(info.version_dir.parent)
        model = load_module(settings, info.version_dir, allow_pickle=False, imports=imports)
        if info.kind != MODULE:
            return Opaque(model, settings.max_batch_size).eval(), {}
        return model.float().eval(), info.kwargs
    kwargs = {"num_classes": num_classes, **info.kwargs}
    model = imports.resolve(info.architecture, ARCHITECTURE_FIELD)(**kwargs)
    if ref.state_dict:
        state = torch.load(ref.state_dict, map_location="cpu", weights_only=True)
        try:
            model.load_state_dict(state)
        except RuntimeError as error:
            raise FailedPrecondition(
                f"source state_dict does not fit {info.architecture}({kwargs}): {error}"
            ) from None
    return model.eval(), kwargs


def check_input(shape: tuple[int, ...], data_shape: tuple[int, ...], dataset: str) -> None:
    """FailedPrecondition unless a dataset's samples have the model's input shape."""
    if shape and tuple(shape) != tuple(data_shape):
        raise FailedPrecondition(
            f"dataset {dataset!r} gives {'x'.join(map(str, data_shape))} inputs, the source "
            f"model takes {'x'.join(map(str, shape))}: choose a dataset (or pipelines) of "
            "that size and channel count")

