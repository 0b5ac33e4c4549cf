"""Turn a model version folder into a callable torch module, by platform.

Model files can run code, so only formats that do not unpickle arbitrary
objects are loaded by default: torch.export archives, TorchScript, weights-only
state_dicts with an importable architecture, and augserve's compressed format.
A pickled whole module (`platform = "pickle"`) needs the operator's opt-in.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from augserve.kernels.resolve import AllowList
from augserve.server.errors import FailedPrecondition, InvalidArgument, NotFound
from augserve.server.imports import allow_list
from augserve.server.inference.model_config import ModelSettings


def architecture_field(settings: ModelSettings) -> str:
    """How errors name a model config's `architecture` field."""
    return f"model {settings.name!r}: architecture"


def load_module(settings: ModelSettings, version_dir: Path, allow_pickle: bool,
                imports: AllowList | None = None) -> nn.Module:
    """Load the model stored in `version_dir` as an eval-mode module on the CPU.

    A state_dict's or a compressed model's architecture is imported only if `imports`
    (default: `augserve.server.imports.allow_list()`) allows it.

    Raises:
        NotFound: the model file is missing.
        FailedPrecondition: a pickled module without `allow_pickle`.
        ImportRefused: the architecture is outside `imports` or cannot be imported.
        InvalidArgument: the file does not hold what the platform promises.

    """
    path = version_dir / settings.model_filename
    if not path.exists():
        raise NotFound(f"model {settings.name!r}: {path} does not exist")
    platform = settings.platform
    imports = imports or allow_list()
    if platform == "torch_export":
        module = torch.export.load(str(path)).module()
    elif platform == "torchscript":
        module = torch.jit.load(str(path), map_location="cpu")
    elif platform == "state_dict":
        factory = imports.resolve(settings.architecture, field=architecture_field(settings))
        module = factory(**settings.architecture_kwargs)
        state = torch.load(path, map_location="cpu", weights_only=True)
        module.load_state_dict(state)
    elif platform == "augserve_compressed":
        from augserve.kernels.serialize import load_compressed

        # A full batch is the common one under load: it gets its own fixed-shape package.
        full = (settings.max_batch_size,) if settings.max_batch_size > 1 else ()
        module = load_compressed(path, imports=imports, static_batches=full)
    else:
        if not allow_pickle:
            raise FailedPrecondition(
                f"model {settings.name!r} is a pickled module; loading it can run arbitrary "
                "code, so the server refuses it unless started with --allow-pickle"
            )
        module = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(module, nn.Module):
        raise InvalidArgument(f"model {settings.name!r}: {path} does not hold a module")
    if hasattr(module, "eval") and platform != "torch_export":
        module.eval()
    return module
