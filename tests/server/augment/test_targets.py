"""Boxes, keypoints and masks move with the image, for every geometric op."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from augserve.server.augment.ops import CenterCrop, RandomCrop
from augserve.server.augment.pipeline import Pipeline
from augserve.server.augment.spec import PipelineSpec
from augserve.server.augment.targets import Targets

from .cases import GEOMETRIC, OP_CASES

H, W = 150, 190
BOX = (50.0, 40.0, 120.0, 100.0)  # x0, y0, x1, y1


def scene() -> tuple[np.ndarray, Targets]:
    """An image with a bright rectangle, its mask, its box and keypoints on it."""
    image = np.full((H, W, 3), 30, np.uint8)
    mask = np.zeros((H, W), np.uint8)
    x0, y0, x1, y1 = (int(v) for v in BOX)
    image[y0:y1, x0:x1] = 220
    mask[y0:y1, x0:x1] = 1
    points = np.array([[85.0, 70.0], [60.5, 50.5], [110.5, 90.5]], np.float32)
    return image, Targets(np.array([BOX], np.float32), points, mask)


def mask_box(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float64)


@pytest.mark.parametrize("name", GEOMETRIC)
def test_box_keypoints_and_mask_agree(name):
    op = OP_CASES[name]
    if op.p < 1:
        op = dataclasses.replace(op, p=1.0)
    pipeline = Pipeline(PipelineSpec((op,), dtype="uint8", layout="NHWC"))
    image, targets = scene()
    checked = 0
    for seed in range(12):
        result = pipeline([image] * 4, seed=seed, targets=[targets] * 4)
        for out, moved in zip(result.images, result.targets, strict=True):
            assert moved.mask is not None and moved.mask.shape == tuple(out.shape[:2])
            if moved.mask.sum() < 20:  # cropped away: the box goes with it
                assert len(moved.boxes) == 0 or moved.boxes[0, 2] - moved.boxes[0, 0] < 8
                continue
            # the mask's extent is the box (rotation: the box bounds the turned rectangle)
            assert len(moved.boxes) == 1 and moved.box_indices.tolist() == [0]
            scale = max(out.shape[0] / H, out.shape[1] / W, 1.0)
            assert np.abs(mask_box(moved.mask) - moved.boxes[0]).max() <= 1.5 * scale
            # the image moved the same way: bright where the mask is set
            assert np.median(out.numpy()[moved.mask > 0, 0]) > 150
            # visible keypoints land on the mask (nearest pixel, one pixel of slack)
            for (x, y), visible in zip(moved.keypoints, moved.keypoints_visible, strict=True):
                if visible:
                    r, c = int(y), int(x)
                    window = moved.mask[max(r - 1, 0) : r + 2, max(c - 1, 0) : c + 2]
                    assert window.any()
            checked += 1
    assert checked >= 12


def test_box_policy_clip_and_drop():
    image, targets = scene()
    crop = CenterCrop(size=(60, 60))  # the centred crop cuts the box on every side
    clip = Pipeline(PipelineSpec((crop,), "uint8", "NHWC", box_policy="clip"))
    drop = Pipeline(PipelineSpec((crop,), "uint8", "NHWC", box_policy="drop"))
    clipped = clip([image], targets=[targets]).targets[0]
    x0, y0 = (W - 60) // 2, (H - 60) // 2
    want = np.clip(np.array(BOX) - [x0, y0, x0, y0], 0, 60)
    np.testing.assert_allclose(clipped.boxes[0], want)
    assert len(drop([image], targets=[targets]).targets[0].boxes) == 0
    # a box that leaves entirely is dropped under either policy, and its index goes with it
    far = Targets(np.array([[0, 0, 10, 10], list(BOX)], np.float32))
    kept = clip([image], targets=[far]).targets[0]
    assert kept.box_indices.tolist() == [1]


def test_keypoints_leaving_the_image_are_marked():
    image, targets = scene()
    crop = RandomCrop(size=(40, 40), padding=0)
    result = Pipeline(PipelineSpec((crop,), "uint8", "NHWC"))([image] * 16, seed=3,
                                                              targets=[targets] * 16)
    flags = np.stack([t.keypoints_visible for t in result.targets])
    for moved in result.targets:
        inside = ((moved.keypoints >= 0) & (moved.keypoints < 40)).all(1)
        np.testing.assert_array_equal(moved.keypoints_visible, inside)
    assert (~flags).any()


AXIS_ALIGNED = ["horizontal_flip", "vertical_flip", "random_crop", "random_resized_crop",
                "resize", "center_crop", "scale"]


@settings(max_examples=20, deadline=None)
@given(names=st.lists(st.sampled_from(AXIS_ALIGNED), min_size=2, max_size=3),
       seed=st.integers(0, 2**32))
def test_chains_of_axis_aligned_ops_keep_box_and_mask_together(names, seed):
    ops = tuple(dataclasses.replace(OP_CASES[n], p=1.0) if OP_CASES[n].p < 1 else OP_CASES[n]
                for n in names)
    image, targets = scene()
    result = Pipeline(PipelineSpec(ops, "uint8", "NHWC"))([image], seed=seed, targets=[targets])
    moved = result.targets[0]
    assume(moved.mask.sum() >= 30 and len(moved.boxes) == 1)  # the rectangle is still seen
    out_h, out_w = moved.mask.shape
    # each resampling may move a mask edge by half a pixel at its scale
    slack = 1.5 * len(names) * max(out_h / H, out_w / W, H / out_h, W / out_w, 1.0)
    assert np.abs(mask_box(moved.mask) - moved.boxes[0]).max() <= slack
