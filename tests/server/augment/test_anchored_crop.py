"""AnchoredCrop: a crop at the centre or a corner, the crops of torchvision's FiveCrop."""

from __future__ import annotations

import numpy as np
import pytest

from augserve.server.augment.ops import OPS, CenterCrop
from augserve.server.augment.pipeline import Pipeline
from augserve.server.augment.spec import PipelineSpec, parse_pipeline
from augserve.server.errors import InvalidArgument

IMAGE = np.random.default_rng(0).integers(0, 256, (9, 12, 3), dtype=np.uint8)


def crop(anchor: str, size=(4, 5), backend="fast") -> np.ndarray:
    spec = PipelineSpec((OPS["anchored_crop"](size=size, anchor=anchor),), "uint8", "NHWC")
    return Pipeline(spec, backend)([IMAGE]).images[0].numpy()


@pytest.mark.parametrize(
    ("anchor", "rows", "cols"),
    [("top_left", slice(0, 4), slice(0, 5)), ("top_right", slice(0, 4), slice(7, 12)),
     ("bottom_left", slice(5, 9), slice(0, 5)), ("bottom_right", slice(5, 9), slice(7, 12)),
     ("center", slice(2, 6), slice(3, 8))],
)
@pytest.mark.parametrize("backend", ["fast", "kornia"])
def test_the_crop_is_the_slice_at_its_anchor(anchor, rows, cols, backend):
    np.testing.assert_array_equal(crop(anchor, backend=backend), IMAGE[rows, cols])


def test_center_is_center_crop():
    spec = PipelineSpec((CenterCrop(size=(4, 5)),), "uint8", "NHWC")
    np.testing.assert_array_equal(crop("center"), Pipeline(spec)([IMAGE]).images[0].numpy())


def test_unknown_anchor_names_the_field():
    with pytest.raises(InvalidArgument, match=r"\(anchored_crop\)\.anchor: expected one of"):
        parse_pipeline({"ops": [{"named": {"name": "anchored_crop",
                                           "params": {"size": [4, 4], "anchor": "middle"}}}]})
