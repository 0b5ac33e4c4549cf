"""Save and load compressed models as a weights-only state_dict plus a JSON spec (no pickle).

A directory written by `save_compressed` holds:

- `spec.json`: `{"format": "augserve_compressed", "version": 1, "architecture":
  "augserve.kernels.zoo:resnet20", "kwargs": {...}, "modules": {name: {"type", "args"}},
  "quantization": null | {"method": "pt2e_x86_inductor", ...}, ...}`. `modules` records the
  shape of every Conv2d / BatchNorm / Linear / int8 module and every nn.Identity, so pruned
  widths, swapped quantized modules and removed layers are rebuilt before the weights load;
- `weights.pt`: the state_dict, read back with `torch.load(weights_only=True)`;
- `calibration.pt` (PT2E only): the calibration batch, so a reload hashes to the same
  compile-cache key and skips the Inductor compile.

The inference server's `augserve_compressed` platform calls `load_compressed`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from augserve.kernels.backend import Backend
from augserve.kernels.quant.modules import Int8Conv2d, Int8Linear
from augserve.kernels.quant.weight_only import Int4WeightOnlyLinear, Int8WeightOnlyLinear
from augserve.kernels.resolve import AllowList

FORMAT = "augserve_compressed"
VERSION = 1
PT2E_METHOD = "pt2e_x86_inductor"


def _backend(module: nn.Module) -> str:
    backend = module.backend
    return backend.value if isinstance(backend, Backend) else str(backend)


def _conv_args(m: nn.Conv2d) -> dict[str, Any]:
    return {
        "in_channels": m.in_channels, "out_channels": m.out_channels,
        "kernel_size": list(m.kernel_size), "stride": list(m.stride),
        "padding": list(m.padding), "dilation": list(m.dilation),
        "groups": m.groups, "bias": m.bias is not None,
    }


def _bn_args(m: nn.modules.batchnorm._BatchNorm) -> dict[str, Any]:
    return {
        "num_features": m.num_features, "eps": m.eps, "momentum": m.momentum,
        "affine": m.affine, "track_running_stats": m.track_running_stats,
    }


def _int8_conv_args(m: Int8Conv2d) -> dict[str, Any]:
    return {
        "in_channels": m.in_channels, "out_channels": m.out_channels,
        "kernel_size": list(m.kernel_size), "stride": list(m.stride),
        "padding": list(m.padding), "dilation": list(m.dilation),
        "bias": m.linear.bias is not None, "relu": m.linear.relu, "backend": _backend(m.linear),
    }


# type name -> (class, describe(module) -> constructor kwargs)
_RECORDERS: dict[str, tuple[type[nn.Module], Callable[[Any], dict[str, Any]]]] = {
    "Int8Conv2d": (Int8Conv2d, _int8_conv_args),
    "Int8Linear": (Int8Linear, lambda m: {
        "in_features": m.in_features, "out_features": m.out_features,
        "bias": m.bias is not None, "relu": m.relu, "backend": _backend(m)}),
    "Int8WeightOnlyLinear": (Int8WeightOnlyLinear, lambda m: {
        "in_features": m.in_features, "out_features": m.out_features,
        "bias": m.bias is not None, "backend": _backend(m)}),
    "Int4WeightOnlyLinear": (Int4WeightOnlyLinear, lambda m: {
        "in_features": m.in_features, "out_features": m.out_features,
        "group_size": m.group_size, "bias": m.bias is not None, "backend": _backend(m)}),
    "Conv2d": (nn.Conv2d, _conv_args),
    "BatchNorm2d": (nn.BatchNorm2d, _bn_args),
    "BatchNorm1d": (nn.BatchNorm1d, _bn_args),
    "Linear": (nn.Linear, lambda m: {
        "in_features": m.in_features, "out_features": m.out_features,
        "bias": m.bias is not None}),
    # a layer swapped out (a transfer's feature_extraction drops the global pooling)
    "Identity": (nn.Identity, lambda m: {}),
}


def describe_modules(model: nn.Module) -> dict[str, dict[str, Any]]:
    """{qualified name: {"type", "args"}} for every module whose shape the spec records."""
    out: dict[str, dict[str, Any]] = {}
    for name, module in model.named_modules():
        kind = type(module).__name__
        if name and kind in _RECORDERS and type(module) is _RECORDERS[kind][0]:
            out[name] = {"type": kind, "args": _RECORDERS[kind][1](module)}
    return out


def save_compressed(
    model: nn.Module, directory: str | os.PathLike[str], spec: Mapping[str, Any],
    calibration: torch.Tensor | None = None,
) -> Path:
    """Write `model` (eager, pruned and/or with int8 modules) as state_dict + spec.

    Args:
        model: the compressed eager model.
        directory: created if missing.
        spec: at least {"architecture": "package.module:factory"}; optional "kwargs" for
            the factory, "quantization" ({"method": "pt2e_x86_inductor"} to compile the
            float weights to int8 on load), and any free-form metadata.
        calibration: the calibration batch, required for the PT2E method.

    Returns:
        The directory.
    """
    if "architecture" not in spec or ":" not in str(spec["architecture"]):
        raise ValueError("spec needs 'architecture' as 'package.module:factory'")
    quant = spec.get("quantization") or {}
    if quant.get("method") == PT2E_METHOD and calibration is None:
        raise ValueError(f"the {PT2E_METHOD} method needs a calibration batch")
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    full = {**spec, "format": FORMAT, "version": VERSION, "modules": describe_modules(model)}
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    torch.save(state, path / "weights.pt")
    if calibration is not None:
        torch.save(calibration.detach().cpu().contiguous(), path / "calibration.pt")
    (path / "spec.json").write_text(json.dumps(full, indent=2, sort_keys=True) + "\n")
    return path


def _build(kind: str, args: dict[str, Any]) -> nn.Module:
    if kind not in _RECORDERS:
        raise ValueError(f"unknown module type {kind!r} in spec")
    args = dict(args)
    if "backend" in args:
        args["backend"] = Backend(args["backend"])
    for key in ("kernel_size", "stride", "padding", "dilation"):
        if key in args:
            args[key] = tuple(args[key])
    return _RECORDERS[kind][0](**args)


def load_compressed(
    directory: str | os.PathLike[str], cache_dir: str | os.PathLike[str] | None = None,
    imports: AllowList | None = None, static_batches: tuple[int, ...] = (),
) -> nn.Module:
    """Rebuild a model written by `save_compressed`; ready for inference (eval mode).

    With the PT2E method the int8 model is compiled, or loaded from the compile cache
    under `cache_dir` (see `quant.model.cache_dir`), and returned as a `CompiledModel`;
    each batch size in `static_batches` (within the spec's `max_batch`) also gets a
    fixed-shape package (`ModelInt8Config.static_batches`).
    The spec's architecture is imported only if `imports` (default: `AllowList()`,
    augserve's own modules and torchvision's models) allows it.

    Raises:
        ImportRefused (`imports.error`): the architecture is not allowed or not importable.
    """
    path = Path(directory)
    spec = json.loads((path / "spec.json").read_text())
    if spec.get("format") != FORMAT or spec.get("version") != VERSION:
        raise ValueError(f"{path} is not an {FORMAT} v{VERSION} directory")
    factory = (imports or AllowList()).resolve(spec["architecture"],
                                               field=f"{path / 'spec.json'}: architecture")
    model = factory(**spec.get("kwargs", {}))
    for name, entry in spec["modules"].items():
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, _build(entry["type"], entry["args"]))
    model.load_state_dict(torch.load(path / "weights.pt", weights_only=True), strict=True)
    model.eval()
    quant = spec.get("quantization") or {}
    if quant.get("method") == PT2E_METHOD:
        from augserve.kernels.quant.model import ModelInt8Config, quantize_model

        calibration = torch.load(path / "calibration.pt", weights_only=True)
        max_batch = int(quant.get("max_batch", 1024))
        config = ModelInt8Config(
            max_batch=max_batch,
            cache_dir=str(cache_dir) if cache_dir is not None else None,
            static_batches=tuple(b for b in static_batches if 1 <= b <= max_batch),
        )
        return quantize_model(model, (calibration,), config)
    return model
