"""ImageData: the seeded split, sharded epochs, pipelines sized to the model, and the digits."""

import numpy as np
import pytest
import torch

from augserve.server.data.datasets import DatasetSpec, open_dataset
from augserve.server.errors import FailedPrecondition, NotFound
from augserve.server.jobs.data import load_dataset, open_job_data
from augserve.server.jobs.image_data import ImageData

PHOTOS = DatasetSpec("builtin", name="photos", count=36)


@pytest.fixture(scope="module")
def data():
    return ImageData.split("photos", open_dataset(PHOTOS), (3, 16, 16), 0.25, seed=3)


def test_the_split_holds_out_each_class_by_its_share_and_follows_the_seed(data):
    assert np.bincount(data.test_y).tolist() == [2] * 6 and len(data.train_y) == 24
    again = ImageData.split("photos", open_dataset(PHOTOS), (3, 16, 16), 0.25, seed=3)
    other = ImageData.split("photos", open_dataset(PHOTOS), (3, 16, 16), 0.25, seed=4)
    assert np.array_equal(again._validation_index, data._validation_index)
    assert not np.array_equal(other._validation_index, data._validation_index)
    assert data.test_x.shape == (12, 3, 16, 16) and data.test_x.dtype == np.float32


def test_ranks_share_an_epoch_without_overlap_and_batches_replay(data):
    whole = torch.cat([x for x, _ in data.train_batches(5, seed=1, epoch=0)])
    # Several ranks keep full batches only (DDP lockstep): 24 // (2 * 4) = 3 batches each.
    shards = [torch.cat([x for x, _ in data.train_batches(4, 1, 0, rank=r, world=2)])
              for r in (0, 1)]
    assert len(whole) == 24 and [len(s) for s in shards] == [12, 12]
    assert torch.equal(torch.cat(shards).sort(0).values, whole.sort(0).values)
    first = next(data.train_batches(8, seed=1, epoch=0))[0]
    assert torch.equal(first, next(data.train_batches(8, seed=1, epoch=0))[0])
    assert not torch.equal(first, next(data.train_batches(8, seed=1, epoch=1))[0])


def test_the_digits_keep_their_split_and_unknown_names_are_not_found():
    digits = open_job_data("digits", (3, 8, 8))
    assert digits.input_shape == (3, 8, 8)
    assert np.array_equal(digits.test_y, load_dataset("digits").test_y)
    with pytest.raises(NotFound, match=r"known datasets: .*'crops'"):
        open_job_data("nope", (3, 8, 8), {"crops": PHOTOS})


def test_a_model_that_does_not_take_rgb_squares_is_refused():
    with pytest.raises(FailedPrecondition, match="takes 1x8x8, not 3xSxS"):
        open_job_data({"kind": "builtin", "name": "photos", "count": 12}, (1, 8, 8))
