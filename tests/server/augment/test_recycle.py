"""Output batches are reused only once nothing refers to them, and the pool stays bounded."""

from __future__ import annotations

import numpy as np
import torch

from augserve.server.augment.pipeline import IMAGENET_TRAIN, Pipeline
from augserve.server.augment.recycle import BatchRecycler

SHAPE = (4, 3, 256, 256)  # 3 MiB of float32: above MIN_BYTES


def test_a_released_batch_is_reused_and_a_held_one_never_is():
    pool = BatchRecycler()
    first = pool.empty(SHAPE, np.float32)
    tensor = torch.from_numpy(first)
    del first
    second = pool.empty(SHAPE, np.float32)
    assert second is not tensor.numpy()  # the tensor still holds the first
    view = tensor[1]
    del tensor
    third = pool.empty(SHAPE, np.float32)
    assert third is not view.numpy().base and third is not second  # a view holds it too
    kept = {id(a) for a in pool._arrays}
    del view, second, third
    again = pool.empty(SHAPE, np.float32)
    assert id(again) in kept and again.shape == SHAPE and again.dtype == np.float32


def test_small_arrays_are_not_kept_and_the_pool_drops_free_batches_past_its_cap():
    pool = BatchRecycler(max_bytes=2 * 4 * np.prod(SHAPE))
    assert pool.empty((8, 8), np.float32).shape == (8, 8) and pool._arrays == []
    first, second = pool.empty(SHAPE, np.float32), pool.empty(SHAPE, np.float32)
    assert len(pool._arrays) == 2
    del first, second
    bigger = pool.empty((8, *SHAPE[1:]), np.float32)  # both free: dropped to make room
    assert len(pool._arrays) == 1 and pool._arrays[0] is bigger
    held = pool.empty(SHAPE, np.float32)  # the pool is full of a held batch: not kept
    assert all(a is not held for a in pool._arrays)

def test_a_pipeline_result_kept_by_the_caller_is_not_overwritten_by_the_next_call():
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (256, 256, 3), dtype=np.uint8) for _ in range(12)]
    pipeline = Pipeline(IMAGENET_TRAIN, backend="fast")
    kept = pipeline(images, seed=1).images
    snapshot = kept.clone()
    for seed in (2, 3):
        pipeline(images, seed=seed)
    assert torch.equal(kept, snapshot)
    assert torch.equal(pipeline(images, seed=1).images, snapshot)  # reused memory, same bytes
