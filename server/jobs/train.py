"""The training loop every step shares: Adam, progress events per batch, cancel checks."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from augserve.server.jobs.data import Dataset
from augserve.server.jobs.progress import Context

Loss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def evaluate(model: nn.Module, x: np.ndarray, y: np.ndarray, batch_size: int = 512) -> float:
    """Top-1 accuracy of `model` on (x, y), in eval mode, in batches."""
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    correct = 0
    with torch.inference_mode():
        for start in range(0, len(y), batch_size):
            logits = model(torch.from_numpy(x[start : start + batch_size]))
            correct += int((logits.argmax(1).numpy() == y[start : start + batch_size]).sum())
    if was_training:
        model.train()
    return correct / max(len(y), 1)


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, _: torch.Tensor) -> torch.Tensor:
    """Plain cross-entropy (the third argument, the batch's images, is unused)."""
    return F.cross_entropy(logits, labels)


def fit(
    model: nn.Module, data: Dataset, ctx: Context, stage: str, epochs: int, lr: float,
    param_groups: Iterable[dict] | None = None, loss: Loss = cross_entropy,
    augment: bool = False, batch_size: int = 64, after_step: Callable[[], None] | None = None,
    salt: int = 0, frozen: nn.Module | None = None,
) -> float:
    """Train `model` on `data.train_*`; return its final held-out accuracy.

    Args:
        model: trained in place (left in eval mode).
        data: the dataset; accuracy is measured on its held-out split after each epoch.
        ctx: progress and cancellation (checked after every batch).
        stage: the stage name in progress events.
        epochs: passes over the training split.
        lr: Adam's learning rate (cosine-annealed to 0 over the epochs).
        param_groups: optimizer groups (default: every parameter that requires grad).
        loss: loss(logits, labels, images) -> scalar.
        augment: stream the batches through the augmentation pipeline.
        batch_size: images per batch.
        after_step: called after every optimizer step (e.g. to re-apply pruning masks).
        salt: varies the shuffling between stages of one job.
        frozen: a submodule kept in eval mode while training (a frozen backbone's BN).
    """
    groups = list(param_groups) if param_groups is not None else [
        {"params": [p for p in model.parameters() if p.requires_grad]}
    ]
    optimizer = torch.optim.Adam(groups, lr=lr)
    steps = -(-len(data.train_y) // batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(epochs * steps, 1))
    acc = -1.0
    for epoch in range(epochs):
        model.train()
        if frozen is not None:
            frozen.eval()
        total, seen = 0.0, 0
        seed = ctx.seed * 7919 + salt
        for step, (x, y) in enumerate(
            data.train_batches(batch_size, seed, epoch, augment=augment), 1
        ):
            optimizer.zero_grad(set_to_none=True)
            value = loss(model(x), y, x)
            value.backward()
            optimizer.step()
            schedule.step()
            if after_step is not None:
                after_step()
            total, seen = total + float(value.detach()) * len(y), seen + len(y)
            if ctx.emit(stage=stage, epoch=epoch + 1, epochs=epochs, step=step, steps=steps,
                        loss=total / seen, accuracy=acc):
                ctx.check()
        acc = evaluate(model, data.test_x, data.test_y)
        ctx.emit(force=True, stage=stage, epoch=epoch + 1, epochs=epochs, step=steps,
                 steps=steps, loss=total / max(seen, 1), accuracy=acc)
        ctx.check()
    model.eval()
    return acc if epochs else evaluate(model, data.test_x, data.test_y)
