"""Geometry targets: boxes (xyxy), keypoints and masks moved with the image.

Each geometric op maps continuous coordinates by its source -> destination affine map.
After every op a box becomes the bounding box of its four moved corners, and the box
policy applies: "clip" clips it to the image and drops it once empty; "drop" drops
any box that leaves the image. A keypoint stays visible while it is inside the image.
Masks go through the same crop / resize / warp / flip with nearest interpolation
and fill 0, on the CPU kernels whatever the image backend.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from augserve.server.augment.ops import GeometricOp, Op, OpParams


@dataclasses.dataclass(frozen=True)
class Targets:
    """The geometry targets of one image.

    Attributes:
        boxes: (k, 4) float32 x0, y0, x1, y1 in pixels.
        keypoints: (m, 2) float32 x, y in pixels.
        mask: optional (H, W) uint8 segmentation mask.
        box_indices: after augmentation, the input index of each kept box.
        keypoints_visible: after augmentation, whether each keypoint is inside the image.
    """

    boxes: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 4), np.float32))
    keypoints: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 2), np.float32))
    mask: np.ndarray | None = None
    box_indices: np.ndarray | None = None
    keypoints_visible: np.ndarray | None = None


def _move(points: np.ndarray, forward: np.ndarray) -> np.ndarray:
    return points @ forward[:2, :2].T + forward[:2, 2]


def _move_boxes(boxes: np.ndarray, forward: np.ndarray) -> np.ndarray:
    x0, y0, x1, y1 = boxes.T
    corners = np.stack([np.stack([x0, y0], -1), np.stack([x1, y0], -1),
                        np.stack([x0, y1], -1), np.stack([x1, y1], -1)], 1)
    moved = _move(corners.reshape(-1, 2), forward).reshape(-1, 4, 2)
    return np.concatenate([moved.min(1), moved.max(1)], 1)


def move_targets(
    targets: Targets, ops: tuple[Op, ...], params: tuple[OpParams, ...], sizes: list[torch.Tensor],
    i: int, box_policy: str,
) -> Targets:
    """Move sample `i`'s targets through the geometric ops.

    Args:
        targets: the input targets of the sample.
        ops: the pipeline's ops.
        params: their params for the whole batch.
        sizes: per op, the (n, 2) input sizes; one more entry for the output sizes.
        i: the sample's index in the batch.
        box_policy: "clip" or "drop".

    Returns:
        The moved targets, with `box_indices` and `keypoints_visible` filled in.
    """
    boxes = np.asarray(targets.boxes, np.float64).reshape(-1, 4)
    index = np.arange(len(boxes))
    points = np.asarray(targets.keypoints, np.float64).reshape(-1, 2)
    visible = np.ones(len(points), bool)
    mask = None if targets.mask is None else np.ascontiguousarray(targets.mask, np.uint8)
    for k, (op, p) in enumerate(zip(ops, params, strict=True)):
        if not isinstance(op, GeometricOp):
            continue
        one = p.take([i])
        size_in = sizes[k][i : i + 1]
        forward = op.forward(one, size_in)[0].numpy()
        out_h, out_w = (int(v) for v in sizes[k + 1][i])
        boxes = _move_boxes(boxes, forward) if len(boxes) else boxes
        if box_policy == "clip":
            boxes = np.clip(boxes, 0, [out_w, out_h, out_w, out_h])
            keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        else:
            keep = ((boxes[:, 0] >= 0) & (boxes[:, 1] >= 0) & (boxes[:, 2] <= out_w)
                    & (boxes[:, 3] <= out_h))
        boxes, index = boxes[keep], index[keep]
        points = _move(points, forward) if len(points) else points
        visible &= ((points[:, 0] >= 0) & (points[:, 0] < out_w) & (points[:, 1] >= 0)
                    & (points[:, 1] < out_h))
        if mask is not None:
            mask = op.move_mask(mask, one, forward, (out_h, out_w))
    return Targets(boxes.astype(np.float32), points.astype(np.float32), mask,
                   index.astype(np.int64), visible)
