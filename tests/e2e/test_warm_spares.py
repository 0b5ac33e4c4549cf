"""A killed replica of a model with a warm spare: the spare serves at once, no restart waited."""

from __future__ import annotations

import json
import time

import numpy as np

from augserve.server.inference.repository import ModelRepository
from augserve.server.inference.settings import InferenceSettings

from ..waiting import async_wait_until
from .test_server_features import kill_first_replica_until_replaced, versioned_repository

# A promotion is a liveness call and a swap; a restart imports torch in a new process
# (seconds on a quiet host). The bound leaves room for a loaded CI host, not for a restart.
PROMOTED_WITHIN_S = 5.0


async def test_a_warm_spare_takes_over_a_killed_replica(ray_session, model_repository, tmp_path):
    root = versioned_repository(tmp_path, model_repository / "digits", {"latest": 1})
    config_file = root / "multi" / "config.json"
    config = json.loads(config_file.read_text())
    config["instance_group"] = {"count": 1, "num_cpus": 0.1}
    config_file.write_text(json.dumps(config))
    repository = ModelRepository(root, settings=InferenceSettings(warm_spares=1))
    await repository.load("multi")
    try:
        loaded = repository.get("multi")
        await async_wait_until(lambda: loaded.spares.ready == 1, 120, interval_s=0.05,
                               what="the warm spare started")
        images = np.random.default_rng(0).random((3, 1, 8, 8), dtype=np.float32)
        before = await loaded.queue.submit([images], client_deadline_s=30)
        spare = loaded.spares._ready[0].actor
        start = time.monotonic()
        # a batch that meets the dead replica is requeued and answered by the spare
        await kill_first_replica_until_replaced(loaded, images, before[0], 30, 0.01)
        assert loaded.replicas[0].actor == spare
        assert time.monotonic() - start < PROMOTED_WITHIN_S
        await async_wait_until(lambda: loaded.spares.ready == 1, 120, interval_s=0.05,
                               what="a new spare started in the background")
    finally:
        await repository.unload("multi")
