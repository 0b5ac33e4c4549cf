"""The training loop every step shares: Adam, progress events per batch, cancel checks.

`fit` is the one loop. With `ctx.workers` > 1 it hands itself to
`augserve.server.jobs.distributed.fit_on_ray`, which runs this same `fit` in each Ray Train
worker on that worker's shard (`shard=(rank, world)`) of the epoch plan, the model wrapped
in DistributedDataParallel, and loads rank 0's weights back into `model`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from augserve.server.jobs.data import Dataset, epoch_plan
from augserve.server.jobs.progress import Context

Loss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def evaluate(model: nn.Module, x: np.ndarray, y: np.ndarray, batch_size: int = 512) -> float:
    """Top-1 accuracy of `model` on (x, y), in eval mode, in batches, on the model's device."""
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    device = _device(model)
    correct = 0
    with torch.inference_mode():
        for start in range(0, len(y), batch_size):
            logits = model(torch.from_numpy(x[start : start + batch_size]).to(device))
            correct += int((logits.argmax(1).cpu().numpy() == y[start : start + batch_size]).sum())
    if was_training:
        model.train()
    return correct / max(len(y), 1)


def _device(model: nn.Module) -> torch.device:
    parameters = model.parameters() if hasattr(model, "parameters") else iter(())
    return next(parameters, torch.empty(0)).device


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, _: torch.Tensor) -> torch.Tensor:
    """Plain cross-entropy (the third argument, the batch's images, is unused)."""
    return F.cross_entropy(logits, labels)


def fit(
    model: nn.Module, data: Dataset, ctx: Context, stage: str, epochs: int, lr: float,
    param_groups: Iterable[dict] | None = None, loss: Loss = cross_entropy,
    augment: bool = False, batch_size: int = 64, after_step: Callable[[], None] | None = None,
    salt: int = 0, frozen: nn.Module | None = None, shard: tuple[int, int] = (0, 1),
    evaluate_every: int = 1,
) -> float:
    """Train `model` on `data.train_*`; return its final held-out accuracy.

    Args:
        model: trained in place (left in eval mode).
        data: the dataset; accuracy is measured on its held-out split after the epochs
            `evaluate_every` picks.
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
        shard: (rank, world): train on that shard of each epoch (set by the Ray Train
            workers of `distributed.fit_on_ray`, whose `model` is DDP-wrapped).
        evaluate_every: evaluate after every that many epochs and after the last (the
            events of the epochs between carry the last accuracy measured, -1 before).
    """
    if ctx.workers > 1:
        from augserve.server.jobs.distributed import fit_on_ray

        return fit_on_ray(model, data, ctx, stage, epochs, lr, param_groups=param_groups,
                          loss=loss, augment=augment, batch_size=batch_size,
                          after_step=after_step, salt=salt, frozen=frozen,
                          evaluate_every=evaluate_every)
    rank, world = shard
    groups = list(param_groups) if param_groups is not None else [
        {"params": [p for p in model.parameters() if p.requires_grad]}
    ]
    optimizer = torch.optim.Adam(groups, lr=lr)
    steps = epoch_plan(len(data.train_y), batch_size, 0, 0, rank, world).num_batches()
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(epochs * steps, 1))
    device, held_out = _device(model), getattr(model, "module", model)  # DDP's own module
    acc = -1.0
    for epoch in range(epochs):
        model.train()
        if frozen is not None:
            frozen.eval()
        total, seen = 0.0, 0
        seed = ctx.seed * 7919 + salt
        for step, (x, y) in enumerate(
            data.train_batches(batch_size, seed, epoch, rank, world, augment=augment), 1
        ):
            x, y = x.to(device), y.to(device)
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
        if (epoch + 1) % evaluate_every == 0 or epoch + 1 == epochs:
            acc = evaluate(held_out, data.test_x, data.test_y)
        ctx.emit(force=True, stage=stage, epoch=epoch + 1, epochs=epochs, step=steps,
                 steps=steps, loss=total / max(seen, 1), accuracy=acc)
        ctx.check()
    model.eval()
    return acc if epochs else evaluate(model, data.test_x, data.test_y)
