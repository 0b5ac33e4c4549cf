"""Physically remove channels from Conv2d / BatchNorm / Linear modules.

`shrink_modules` takes, for each (module name, dim), the feature indices to remove, and
replaces the module's parameters and buffers by the kept slices, updating the module's
shape attributes; the result is a smaller dense model. `mask_modules` is the reference:
it zeroes the same channels in place and leaves every shape alone, so the masked original
and the shrunk model agree on every kept channel (tested).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn


def _keep_index(size: int, removed: list[int], device: torch.device) -> torch.Tensor:
    gone = set(removed)
    if len(gone) >= size:
        raise ValueError("a module would lose all of its channels")
    return torch.tensor([i for i in range(size) if i not in gone], dtype=torch.long, device=device)


def _select(param: torch.Tensor | None, dim: int, index: torch.Tensor) -> torch.Tensor | None:
    if param is None:
        return None
    return param.detach().index_select(dim, index).clone()


def _set(module: nn.Module, name: str, value: torch.Tensor | None) -> None:
    if value is None:
        return
    if isinstance(getattr(module, name), nn.Parameter):
        grad = getattr(module, name).requires_grad
        setattr(module, name, nn.Parameter(value, requires_grad=grad))
    else:
        setattr(module, name, value)


def _shrink_out(module: nn.Module, removed: list[int]) -> None:
    device = module.weight.device if getattr(module, "weight", None) is not None else None
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        index = _keep_index(module.num_features, removed, device or module.running_mean.device)
        for name in ("weight", "bias", "running_mean", "running_var"):
            _set(module, name, _select(getattr(module, name), 0, index))
        module.num_features = len(index)
    elif isinstance(module, nn.Conv2d):
        index = _keep_index(module.out_channels, removed, device)
        _set(module, "weight", _select(module.weight, 0, index))
        _set(module, "bias", _select(module.bias, 0, index))
        if module.groups > 1:  # depthwise: inputs follow outputs
            module.in_channels = module.groups = len(index)
        module.out_channels = len(index)
    elif isinstance(module, nn.Linear):
        index = _keep_index(module.out_features, removed, device)
        _set(module, "weight", _select(module.weight, 0, index))
        _set(module, "bias", _select(module.bias, 0, index))
        module.out_features = len(index)
    else:
        raise TypeError(f"cannot shrink outputs of {type(module).__name__}")


def _shrink_in(module: nn.Module, removed: list[int]) -> None:
    if isinstance(module, nn.Conv2d):
        index = _keep_index(module.in_channels, removed, module.weight.device)
        _set(module, "weight", _select(module.weight, 1, index))
        module.in_channels = len(index)
    elif isinstance(module, nn.Linear):
        index = _keep_index(module.in_features, removed, module.weight.device)
        _set(module, "weight", _select(module.weight, 1, index))
        module.in_features = len(index)
    else:
        raise TypeError(f"cannot shrink inputs of {type(module).__name__}")


def shrink_modules(model: nn.Module, removed: Mapping[tuple[str, str], list[int]]) -> nn.Module:
    """Remove the given feature indices from each (module name, "in"/"out") of `model`.

    Returns:
        `model`, changed in place.
    """
    for (name, dim), indices in removed.items():
        if not indices:
            continue
        module = model.get_submodule(name)
        if dim == "out":
            _shrink_out(module, indices)
        elif dim == "in":
            if isinstance(module, nn.Conv2d) and module.groups > 1:
                continue  # depthwise inputs were shrunk with the outputs
            _shrink_in(module, indices)
        else:
            raise ValueError(f"dim must be 'in' or 'out', got {dim!r}")
    return model


@torch.no_grad()
def mask_modules(model: nn.Module, removed: Mapping[tuple[str, str], list[int]]) -> nn.Module:
    """Reference: zero the removed output channels (weights, biases, BN scale and shift).

    A zeroed channel stays zero through BN, ReLU, pooling and residual additions when
    every producer of its group is zeroed, which is what a group plan guarantees.
    """
    for (name, dim), indices in removed.items():
        if dim != "out" or not indices:
            continue
        module = model.get_submodule(name)
        index = torch.tensor(indices, dtype=torch.long)
        for param_name in ("weight", "bias"):
            param = getattr(module, param_name, None)
            if param is not None:
                param.index_fill_(0, index.to(param.device), 0.0)
    return model
