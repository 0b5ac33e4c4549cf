"""AugmentPool on Ray: a chunk whose actor is killed is made again, with the same bytes."""

from __future__ import annotations

import ray

from augserve.server.augment.pipeline import IMAGENET_TRAIN, Pipeline
from augserve.server.augment.pool import AugmentPool


async def test_a_killed_actors_chunk_is_made_again_on_a_fresh_actor(ray_session, photos):
    pool = AugmentPool(size=1, backend="fast", num_cpus=0.25, chunk_size=4)
    try:
        batch = [photos[i % len(photos)] for i in range(8)]
        first = await pool.augment(IMAGENET_TRAIN, batch, seed=2)
        killed = pool.actors[0]
        ray.kill(killed)
        again = await pool.augment(IMAGENET_TRAIN, batch, seed=2)
        assert pool.resubmitted >= 1 and pool.actors[0] is not killed
        want = Pipeline(IMAGENET_TRAIN, backend="fast")(batch, seed=2).images.numpy()
        assert first.images.numpy().tobytes() == want.tobytes()
        assert again.images.numpy().tobytes() == want.tobytes()
    finally:
        pool.shutdown()
