"""Ray worker pools: the same bytes for 1 and 3 actors; an actor killed mid-epoch loses nothing."""

from __future__ import annotations

import asyncio

import grpc
import pytest_asyncio
import ray
from prometheus_client import REGISTRY

from augserve.clients.proto.augserve.v1 import stream_pb2_grpc as pb_grpc
from augserve.server.stream.pool import StreamPool

from .conftest import OPTIONS, by_index, collect, request, settings, start

FIELDS = {"batch_size": 48, "seed": 11, "epoch": 3}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def servers(ray_session):
    made = {}
    for actors in (1, 3):
        pool = StreamPool(actors, "fast", num_cpus=0.5)
        made[actors] = await start(settings(window=6, pool_size=actors), pool)
    await asyncio.gather(*(asyncio.wrap_future(a.ping.remote().future())
                           for s in made.values() for a in s.pool.actors))
    yield made
    for running in made.values():
        await running.server.stop(None)
        running.pool.shutdown()


async def test_one_and_three_actors_give_identical_batches(servers, local):
    one, three, here = await asyncio.gather(collect(servers[1].target, **FIELDS),
                                            collect(servers[3].target, **FIELDS),
                                            collect(local.target, **FIELDS))
    assert [b.SerializeToString() for b in one] == [b.SerializeToString() for b in three]
    assert [b.SerializeToString() for b in one] == [b.SerializeToString() for b in here]
    assert len(by_index(one)) == 1797


async def test_killing_an_actor_mid_epoch_loses_and_duplicates_nothing(servers, local):
    reference = by_index(await collect(local.target, **FIELDS))
    running = servers[3]
    pool = running.pool
    before = pool.resubmitted
    counted = REGISTRY.get_sample_value("augserve_stream_resubmitted_batches_total") or 0
    received = []
    async with grpc.aio.insecure_channel(running.target, options=OPTIONS) as channel:
        call = pb_grpc.StreamServiceStub(channel).StreamBatches(request(**FIELDS))
        async for batch in call:
            received.append(batch)
            if len(received) == 3:
                busiest = max(range(len(pool.actors)), key=pool.busy.__getitem__)
                assert pool.busy[busiest] > 0, "the victim should have work in flight"
                ray.kill(pool.actors[busiest])
    assert pool.resubmitted > before
    assert (REGISTRY.get_sample_value("augserve_stream_resubmitted_batches_total")
            == counted + pool.resubmitted - before)
    assert [b.position for b in received] == list(range(len(received)))
    assert by_index(received) == reference  # every index once, the same bytes
    assert len(pool.actors) == 3
