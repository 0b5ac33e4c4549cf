"""StreamBatches with `consumed` (elastic resumption): the split of the rest, bad layouts."""

from __future__ import annotations

import grpc
import pytest

from augserve.clients.proto.augserve.v1 import stream_pb2 as pb
from augserve.clients.proto.augserve.v1 import stream_pb2_grpc as pb_grpc
from augserve.server.data.epoch import Consumed, EpochPlan

from .conftest import OPTIONS, by_index, collect, request, settings, start

N = 1797
FOUR = pb.ConsumedBatches(num_shards=4, batch_size=50, batches=[3, 3, 2, 3], sharding="strided")


async def test_a_resumed_shard_streams_its_split_of_the_rest_with_the_same_bytes(local):
    batches = await collect(local.target, batch_size=64, num_shards=2, shard_index=1,
                            drop_last=True, consumed=[FOUR])
    layout = Consumed(4, 50, (3, 3, 2, 3), sharding="strided")
    plan = EpochPlan(N, 64, 3, 0, True, 2, 1, True, consumed=(layout,))
    expected = [b.tolist() for b in plan.batches()]
    assert [list(b.sample_indices) for b in batches] == expected
    assert [b.position for b in batches] == list(range(len(expected)))
    assert {b.batches_in_epoch for b in batches} == {(N - 550) // 128}
    whole = by_index(await collect(local.target, batch_size=64))
    assert all(whole[i] == image for i, image in by_index(batches).items())


BAD = [
    ([pb.ConsumedBatches(num_shards=2, batch_size=8, batches=[1])],
     grpc.StatusCode.INVALID_ARGUMENT, "consumed[0].batches: expected 2 counts"),
    ([FOUR, pb.ConsumedBatches(batch_size=8, batches=[1, 2])],
     grpc.StatusCode.INVALID_ARGUMENT, "consumed[1].batches: expected 1 counts"),
    ([pb.ConsumedBatches(num_shards=1, batches=[1])],
     grpc.StatusCode.INVALID_ARGUMENT, "consumed[0].batch_size"),
    ([pb.ConsumedBatches(batch_size=8, batches=[1], sharding="random")],
     grpc.StatusCode.INVALID_ARGUMENT, "consumed[0].sharding"),
    ([FOUR] * 3, grpc.StatusCode.RESOURCE_EXHAUSTED,
     "consumed: 3 layouts is over max_resume_layouts (--stream-max-resume-layouts) = 2"),
]


@pytest.mark.parametrize(("consumed", "code", "words"), BAD, ids=[b[2] for b in BAD])
async def test_bad_layouts_get_their_status(consumed, code, words):
    running = await start(settings(max_resume_layouts=2))
    try:
        async with grpc.aio.insecure_channel(running.target, options=OPTIONS) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                call = pb_grpc.StreamServiceStub(channel).StreamBatches(
                    request(consumed=consumed))
                async for _ in call:
                    pass
        assert caught.value.code() == code
        assert words in caught.value.details()
    finally:
        await running.server.stop(None)
