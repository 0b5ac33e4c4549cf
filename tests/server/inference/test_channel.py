"""The direct replica channel: framing, stacking of request parts, errors, a vanished replica."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from augserve.server.errors import Internal, InvalidArgument, Unavailable
from augserve.server.inference.channel import ReplicaChannel, ReplicaChannelServer

from ...waiting import let_ready_tasks_run


def _double_and_count(inputs):
    if inputs[0].dtype == np.float64:
        raise InvalidArgument("input 'x': FP64 is not accepted here")
    if (inputs[0] < 0).any():
        raise ZeroDivisionError("negative row")
    return [inputs[0] * 2, np.array([inputs[1].sum()], np.int64)], 1234


@pytest.fixture
async def channel():
    server = ReplicaChannelServer(_double_and_count)
    channel = ReplicaChannel(server.path, "m")
    assert server.folder.stat().st_mode & 0o777 == 0o700  # only this user may connect
    await channel.connect()
    assert not server.folder.exists()  # nothing is left behind once connected
    yield channel
    await channel.close()


async def test_parts_arrive_stacked_and_outputs_come_back_typed(channel):
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.arange(3, dtype=np.float32).reshape(1, 3) + 100
    counts = [np.ones((2, 4), np.uint8), np.ones((1, 4), np.uint8)]
    outputs, compute_ns = await channel.run([[a, b], counts])
    np.testing.assert_array_equal(outputs[0], np.concatenate([a, b]) * 2)
    assert outputs[0].dtype == np.float32 and outputs[0].shape == (3, 3)
    np.testing.assert_array_equal(outputs[1], [12])
    assert outputs[1].dtype == np.int64 and compute_ns == 1234


async def test_non_contiguous_and_large_batches_round_trip(channel):
    big = np.abs(np.random.default_rng(0).standard_normal((64, 3, 64, 64), dtype=np.float32))
    strided = big[:, :, ::2, ::2]  # not contiguous
    outputs, _ = await channel.run([[strided, big[:1, :, :32, :32]], [np.zeros((65, 1), np.uint8)]])
    expected = np.concatenate([strided, big[:1, :, :32, :32]]) * 2
    np.testing.assert_array_equal(outputs[0], expected)


async def test_replica_errors_keep_their_status_and_the_channel_keeps_serving(channel):
    with pytest.raises(InvalidArgument, match="FP64"):
        await channel.run([[np.zeros((1, 2))], [np.zeros((1, 1), np.uint8)]])
    with pytest.raises(Internal, match="model 'm' raised ZeroDivisionError: negative row"):
        await channel.run([[-np.ones((1, 2), np.float32)], [np.zeros((1, 1), np.uint8)]])
    outputs, _ = await channel.run([[np.ones((1, 2), np.float32)], [np.ones((1, 1), np.uint8)]])
    np.testing.assert_array_equal(outputs[0], [[2, 2]])


async def test_a_vanished_replica_is_unavailable(channel):
    # Closing the connection under the channel is what a killed replica looks like.
    channel._writer.transport.abort()
    with pytest.raises(Unavailable, match="replica of model 'm'"):
        await channel.run([[np.ones((1, 2), np.float32)], [np.ones((1, 1), np.uint8)]])


async def test_a_batch_is_sent_before_run_returns():
    received = threading.Event()

    def record(inputs):
        received.set()
        return [inputs[0]], 1

    server = ReplicaChannelServer(record)
    channel = ReplicaChannel(server.path, "m")
    await channel.connect()
    try:
        answer = channel.run([[np.ones((1, 2), np.float32)]])
        # The event loop does not run while this blocks: only a frame written by `run`
        # itself can reach the replica.
        assert received.wait(10)
        outputs, _ = await answer
        np.testing.assert_array_equal(outputs[0], [[1, 1]])
    finally:
        await channel.close()


async def test_answers_reach_their_own_batches_in_order_even_past_a_cancelled_caller(channel):
    def batch(value):
        return [[np.full((1, 2), value, np.float32)], [np.ones((1, 1), np.uint8)]]

    first, second, third = (channel.run(batch(v)) for v in (1.0, 2.0, 3.0))
    abandoned = asyncio.ensure_future(second)
    await let_ready_tasks_run(1)  # the abandoned caller is awaiting its answer
    abandoned.cancel()
    third_outputs, _ = await third
    first_outputs, _ = await first
    np.testing.assert_array_equal(first_outputs[0], [[2, 2]])
    np.testing.assert_array_equal(third_outputs[0], [[6, 6]])
    outputs, _ = await channel.run(batch(4.0))  # the channel is still in step
    np.testing.assert_array_equal(outputs[0], [[8, 8]])


async def test_an_error_subclass_from_outside_server_errors_keeps_its_status():
    # images.CorruptImage (an InvalidArgument) and ImageTooLarge (a ResourceExhausted) live
    # in server/images.py; they cross as the nearest class of server.errors.
    from augserve.server.errors import ResourceExhausted
    from augserve.server.images import CorruptImage, ImageTooLarge

    def refuse(inputs):
        raise (CorruptImage if inputs[0][0] == 0 else ImageTooLarge)("input 'image' row 0: no")

    server = ReplicaChannelServer(refuse)
    channel = ReplicaChannel(server.path, "m")
    await channel.connect()
    try:
        with pytest.raises(InvalidArgument, match="row 0: no") as error:
            await channel.run([[np.zeros(1, np.uint8)]])
        assert type(error.value) is InvalidArgument
        with pytest.raises(ResourceExhausted, match="row 0: no"):
            await channel.run([[np.ones(1, np.uint8)]])
    finally:
        await channel.close()
