"""Pruning: weight masks, channel scores, dependency groups and physical channel removal."""

from augserve.kernels.prune.graph import ChannelGraph, Dependency, Group, Node, PrunePlan
from augserve.kernels.prune.masks import (
    block_mask,
    global_magnitude_masks,
    magnitude_mask,
    nm_mask,
)
from augserve.kernels.prune.scores import bn_scale_scores, channel_scores, filter_scores
from augserve.kernels.prune.shrink import mask_modules, shrink_modules

__all__ = [
    "ChannelGraph",
    "Dependency",
    "Group",
    "Node",
    "PrunePlan",
    "block_mask",
    "bn_scale_scores",
    "channel_scores",
    "filter_scores",
    "global_magnitude_masks",
    "magnitude_mask",
    "mask_modules",
    "nm_mask",
    "shrink_modules",
]
