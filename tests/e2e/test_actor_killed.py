"""An augment actor killed as the OOM killer would (SIGKILL) under other clients' requests.

Their requests are made again on a fresh actor: every one succeeds, with the bytes it would
have had, and none fails with INTERNAL.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal

import grpc
import numpy as np
import pytest
from skimage import data, transform

from augserve.clients.augment import decode_image, encode_image, pipeline_message
from augserve.clients.proto.augserve.v1 import augment_pb2 as pb
from augserve.clients.proto.augserve.v1 import augment_pb2_grpc as pb_grpc

from ..waiting import async_wait_until

PIPELINE = {"ops": [{"randomResizedCrop": {"size": [32, 32], "scale": [0.3, 1]}},
                    {"horizontalFlip": {}, "p": 0.5},
                    {"colorJitter": {"brightness": 0.3, "contrast": 0.3}, "p": 0.8}]}
CLIENTS, AFTER_KILL = 6, 3


def _photos() -> list[np.ndarray]:
    # 32 images of 96 x 96: well inside the test server's 1 MiB messages
    photos = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    small = [(transform.resize(p, (96, 96), anti_aliasing=True) * 255).astype(np.uint8)
             for p in photos]
    return small * 8


def _request(seed: int, photos: list[np.ndarray]) -> pb.AugmentRequest:
    return pb.AugmentRequest(images=[encode_image(p) for p in photos], seed=seed,
                             pipeline=pipeline_message(PIPELINE))


def _alive_workers() -> dict[str, int]:
    """Actor id -> pid of every live AugmentWorker actor (from Ray's actor table)."""
    from ray._private import state

    return {actor_id: info["Pid"] for actor_id, info in state.actors().items()
            if info["ActorClassName"] == "AugmentWorker" and info["State"] == "ALIVE"}


@pytest.fixture
async def stub(server):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield pb_grpc.AugmentServiceStub(channel)


async def test_requests_under_a_killed_actor_are_made_again_and_all_succeed(stub, caplog):
    photos = _photos()
    expected = {}
    for seed in range(CLIENTS):  # the bytes each client's requests must get (warms the pool)
        expected[seed] = [decode_image(m).tobytes()
                          for m in (await stub.Augment(_request(seed, photos))).images]
    killed = _alive_workers()
    assert killed, "no augment actor to kill"

    kill_now = asyncio.Event()
    in_flight, at_kill, results, errors = set(), [], [], []

    async def client(seed: int) -> None:
        n, after_kill = 0, 0
        while after_kill < AFTER_KILL:  # requests sent once the kill was under way
            started_after_kill = kill_now.is_set()
            in_flight.add((seed, n))
            try:
                response = await stub.Augment(_request(seed, photos), timeout=120)
                results.append((seed, [decode_image(m).tobytes() for m in response.images]))
            except grpc.aio.AioRpcError as error:
                errors.append((error.code(), error.details()))
            finally:
                in_flight.discard((seed, n))
            if seed == 0:
                kill_now.set()  # the other clients' first requests are on the server now
            after_kill += started_after_kill
            n += 1

    async def killer() -> None:
        await kill_now.wait()
        at_kill.extend(in_flight)
        for pid in killed.values():
            os.kill(pid, signal.SIGKILL)

    with caplog.at_level(logging.WARNING, logger="augserve.server.actors"):
        await asyncio.gather(killer(), *(client(seed) for seed in range(CLIENTS)))

    assert at_kill, "no request was in flight when the actors were killed"
    assert errors == []
    assert all(images == expected[seed] for seed, images in results)
    assert len(results) >= CLIENTS * AFTER_KILL
    retried = [r.getMessage() for r in caplog.records if "making its chunk again" in r.getMessage()]
    assert retried, "no chunk was made again on a fresh actor"
    # the pool put fresh actors in the dead ones' places
    await async_wait_until(lambda: set(_alive_workers()).isdisjoint(killed), timeout_s=30,
                           what="the killed actors gone")
    assert set(_alive_workers().values()).isdisjoint(killed.values())
