"""The transfer step: f_new for a new task from a trained source model's weights.

The source must have an `fc` attribute (its fully-connected head, an nn.Module) and compute
`fc(backbone(x))`, as `augserve.server.zoo.DigitsCNN`, `FacesCNN` and the zoo's ResNets do;
its backbone is every other child module. Five methods, each under its own name:

- feature_extraction: the backbone is frozen (BN statistics too) and its global pooling
  is left out: a new Linear classifier is trained on the flattened last conv maps
  (2w x 4 x 4 = 512 features for a width-16 `digits_net`, against 32 after pooling).
- gap_transfer: the backbone is frozen; a new Linear head after its global average
  pooling is the only thing trained.
- fc_transfer: the backbone is frozen; the source's fully-connected layers are reused as
  the head's initial weights and retrained (the last Linear re-made when the class count
  differs).
- full_finetune: everything trains from the source's weights (the head as in
  fc_transfer); the backbone at `lr * backbone_lr_scale`, the head at `lr`.
- scratch: the same architecture from random weights, trained on the same images: the
  baseline.

A model of feature_extraction is written as its source's architecture with the pooling
module swapped for `nn.Identity` and a wider `fc`; `kernels.serialize` records both swaps,
so the version reloads as it was trained.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from augserve.server.errors import FailedPrecondition
from augserve.server.jobs.data import Dataset
from augserve.server.jobs.progress import Context
from augserve.server.jobs.specs import Transfer
from augserve.server.jobs.train import fit

#: The methods that train only a head on a frozen backbone.
FROZEN_METHODS = ("feature_extraction", "gap_transfer", "fc_transfer")
_GLOBAL_POOLS = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


def backbone(model: nn.Module) -> nn.ModuleList:
    """Every child module of `model` but its head `fc` (the modules a frozen method freezes).

    Raises:
        FailedPrecondition: `model` has no `fc` module, or nothing besides it.
    """
    if not isinstance(getattr(model, "fc", None), nn.Module):
        raise FailedPrecondition(
            f"transfer needs a source with a fully-connected head `fc` (an nn.Module) applied "
            f"to its backbone's output; {type(model).__name__} has none (a TorchScript or "
            f"torch.export source cannot be taken apart: give a state_dict + architecture)"
        )
    rest = [m for name, m in model.named_children() if name != "fc"]
    if not any(p.numel() for m in rest for p in m.parameters()):
        raise FailedPrecondition(
            f"transfer needs a backbone besides `fc`; {type(model).__name__} has no other layers"
        )
    return nn.ModuleList(rest)


def _linears(head: nn.Module) -> list[tuple[str, nn.Linear]]:
    return [(n, m) for n, m in head.named_modules() if isinstance(m, nn.Linear)]


def _global_pools(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [
        (name, m) for name, m in model.named_modules()
        if isinstance(m, _GLOBAL_POOLS) and m.output_size in (1, (1, 1))
    ]


def _feature_dim(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """The width of what the backbone hands its head, for one input of `input_shape`."""
    head, model.fc = model.fc, nn.Identity()
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros((1, *input_shape)))
    finally:
        model.fc = head
        model.train(was_training)
    if out.dim() != 2:
        raise FailedPrecondition(
            f"transfer: the backbone's output must be (N, features), got {tuple(out.shape)}")
    return int(out.shape[1])


def _fresh_last(head: nn.Module, num_classes: int) -> nn.Module:
    """The head with its last Linear re-made for `num_classes` (kept if it already fits)."""
    linears = _linears(head)
    if not linears:
        raise FailedPrecondition(
            f"fc_transfer / full_finetune reuse the source's fully-connected layers; its "
            f"`fc` ({type(head).__name__}) has no nn.Linear")
    name, last = linears[-1]
    if last.out_features == num_classes:
        return head
    new = nn.Linear(last.in_features, num_classes)
    if not name:
        return new
    parent, _, child = name.rpartition(".")
    setattr(head.get_submodule(parent) if parent else head, child, new)
    return head


def _unpool(model: nn.Module) -> None:
    """Swap every global pooling module of `model` for nn.Identity (in place)."""
    pools = _global_pools(model)
    if not pools:
        raise FailedPrecondition(
            f"feature_extraction leaves out the backbone's global pooling, and "
            f"{type(model).__name__} has no AdaptiveAvgPool2d(1) / AdaptiveMaxPool2d(1) module "
            f"to leave out (a pooling written as a function cannot be removed): use gap_transfer"
        )
    for name, _ in pools:
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, nn.Identity())


def build(
    source: nn.Module, step: Transfer, num_classes: int, fresh: nn.Module,
    input_shape: tuple[int, ...],
) -> nn.Module:
    """The untrained f_new for `step.method` (a copy; `source` is not changed).

    Args:
        source: the trained source model.
        step: the transfer settings.
        num_classes: the new task's class count.
        fresh: a randomly initialised model of the target architecture (for "scratch").
        input_shape: one sample's shape (C, H, W): sizes feature_extraction's classifier.

    Raises:
        FailedPrecondition: the source cannot be taken apart as the method needs.
    """
    if step.method == "scratch":
        return fresh
    backbone(source)
    model = copy.deepcopy(source)
    if step.method == "feature_extraction":
        _unpool(model)
        model.fc = nn.Linear(_feature_dim(model, input_shape), num_classes)
    elif step.method == "gap_transfer":
        if not any(isinstance(m, nn.AdaptiveAvgPool2d) for _, m in _global_pools(model)):
            raise FailedPrecondition(
                f"gap_transfer puts its head after the backbone's global average pooling; "
                f"{type(model).__name__} has no AdaptiveAvgPool2d(1) module")
        model.fc = nn.Linear(_feature_dim(model, input_shape), num_classes)
    else:
        model.fc = _fresh_last(model.fc, num_classes)
    frozen = step.method in FROZEN_METHODS
    for param in backbone(model).parameters():
        param.requires_grad_(not frozen)
    return model


def run_transfer(
    source: nn.Module, step: Transfer, data: Dataset, ctx: Context, fresh: nn.Module
) -> nn.Module:
    """Build and train f_new on `data`; returns it in eval mode."""
    torch.manual_seed(ctx.seed)
    model = build(source, step, data.num_classes, fresh, data.input_shape)
    groups = None
    if step.method == "full_finetune":
        groups = [
            {"params": list(backbone(model).parameters()),
             "lr": step.lr * step.backbone_lr_scale},
            {"params": list(model.fc.parameters()), "lr": step.lr},
        ]
    fit(model, data, ctx, f"transfer ({step.method})", step.epochs, step.lr,
        param_groups=groups, augment=step.augment,
        frozen=backbone(model) if step.method in FROZEN_METHODS else None)
    return model


def architecture_kwargs(source_kwargs: dict, step: Transfer, num_classes: int) -> dict:
    """The factory kwargs of f_new: the source's, with the new class count.

    A new head (feature_extraction, gap_transfer) is one Linear, so its `hidden` is 0; the
    saved module shapes (`kernels.serialize`) widen it and drop the pooling on load.
    """
    kwargs = {**source_kwargs, "num_classes": num_classes}
    if step.method in ("feature_extraction", "gap_transfer") and "hidden" in kwargs:
        kwargs["hidden"] = 0
    return kwargs
