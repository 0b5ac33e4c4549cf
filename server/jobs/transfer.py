"""The transfer step: f_new for a new task from a trained source model's weights.

The source must expose `features` (the backbone, ending in global average pooling and a
flatten, or a `features()` method) and `fc` (the fully-connected head), as
`augserve.server.zoo.DigitsCNN` and the zoo's ResNets do.

- feature: the backbone is frozen (BN statistics too); a new Linear head after global
  average pooling is the only thing trained.
- fc: the backbone is frozen; the source's fully-connected layers are reused and retrained
  (the last Linear is re-made when the class count differs).
- full: everything trains; the backbone at `lr * backbone_lr_scale`, the head at `lr`.
- scratch: the same architecture from random weights, trained on the same images.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from augserve.server.errors import InvalidArgument
from augserve.server.jobs.data import Dataset
from augserve.server.jobs.progress import Context
from augserve.server.jobs.specs import Transfer
from augserve.server.jobs.train import fit


def _backbone(model: nn.Module) -> nn.Module:
    features = getattr(model, "features", None)
    if not isinstance(features, nn.Module) or not isinstance(getattr(model, "fc", None), nn.Module):
        raise InvalidArgument(
            f"transfer needs a source module with `features` (nn.Module) and `fc` attributes; "
            f"got {type(model).__name__} (serve the source as state_dict or augserve_compressed)"
        )
    return features


def _linears(head: nn.Module) -> list[tuple[str, nn.Linear]]:
    return [(n, m) for n, m in head.named_modules() if isinstance(m, nn.Linear)]


def _feature_dim(model: nn.Module) -> int:
    return _linears(model.fc)[0][1].in_features


def _fresh_last(head: nn.Module, num_classes: int) -> nn.Module:
    """The head with its last Linear re-made for `num_classes` (kept if it already fits)."""
    name, last = _linears(head)[-1]
    if last.out_features == num_classes:
        return head
    new = nn.Linear(last.in_features, num_classes)
    if not name:
        return new
    parent, _, child = name.rpartition(".")
    setattr(head.get_submodule(parent) if parent else head, child, new)
    return head


def build(source: nn.Module, step: Transfer, num_classes: int, fresh: nn.Module) -> nn.Module:
    """The untrained f_new for `step.method` (a copy; `source` is not changed).

    Args:
        source: the trained source model.
        step: the transfer settings.
        num_classes: the new task's class count.
        fresh: a randomly initialised model of the target architecture (for "scratch").
    """
    if step.method == "scratch":
        return fresh
    _backbone(source)
    model = copy.deepcopy(source)
    if step.method == "feature":
        model.fc = nn.Linear(_feature_dim(source), num_classes)
    else:
        model.fc = _fresh_last(model.fc, num_classes)
    frozen = step.method in ("feature", "fc")
    for param in _backbone(model).parameters():
        param.requires_grad_(not frozen)
    return model


def run_transfer(
    source: nn.Module, step: Transfer, data: Dataset, ctx: Context, fresh: nn.Module
) -> nn.Module:
    """Build and train f_new on `data`; returns it in eval mode."""
    torch.manual_seed(ctx.seed)
    model = build(source, step, data.num_classes, fresh)
    backbone = None if step.method == "scratch" else _backbone(model)
    groups = None
    if step.method == "full":
        groups = [
            {"params": list(backbone.parameters()), "lr": step.lr * step.backbone_lr_scale},
            {"params": list(model.fc.parameters()), "lr": step.lr},
        ]
    fit(model, data, ctx, f"transfer ({step.method})", step.epochs, step.lr,
        param_groups=groups, frozen=backbone if step.method in ("feature", "fc") else None)
    return model


def architecture_kwargs(source_kwargs: dict, step: Transfer, num_classes: int) -> dict:
    """The factory kwargs of f_new: the source's, with the new class count.

    A feature-extraction head is one Linear, so its `hidden` is 0.
    """
    kwargs = {**source_kwargs, "num_classes": num_classes}
    if step.method == "feature" and "hidden" in kwargs:
        kwargs["hidden"] = 0
    return kwargs
