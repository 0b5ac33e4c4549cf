"""`compress_(model, Config)`: one frozen config per technique, one handler registered per config.

    >>> from augserve.kernels.zoo import resnet20  # doctest: +SKIP
    >>> compress_(model, ChannelPruneConfig(0.5, (1, 3, 32, 32)))  # doctest: +SKIP
    >>> compress_(model, Int8Config())  # doctest: +SKIP

Handlers change the model in place (and return it). An unknown config raises a TypeError
that lists the known ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import nn

from augserve.kernels.backend import Backend
from augserve.kernels.prune.graph import ChannelGraph
from augserve.kernels.prune.masks import global_magnitude_masks, magnitude_mask, nm_mask
from augserve.kernels.quant.modules import Int8Conv2d, Int8Linear
from augserve.kernels.quant.weight_only import Int4WeightOnlyLinear, Int8WeightOnlyLinear


@dataclass(frozen=True)
class Int8Config:
    """Dynamic int8: Linear -> Int8Linear, Conv2d (groups=1) -> Int8Conv2d (im2col).

    For the fastest whole-model CPU path use `quant.model.quantize_model` instead.
    """

    backend: Backend = Backend.AUTO
    convs: bool = True


@dataclass(frozen=True)
class WeightOnlyConfig:
    """Weight-only quantization of every Linear: bits 8 (per channel) or 4 (group-wise)."""

    bits: int = 8
    group_size: int = 128
    backend: Backend = Backend.AUTO

    def __post_init__(self) -> None:
        if self.bits not in (4, 8):
            raise ValueError(f"bits must be 4 or 8, got {self.bits}")


@dataclass(frozen=True)
class ChannelPruneConfig:
    """Structured pruning that removes `ratio` of the channels of every prunable group.

    Attributes:
        ratio: fraction of channels removed per group, in [0, 1).
        input_shape: an example input shape for tracing, e.g. (1, 3, 32, 32).
        criterion: "l1", "l2" or "bn".
        round_to: round kept channel counts up to a multiple of this.
    """

    ratio: float = 0.5
    input_shape: tuple[int, ...] = (1, 3, 32, 32)
    criterion: str = "l1"
    round_to: int = 1

    def __post_init__(self) -> None:
        if not 0.0 <= self.ratio < 1.0:
            raise ValueError(f"ratio must be in [0, 1), got {self.ratio}")
        if self.criterion not in ("l1", "l2", "bn"):
            raise ValueError(f"criterion must be l1, l2 or bn, got {self.criterion!r}")


@dataclass(frozen=True)
class NMSparseConfig:
    """N:M sparsity masks (along the input dim) multiplied into Conv/Linear weights."""

    n: int = 2
    m: int = 4


@dataclass(frozen=True)
class MagnitudePruneConfig:
    """Unstructured magnitude masks, per layer or with one global threshold."""

    sparsity: float = 0.5
    global_threshold: bool = True


C = TypeVar("C")
_HANDLERS: dict[type, Callable[[nn.Module, Any], nn.Module]] = {}


Handler = Callable[[nn.Module, Any], nn.Module]


def register_handler(config_type: type[C]) -> Callable[[Handler], Handler]:
    """Decorator: register the function that applies `config_type` to a model."""

    def decorate(fn: Handler) -> Handler:
        _HANDLERS[config_type] = fn
        return fn

    return decorate


def compress_(model: nn.Module, config: object) -> nn.Module:
    """Apply the handler registered for `type(config)` to `model` in place; returns it."""
    handler = _HANDLERS.get(type(config))
    if handler is None:
        known = ", ".join(sorted(t.__name__ for t in _HANDLERS))
        raise TypeError(f"no handler for {type(config).__name__}; known configs: {known}")
    return handler(model, config)


def _replace(model: nn.Module, swap: Callable[[nn.Module], nn.Module | None]) -> nn.Module:
    for name, child in list(model.named_children()):
        new = swap(child)
        if new is not None:
            setattr(model, name, new)
        else:
            _replace(child, swap)
    return model


@register_handler(Int8Config)
def _int8(model: nn.Module, config: Int8Config) -> nn.Module:
    def swap(m: nn.Module) -> nn.Module | None:
        if isinstance(m, nn.Linear):
            return Int8Linear.from_float(m, backend=config.backend)
        if config.convs and isinstance(m, nn.Conv2d) and m.groups == 1:
            return Int8Conv2d.from_float(m, backend=config.backend)
        return None

    return _replace(model, swap)


@register_handler(WeightOnlyConfig)
def _weight_only(model: nn.Module, config: WeightOnlyConfig) -> nn.Module:
    def swap(m: nn.Module) -> nn.Module | None:
        if not isinstance(m, nn.Linear):
            return None
        if config.bits == 8:
            return Int8WeightOnlyLinear.from_float(m, config.backend)
        if m.in_features % config.group_size:
            return None  # leave layers the group size does not tile in float
        return Int4WeightOnlyLinear.from_float(m, config.group_size, config.backend)

    return _replace(model, swap)


@register_handler(ChannelPruneConfig)
def _channel_prune(model: nn.Module, config: ChannelPruneConfig) -> nn.Module:
    device = next(model.parameters()).device
    graph = ChannelGraph(model, (torch.randn(*config.input_shape, device=device),))
    plan = graph.plan(config.ratio, config.criterion, config.round_to)
    graph.check(plan)
    return graph.apply(plan)


def _prunable_weights(model: nn.Module) -> dict[str, nn.Parameter]:
    return {
        name: m.weight for name, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)
    }


@register_handler(NMSparseConfig)
@torch.no_grad()
def _nm(model: nn.Module, config: NMSparseConfig) -> nn.Module:
    for weight in _prunable_weights(model).values():
        if weight.shape[1] % config.m == 0:
            weight.mul_(nm_mask(weight, config.n, config.m))
    return model


@register_handler(MagnitudePruneConfig)
@torch.no_grad()
def _magnitude(model: nn.Module, config: MagnitudePruneConfig) -> nn.Module:
    weights = _prunable_weights(model)
    if config.global_threshold:
        masks = global_magnitude_masks(weights, config.sparsity)
    else:
        masks = {name: magnitude_mask(w, config.sparsity) for name, w in weights.items()}
    for name, weight in weights.items():
        weight.mul_(masks[name])
    return model
