"""The prune step: structured channel pruning or magnitude masks, on a gradual schedule.

Channel pruning goes through `kernels.compress_` with `ChannelPruneConfig` (plan -> check
-> apply on the dependency groups), so the result is a smaller dense model. Magnitude
pruning (global threshold or per layer) keeps the shapes and zeroes weights; the masks are
re-applied after every fine-tuning step so pruned weights stay zero.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from augserve.kernels.compress import ChannelPruneConfig, compress_
from augserve.kernels.prune.masks import global_magnitude_masks, magnitude_mask
from augserve.server.jobs.data import Dataset
from augserve.server.jobs.models import count_macs
from augserve.server.jobs.progress import Context
from augserve.server.jobs.specs import Prune
from augserve.server.jobs.train import fit


def schedule(target: float, stages: int) -> list[float]:
    """Cumulative fractions pruned after each stage: cubic ramp (Zhu & Gupta) to `target`.

    Example:
        >>> [round(s, 3) for s in schedule(0.5, 3)]
        [0.352, 0.481, 0.5]
    """
    return [target * (1 - (1 - (i + 1) / stages) ** 3) for i in range(stages)]


def ratio_for_flops(model: nn.Module, input_shape: tuple[int, ...], keep: float) -> float:
    """The channel ratio whose pruned model keeps at most `keep` of the MACs (bisection)."""
    full = count_macs(model, input_shape)
    low, high = 0.0, 0.99
    for _ in range(12):
        mid = (low + high) / 2
        pruned = compress_(copy.deepcopy(model), ChannelPruneConfig(mid, input_shape))
        if count_macs(pruned, input_shape) <= keep * full:
            high = mid
        else:
            low = mid
    return high


def _weights(model: nn.Module) -> dict[str, nn.Parameter]:
    return {n: m.weight for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)}


def run_prune(model: nn.Module, step: Prune, data: Dataset, ctx: Context) -> nn.Module:
    """Prune `model` to the step's target, fine-tuning after each stage; returns the model.

    Channel pruning returns a new, smaller module (the input is not changed).
    """
    shape = (1, *data.input_shape)
    if step.method == "channel":
        model = copy.deepcopy(model).eval()
        target = step.sparsity
        if step.target_flops:
            target = ratio_for_flops(model, shape, step.target_flops)
        kept = 1.0
        for index, fraction in enumerate(schedule(target, step.stages)):
            stage = f"prune {index + 1}/{step.stages}"
            ctx.emit(force=True, stage=stage, message=f"channels removed so far: {fraction:.3f}")
            # Each stage removes a ratio of what is left so the cumulative kept fraction
            # is 1 - fraction.
            ratio = 1 - (1 - fraction) / kept
            if ratio > 1e-6:
                model = compress_(model, ChannelPruneConfig(min(ratio, 0.99), shape))
            kept = 1 - fraction
            fit(model, data, ctx, f"{stage} finetune", step.finetune_epochs, step.lr,
                batch_size=step.batch_size, salt=index,
                evaluate_every=step.evaluate_every)
        return model
    weights = _weights(model)
    masks: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def apply_masks() -> None:
        for name, weight in weights.items():
            weight.mul_(masks[name])

    for index, fraction in enumerate(schedule(step.sparsity, step.stages)):
        stage = f"prune {index + 1}/{step.stages}"
        ctx.emit(force=True, stage=stage, message=f"weights removed: {fraction:.3f}")
        if step.method == "global":
            masks = global_magnitude_masks(weights, fraction)
        else:
            masks = {n: magnitude_mask(w, fraction) for n, w in weights.items()}
        apply_masks()
        fit(model, data, ctx, f"{stage} finetune", step.finetune_epochs, step.lr,
            after_step=apply_masks, batch_size=step.batch_size, salt=index,
            evaluate_every=step.evaluate_every)
    return model


def sparsity(model: nn.Module) -> float:
    """The fraction of zero weights over the model's Conv2d and Linear layers."""
    weights = list(_weights(model).values())
    zeros = sum(int((w == 0).sum()) for w in weights)
    return zeros / max(sum(w.numel() for w in weights), 1)
