"""StreamBatches limits: streams per client and in all, bytes per batch and per stream."""

from __future__ import annotations

import grpc
import pytest

from augserve.clients.proto.augserve.v1 import augment_pb2
from augserve.clients.proto.augserve.v1 import stream_pb2_grpc as pb_grpc
from augserve.server.peers import client_identity

from .conftest import OPTIONS, request, settings, start

BATCH = 64
SMALL_BATCH_BYTES = BATCH * 24 * 24 * 3  # the "small" pipeline: 24 x 24 uint8 outputs


async def read_rest(call) -> int:
    """Batches read until the stream ends (with `read`, which a test may have begun with)."""
    count = 0
    while await call.read() is not grpc.aio.EOF:
        count += 1
    return count


@pytest.mark.parametrize(("limits", "needle"), [
    ({"max_streams_per_client": 2, "max_streams": 8},
     "stream 3 of client 'ipv4:127.0.0.1' is over max_streams_per_client "
     "(--stream-max-streams-per-client) = 2"),
    ({"max_streams_per_client": 8, "max_streams": 2},
     "stream 3 is over max_streams (--stream-max-streams) = 2"),
])
async def test_one_stream_over_a_limit_is_refused_and_the_open_ones_go_on(limits, needle):
    running = await start(settings(**limits))
    try:
        # two channels: a client's connections share its identity
        async with grpc.aio.insecure_channel(running.target, options=OPTIONS) as one, \
                grpc.aio.insecure_channel(running.target, options=OPTIONS) as two:
            stubs = [pb_grpc.StreamServiceStub(c) for c in (one, two)]
            open_calls = [stub.StreamBatches(request(batch_size=BATCH)) for stub in stubs]
            firsts = [await call.read() for call in open_calls]
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await read_rest(stubs[0].StreamBatches(request(batch_size=BATCH)))
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert needle in caught.value.details()
            for first, call in zip(firsts, open_calls, strict=True):
                assert 1 + await read_rest(call) == first.batches_in_epoch
            assert running.servicer.slots.in_all == 0
            # the slots were given back: a new stream is served
            assert await read_rest(stubs[0].StreamBatches(request(batch_size=BATCH))) > 0
    finally:
        await running.server.stop(None)


def resize_to(height: int, width: int) -> augment_pb2.Pipeline:
    return augment_pb2.Pipeline(ops=[augment_pb2.OpSpec(resize=augment_pb2.Resize(
        size=[height, width]))], dtype="uint8")


@pytest.mark.parametrize(("limits", "fields", "needle"), [
    ({"max_batch_bytes": SMALL_BATCH_BYTES - 1}, {},
     f"batch_size: {BATCH} outputs of 24x24 (uint8), {SMALL_BATCH_BYTES} bytes per batch, is "
     f"over max_batch_bytes (--stream-max-batch-bytes) = {SMALL_BATCH_BYTES - 1}"),
    ({"max_stream_bytes": 4 * SMALL_BATCH_BYTES - 1}, {},
     f"batch_size: window (4) x {SMALL_BATCH_BYTES} bytes per batch = "
     f"{4 * SMALL_BATCH_BYTES} bytes is over max_stream_bytes"),
    # no resizing op: the output is the dataset's size (digits at 32 x 32)
    ({"max_batch_bytes": BATCH * 32 * 32 * 3 - 1},
     {"pipeline": augment_pb2.Pipeline(ops=[augment_pb2.OpSpec(
         horizontal_flip=augment_pb2.HorizontalFlip())], dtype="uint8")},
     "outputs of 32x32 (uint8)"),
    ({}, {"pipeline": resize_to(8000, 8000), "batch_size": 16},
     "batch_size: 16 outputs of 8000x8000 (uint8), 3072000000 bytes per batch"),
])
async def test_a_stream_over_its_bytes_is_refused_before_it_starts(limits, fields, needle):
    running = await start(settings(**limits))
    try:
        async with grpc.aio.insecure_channel(running.target, options=OPTIONS) as channel:
            stub = pb_grpc.StreamServiceStub(channel)
            fields.setdefault("batch_size", BATCH)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await read_rest(stub.StreamBatches(request(**fields)))
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert needle in caught.value.details()
            assert running.servicer.counters.batches_sent == 0
            # a smaller stream is served (its first batch is enough to show it)
            smaller = stub.StreamBatches(request(batch_size=8))
            first = await smaller.read()
            smaller.cancel()
            assert first is not grpc.aio.EOF and len(first.sample_indices) == 8
    finally:
        await running.server.stop(None)


class Peer:
    def __init__(self, peer: str) -> None:
        self._peer = peer

    def peer(self) -> str:
        return self._peer


@pytest.mark.parametrize(("peer", "identity"), [
    ("ipv4:10.0.0.7:51234", "ipv4:10.0.0.7"),
    ("ipv6:[::1]:40000", "ipv6:[::1]"),
    ("unix:/tmp/sock", "unix:/tmp/sock"),
])
def test_a_clients_identity_is_its_address_without_the_port(peer, identity):
    assert client_identity(Peer(peer)) == identity
