"""Architectures the jobs train and write, and the measures the model cards report.

`digits_net` is a small CNN for scikit-learn's 8x8 digits given as 3 x 8 x 8 (the grey image
on three channels, the augmentation pipeline's RGB layout). It is importable, so a
weights-only state_dict or an `augserve_compressed` folder can name it as
"augserve.server.jobs.models:digits_net".

Example:
    >>> model = digits_net(num_classes=10, width=8)
    >>> model(torch.zeros(2, 3, 8, 8)).shape
    torch.Size([2, 10])
    >>> count_macs(model, (1, 3, 8, 8))
    124576
"""

from __future__ import annotations

import torch
from torch import nn

from augserve.server.zoo import DigitsCNN

ARCHITECTURE = "augserve.server.jobs.models:digits_net"


def digits_net(num_classes: int = 10, width: int = 32, hidden: int = 0) -> DigitsCNN:
    """The jobs' digits classifier on 3 x 8 x 8 inputs: `width` channels, 2x after."""
    return DigitsCNN(num_classes, width, hidden, in_channels=3)


def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of the Conv2d and Linear layers for one forward pass.

    Works on eager float models (pruned ones included); int8 modules are not counted.
    """
    total = 0

    def conv_hook(module: nn.Conv2d, _: object, out: torch.Tensor) -> None:
        nonlocal total
        k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
        total += out.numel() * k

    def linear_hook(module: nn.Linear, _: object, out: torch.Tensor) -> None:
        nonlocal total
        total += out.numel() * module.in_features

    hooks = []
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            hooks.append(module.register_forward_hook(conv_hook))
        elif isinstance(module, nn.Linear):
            hooks.append(module.register_forward_hook(linear_hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(input_shape))
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    return total // input_shape[0]


def count_params(model: nn.Module) -> int:
    """Parameters and buffers that hold weights (int8 buffers included, BN statistics too)."""
    seen = {id(t): t for t in list(model.parameters()) + list(model.buffers())}
    return sum(t.numel() for t in seen.values() if t.dtype != torch.int64)
