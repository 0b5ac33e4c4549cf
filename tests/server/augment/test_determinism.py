"""The same (seed, epoch, sample index) gives the same bytes whatever the batch or worker."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from augserve.server.augment.pipeline import IMAGENET_TRAIN, Pipeline
from augserve.server.augment.pool import AugmentPool
from augserve.server.augment.spec import parse_pipeline

FULL = parse_pipeline({
    "ops": [
        {"rotate": {"degrees": [-20, 20], "fill": [127]}, "p": 0.5},
        {"randomResizedCrop": {"size": [96, 96], "scale": [0.08, 1]}},
        {"horizontalFlip": {}, "p": 0.5},
        {"colorJitter": {"brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.1},
         "p": 0.8},
        {"grayscale": {}, "p": 0.2},
        {"gaussianBlur": {"kernelSize": 5, "sigma": [0.1, 2]}, "p": 0.5},
        {"normalize": {}},
        {"randomErasing": {"scale": [0.02, 0.2], "ratio": [0.3, 3.3]}, "p": 0.5},
    ],
    "dtype": "float32",
    "layout": "NCHW",
})


@pytest.fixture(scope="module")
def dataset(photos):
    return [photos[i % len(photos)] for i in range(64)]


@pytest.mark.parametrize("backend", ["fast", "kornia"])
@pytest.mark.parametrize("spec", [IMAGENET_TRAIN, FULL], ids=["imagenet", "full"])
def test_batch_size_does_not_matter(spec, backend, dataset):
    pipeline = Pipeline(spec, backend=backend)
    whole = pipeline(dataset, seed=11, epoch=3).images
    for batch in (1, 7):
        parts = [pipeline(dataset[s : s + batch], seed=11, epoch=3,
                          sample_indices=np.arange(s, min(s + batch, 64))).images
                 for s in range(0, 64, batch)]
        assert torch.cat(parts).numpy().tobytes() == whole.numpy().tobytes()


def test_batch_composition_does_not_matter(dataset):
    pipeline = Pipeline(FULL, backend="fast")
    whole = pipeline(dataset, seed=5).images
    order = np.random.default_rng(0).permutation(64)
    shuffled = pipeline([dataset[i] for i in order], seed=5, sample_indices=order).images
    assert torch.equal(shuffled, whole[order])


def test_seed_and_epoch_change_the_output(dataset):
    pipeline = Pipeline(IMAGENET_TRAIN, backend="fast")
    base = pipeline(dataset[:8], seed=1).images
    assert not torch.equal(base, pipeline(dataset[:8], seed=2).images)
    assert not torch.equal(base, pipeline(dataset[:8], seed=1, epoch=1).images)


@pytest.mark.parametrize("backend", ["fast", "kornia"])
def test_replayed_params_give_identical_output(backend, dataset, mixed):
    pipeline = Pipeline(FULL, backend=backend)
    for images in (dataset[:6], mixed):
        first = pipeline(images, seed=21, return_params=True)
        again = pipeline(images, seed=999, params=first.params)
        outs = first.images if isinstance(first.images, list) else list(first.images)
        replayed = again.images if isinstance(again.images, list) else list(again.images)
        for a, b in zip(outs, replayed, strict=True):
            assert a.numpy().tobytes() == b.numpy().tobytes()


async def test_one_and_three_workers_agree(ray_session, dataset):
    one = AugmentPool(size=1, backend="fast", num_cpus=0.25, chunk_size=64)
    three = AugmentPool(size=3, backend="fast", num_cpus=0.25, chunk_size=7)
    try:
        a = await one.augment(FULL, dataset, seed=8, epoch=1, return_params=True)
        b = await three.augment(FULL, dataset, seed=8, epoch=1, return_params=True)
    finally:
        one.shutdown()
        three.shutdown()
    local = Pipeline(FULL, backend="fast")(dataset, seed=8, epoch=1).images
    assert a.images.numpy().tobytes() == b.images.numpy().tobytes() == local.numpy().tobytes()
    for pa, pb in zip(a.params, b.params, strict=True):
        assert all(torch.equal(x, y) for x, y in zip(pa.columns().values(),
                                                     pb.columns().values(), strict=True))


def test_empty_batch():
    result = Pipeline(FULL)([], seed=1, return_params=True)
    assert result.images == [] and result.params == ()
