"""The Augment RPC through `augserve serve`: ImageNet pipeline on real photos, replayed exactly."""

from __future__ import annotations

import numpy as np
from skimage import data

from augserve.clients import AugmentClient


def test_augment_through_the_served_process_replays_to_the_byte(served):
    photos = [data.astronaut(), data.coffee(), data.chelsea()]
    with AugmentClient(served.url) as client:
        first = client.augment(photos, pipeline_id="imagenet_train", seed=11, return_params=True)
        again = client.augment(photos, pipeline_id="imagenet_train", seed=11)
        replayed = client.augment(photos, pipeline_id="imagenet_train", params=first.params)
    assert first.images.shape == (3, 3, 224, 224)
    assert first.images.dtype == np.float32
    assert len(first.params) == 3
    np.testing.assert_array_equal(first.images, again.images)
    np.testing.assert_array_equal(first.images, replayed.images)
