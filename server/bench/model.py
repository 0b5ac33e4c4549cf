"""The model every inference bench serves: a CIFAR ResNet-20 (random weights, seed 0, fp32)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

MODEL = "resnet20"
INPUT_SHAPE = (3, 32, 32)


def write_repository(
    root: Path, max_batch_size: int, threads: int, replicas: int = 1, fill_delay_us: int = 0
) -> Path:
    """Write a one-model repository (ResNet-20, state_dict, seed 0); returns the weights file.

    The model runs in `replicas` replicas of `threads` torch threads; with several, a
    free replica may wait up to `fill_delay_us`, while another is busy, for
    max_batch_size / replicas rows.
    """
    import torch

    from augserve.server.zoo import resnet20

    torch.manual_seed(0)
    version = root / MODEL / "1"
    version.mkdir(parents=True)
    weights = version / "model.pth"
    torch.save(resnet20(num_classes=10).eval().state_dict(), weights)
    config = {
        "platform": "state_dict",
        "architecture": "augserve.server.zoo:resnet20",
        "architecture_kwargs": {"num_classes": 10},
        "max_batch_size": max_batch_size,
        "input": [{"name": "input", "datatype": "FP32", "dims": list(INPUT_SHAPE)}],
        "output": [{"name": "logits", "datatype": "FP32", "dims": [10]}],
        "instance_group": {"count": replicas, "kind": "cpu", "num_threads": threads},
        "dynamic_batching": {
            "max_queue_delay_microseconds": fill_delay_us,
            "preferred_batch_size": [max(1, max_batch_size // replicas)],
            "delay_only_while_busy": True,
        },
        # Every size the batcher can form: the first batch of a new size builds its oneDNN
        # primitives (4-6 ms more here), which the first rounds would otherwise pay.
        "warmup": {"batch_sizes": list(range(1, max_batch_size + 1))},
    }
    (root / MODEL / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return weights


def load_resnet20(weights: Path) -> Any:
    """The ResNet-20 of `write_repository` with its weights, in eval mode."""
    import torch

    from augserve.server.zoo import resnet20

    module = resnet20(num_classes=10)
    module.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return module.eval()
