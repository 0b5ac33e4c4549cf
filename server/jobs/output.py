"""Write a job's model as a new version of a repository model, atomically, with a model card.

The version is assembled in `<repository>/<model>/.job-<id>/` (a dot folder the repository
ignores), then renamed to the next free version number; a job that fails or is cancelled
before the rename leaves nothing behind. Every job writes the `augserve_compressed` platform
(`compressed/` from `kernels.serialize.save_compressed`: weights-only state_dict + spec),
because its spec travels with each version: an fp32, pruned, distilled or int8 version
can sit beside another of a different architecture under one model config.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from augserve.kernels.serialize import save_compressed
from augserve.server.errors import InvalidArgument
from augserve.server.paths import inside

PLATFORM = "augserve_compressed"


def model_config(input_shape: tuple[int, ...], num_classes: int) -> dict[str, Any]:
    """The config.json of a job's model (input "input" FP32, output "logits")."""
    return {
        "platform": PLATFORM,
        "max_batch_size": 64,
        "input": [{"name": "input", "datatype": "FP32", "dims": list(input_shape)}],
        "output": [{"name": "logits", "datatype": "FP32", "dims": [num_classes]}],
        "instance_group": {"count": 1, "num_threads": 1},
        "warmup": {"batch_sizes": [1]},
    }


def check_target(repository: Path, name: str, config: Mapping[str, Any]) -> None:
    """Raise InvalidArgument unless `name` is new or already takes `config`'s platform and I/O.

    Raises NotFound-free errors only: a missing repository folder is InvalidArgument.
    """
    if not repository.is_dir():
        raise InvalidArgument(f"output repository {str(repository)!r} is not a folder")
    folder = inside(repository, name, field="output_name")
    if (folder / "config.toml").exists():
        raise InvalidArgument(f"model {name!r} has a config.toml; jobs write config.json models")
    path = folder / "config.json"
    if not path.exists():
        return
    current = json.loads(path.read_text())
    for key in ("platform", "input", "output"):
        if current.get(key) != config[key]:
            raise InvalidArgument(
                f"model {name!r} exists with {key} {current.get(key)!r}; this job writes "
                f"{config[key]!r}: choose another output name"
            )


def _next_version(folder: Path) -> int:
    numbers = [int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit()]
    return max(numbers, default=0) + 1


def write_version(
    repository: Path, name: str, model: nn.Module, spec: Mapping[str, Any],
    card: Mapping[str, Any], config: Mapping[str, Any], calibration: torch.Tensor | None = None,
) -> int:
    """Write `model` as the next version of `repository/name`; return the version number.

    Args:
        repository: the repository root (must exist).
        name: the model folder (created with `config` if new).
        model: saved with `save_compressed(model, <version>/compressed, spec, calibration)`.
        spec: the serialize spec (architecture, kwargs, quantization, ...).
        card: written as `<version>/model_card.json` (the "version" key is added).
        config: the model's config.json (written only when the model is new).
        calibration: the static int8 calibration batch.
    """
    check_target(repository, name, config)
    folder = inside(repository, name, field="output_name")
    created = not folder.exists()
    folder.mkdir(exist_ok=True)
    staging = folder / f".job-{uuid.uuid4().hex[:12]}"
    try:
        staging.mkdir()
        save_compressed(model, staging / "compressed", spec, calibration)
        if not (folder / "config.json").exists():
            tmp = folder / f".config-{uuid.uuid4().hex[:8]}.json"
            tmp.write_text(json.dumps(config, indent=2) + "\n")
            os.replace(tmp, folder / "config.json")
        for _ in range(100):  # another job may take the number first: try the next one
            version = _next_version(folder)
            (staging / "model_card.json").write_text(
                json.dumps({**card, "version": version}, indent=2) + "\n"
            )
            try:
                os.rename(staging, folder / str(version))
                return version
            except OSError:
                continue
        raise InvalidArgument(f"model {name!r}: could not claim a version number")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if created:
            shutil.rmtree(folder, ignore_errors=True)
        raise
