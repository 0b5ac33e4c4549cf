"""The albumentations peer's ImageNet training pipeline: one definition for every bench.

RandomResizedCrop to 224 (scale 0.08-1), horizontal flip, colour jitter (0.4, 0.4, 0.4,
0.1; p 0.8) and greyscale (p 0.2): the same ops and probabilities as augserve's own
ImageNet pipeline in the benches, so the two do the same work.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def imagenet_train(mean: Sequence[float] | None = None,
                   std: Sequence[float] | None = None) -> Any:
    """The `albumentations.Compose`; with `mean` and `std` it ends with `Normalize`."""
    import albumentations as A

    ops = [
        A.RandomResizedCrop(size=(224, 224), scale=(0.08, 1.0)),
        A.HorizontalFlip(p=0.5),
        A.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1, p=0.8),
        A.ToGray(num_output_channels=3, p=0.2),
    ]
    if mean is not None and std is not None:
        ops.append(A.Normalize(mean=mean, std=std))
    return A.Compose(ops)
