"""The distill step: a teacher trains a student with Hinton's loss, on augmented batches.

loss = α T² KL(softmax(t / T) || softmax(s / T)) + (1 - α) CE(s, y)

The T² keeps the soft term's gradients on the scale of the hard term's as T grows.
"""

from __future__ import annotations

import importlib

import torch
import torch.nn.functional as F
from torch import nn

from augserve.server.jobs.data import Dataset
from augserve.server.jobs.models import ARCHITECTURE
from augserve.server.jobs.progress import Context
from augserve.server.jobs.specs import Distill
from augserve.server.jobs.train import fit


def hinton_loss(
    student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor,
    temperature: float, alpha: float,
) -> torch.Tensor:
    """α T² KL(teacher_T || student_T) + (1 - α) cross-entropy, as a scalar.

    Example:
        >>> s = torch.tensor([[2.0, 0.0]]); y = torch.tensor([0])
        >>> float(hinton_loss(s, s, y, 4.0, 1.0))
        0.0
    """
    soft = F.kl_div(
        F.log_softmax(student / temperature, dim=1),
        F.log_softmax(teacher / temperature, dim=1),
        reduction="batchmean", log_target=True,
    )
    return alpha * temperature**2 * soft + (1 - alpha) * F.cross_entropy(student, labels)


def make_student(width: int, num_classes: int, seed: int) -> nn.Module:
    """A fresh `digits_net` of `width` channels (seeded)."""
    torch.manual_seed(seed)
    module_name, _, attr = ARCHITECTURE.partition(":")
    return getattr(importlib.import_module(module_name), attr)(num_classes=num_classes, width=width)


def run_distill(
    teacher: nn.Module, student: nn.Module, step: Distill, data: Dataset, ctx: Context
) -> nn.Module:
    """Train `student` (in place) against the frozen `teacher`; returns the student."""
    teacher.eval()

    def loss(logits: torch.Tensor, labels: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = teacher.to(images.device)(images)  # a GPU Ray Train worker's device
        return hinton_loss(logits, target, labels, step.temperature, step.alpha)

    fit(student, data, ctx, "distill", step.epochs, step.lr, loss=loss, augment=step.augment)
    return student
