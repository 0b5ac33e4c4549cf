"""The same-host shared-memory transport: the ring's two ends, and streams that use it."""

from __future__ import annotations

import asyncio
import itertools
import os
from pathlib import Path

import grpc
import numpy as np
import pytest

from augserve.clients import RemoteLoader
from augserve.clients.proto.augserve.v1 import stream_pb2_grpc as pb_grpc
from augserve.clients.ring import (
    HEADER_BYTES,
    RingReader,
    SharedMemoryUnavailable,
    is_loopback_target,
    slot_array,
)
from augserve.clients.stream_batch import parse_batch
from augserve.server.peers import is_local_peer
from augserve.server.stream.pool import BatchResult
from augserve.server.stream.ring import MappedRings, Ring, RingPool, RingWriter
from augserve.server.stream.settings import StreamSettings

from ...waiting import async_wait_until, let_ready_tasks_run
from .conftest import OPTIONS, images_of, request, settings, start

KWARGS = {"dataset": "digits32", "pipeline_id": "small", "batch_size": 100, "seed": 5}


def made(images: np.ndarray) -> BatchResult:
    return BatchResult(images, "uint8", np.ones(len(images), bool), [])


def batches(loader: RemoteLoader, limit: int | None = None) -> list[tuple]:
    return [(b.epoch, b.position, b.sample_indices.tolist(), b.images.tobytes(),
             b.images.shape, b.labels.tolist()) for b in itertools.islice(loader.batches(), limit)]


def read(target: str, epochs: int = 1, **kwargs) -> list[tuple]:
    with RemoteLoader(target, epochs=epochs, **{**KWARGS, **kwargs}) as loader:
        return batches(loader)


async def test_writer_waits_for_the_reader_to_release_a_slot(tmp_path):
    pool = RingPool(str(tmp_path), slots=2)
    writer, reader = RingWriter(pool, batch_size=4), RingReader()
    made_ = [np.full((4, 3, 5, 5), k, np.uint8) for k in range(3)]
    first, second = await writer.put(made(made_[0])), await writer.put(made(made_[1]))
    assert (first.slot, second.slot) == (0, 1) and first.path == second.path
    assert first.slot_bytes % 4096 == 0 and first.slot_bytes >= made_[0].nbytes
    third = asyncio.create_task(writer.put(made(made_[2])))
    await let_ready_tasks_run()
    # Slot 0 still holds batch 0: the third batch is still looking for a slot (a free
    # one would have been taken, and `last_slot` set, at its first step).
    assert writer.last_slot == 1 and not third.done()
    taken = reader.take(first.path, first.slots, first.slot_bytes, 0, made_[0].nbytes)
    np.testing.assert_array_equal(taken.reshape(made_[0].shape), made_[0])
    where = await asyncio.wait_for(third, 5)
    assert where.slot == 0 and taken.flags.writeable
    for expected, slot in ((made_[1], 1), (made_[2], 0)):
        got = reader.take(where.path, where.slots, where.slot_bytes, slot, expected.nbytes)
        np.testing.assert_array_equal(got.reshape(expected.shape), expected)
    writer.finish(completed=True)
    await asyncio.gather(*pool.returning)
    assert len(pool.free) == 1  # everything released: pooled for the next call
    again = RingWriter(pool, batch_size=4)
    reused = await again.put(made(made_[1]))
    assert (reused.path, reused.slot, pool.made) == (first.path, 0, 1)
    np.testing.assert_array_equal(
        reader.take(reused.path, 2, reused.slot_bytes, 0, made_[1].nbytes).reshape(4, 3, 5, 5),
        made_[1])
    again.finish(completed=False)  # a cancelled call's ring is removed
    assert not os.listdir(tmp_path)
    reader.close()


def test_a_view_releases_its_slot_when_the_last_array_viewing_it_goes(tmp_path):
    import torch

    ring, reader = Ring(str(tmp_path), slots=3, slot_bytes=4096), RingReader()
    ring.buffer[HEADER_BYTES:HEADER_BYTES + 16] = bytes(range(16))
    view = reader.take(ring.path, 3, 4096, 0, 16, holdable=2)
    assert view.flags.writeable
    tensor = torch.from_numpy(view.reshape(4, 4))[1:]
    del view
    assert ring.released.tolist() == [0, 0, 0] and reader.held == 1  # the tensor holds it
    assert tensor.flatten().tolist() == list(range(4, 16))
    del tensor
    assert ring.released.tolist() == [1, 0, 0] and reader.held == 0
    kept = [reader.take(ring.path, 3, 4096, slot, 16, holdable=2) for slot in (0, 1)]
    copied = reader.take(ring.path, 3, 4096, 2, 16, holdable=2)  # two held: a copy
    assert reader.held == 2 and ring.released.tolist() == [1, 0, 1]
    copied[:] = 0
    assert kept[0].tolist() == list(range(16))  # the copy is the reader's own
    del kept
    assert ring.released.tolist() == [2, 1, 1] and reader.held == 0
    RingReader(zero_copy=False).take(ring.path, 3, 4096, 0, 16, holdable=2)
    assert ring.released.tolist() == [3, 1, 1]
    reader.close()
    ring.remove()


def test_a_forked_child_dropping_its_copy_of_a_view_does_not_release_the_slot(tmp_path):
    ring, reader = Ring(str(tmp_path), slots=1, slot_bytes=4096), RingReader()
    view = reader.take(ring.path, 1, 4096, 0, 16, holdable=1)
    child = os.fork()
    if child == 0:  # pragma: no cover (the child)
        del view
        os._exit(int(ring.released[0]))
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0 and ring.released[0] == 0
    del view
    assert ring.released[0] == 1
    reader.close()
    ring.remove()


async def test_the_writer_passes_over_a_slot_the_client_holds(tmp_path):
    pool = RingPool(str(tmp_path), slots=3, holdable=1)
    writer, reader = RingWriter(pool, batch_size=1), RingReader()
    first = await writer.put(made(np.zeros((1, 8), np.uint8)))
    assert first.holdable == 1
    kept = reader.take(first.path, 3, first.slot_bytes, first.slot, 8, first.holdable)
    for k in range(1, 7):
        where = await asyncio.wait_for(writer.put(made(np.full((1, 8), k, np.uint8))), 5)
        assert where.slot != first.slot
        got = reader.take(where.path, 3, where.slot_bytes, where.slot, 8, where.holdable)
        assert (got == k).all() and reader.held == 1  # one held: the others are copied
    assert (kept == 0).all()  # never written over while held
    del kept
    writer.finish(completed=True)
    await asyncio.gather(*pool.returning)
    assert len(pool.free) == 1
    reader.close()


async def test_a_trainer_that_keeps_every_batch_never_stalls_its_stream(tmp_path):
    running = await start(settings(shared_memory_dir=str(tmp_path)))
    try:
        inline = await asyncio.to_thread(read, running.target, 2, shared_memory=False)

        def keep_all() -> list:
            with RemoteLoader(running.target, epochs=2, shared_memory=True, **KWARGS) as loader:
                return list(loader.batches())

        kept = await asyncio.wait_for(asyncio.to_thread(keep_all), 60)
        assert [(b.epoch, b.position, b.sample_indices.tolist(), b.images.tobytes(),
                 b.images.shape, b.labels.tolist()) for b in kept] == inline
        in_place = [isinstance(b.images.base.base, memoryview) for b in kept]  # ring views
        assert sum(in_place) == 6 - 1  # `holdable` of the default 6 spare slots; then copies
    finally:
        await running.server.stop(None)


async def test_a_ring_not_released_in_time_is_removed_not_pooled(tmp_path):
    pool = RingPool(str(tmp_path), slots=2, release_timeout_s=0.05)
    writer = RingWriter(pool, batch_size=1)
    assert await writer.put(made(np.ones((1, 8), np.uint8))) is not None
    writer.finish(completed=True)
    await asyncio.gather(*pool.returning)
    assert not pool.free and not os.listdir(tmp_path)


async def test_closing_the_pool_removes_rings_still_waiting_for_their_client(tmp_path):
    pool, reader = RingPool(str(tmp_path), slots=2), RingReader()
    held = RingWriter(pool, batch_size=1)
    where = await held.put(made(np.ones((1, 8), np.uint8)))
    kept = reader.take(where.path, where.slots, where.slot_bytes, where.slot, 8, holdable=1)
    held.finish(completed=True)  # waits (up to 10 s) for the client to drop `kept`
    pooled = RingWriter(pool, batch_size=2)
    where = await pooled.put(made(np.ones((2, 8), np.uint8)))
    reader.take(where.path, where.slots, where.slot_bytes, where.slot, 16)  # copied: released
    pooled.finish(completed=True)
    await async_wait_until(lambda: pool.free, interval_s=0.01, what="the released ring pooled")
    assert len(pool.free) == 1 and len(pool.returning) == 1 and len(os.listdir(tmp_path)) == 2
    await pool.aclose()  # the server shuts down
    assert not os.listdir(tmp_path) and not pool.free and not pool.returning
    assert (kept == 1).all()  # the client's mapping outlives the file
    del kept
    reader.close()


def test_rings_of_dead_servers_are_removed_at_start(tmp_path):
    dead = 2**22 + 12345
    while True:
        try:
            os.kill(dead, 0)
            dead += 1
        except ProcessLookupError:
            break
    (tmp_path / f"augserve-ring-{dead}-abc").write_bytes(b"x")
    (tmp_path / f"augserve-ring-{os.getpid()}-def").write_bytes(b"x")
    (tmp_path / "someone-else").write_bytes(b"x")
    RingPool(str(tmp_path), slots=1)
    assert sorted(os.listdir(tmp_path)) == [f"augserve-ring-{os.getpid()}-def", "someone-else"]


async def test_writer_sends_inline_when_it_cannot_make_a_ring(tmp_path):
    writer = RingWriter(RingPool(str(tmp_path / "missing"), slots=2), batch_size=4)
    assert await writer.put(made(np.ones((4, 3, 5, 5), np.uint8))) is None
    assert writer.inline and await writer.put(made(np.ones((4, 3, 5, 5), np.uint8))) is None
    writer.finish(completed=True)


async def test_a_batch_larger_than_its_slot_goes_inline(tmp_path):
    pool = RingPool(str(tmp_path), slots=2, release_timeout_s=0.05)
    writer = RingWriter(pool, batch_size=1)
    assert await writer.put(made(np.ones((1, 8), np.uint8))) is not None
    assert await writer.put(made(np.ones((1, 8000), np.uint8))) is None
    writer.finish(completed=False)  # batch 0 was never released: removed after the timeout
    assert os.listdir(tmp_path)
    await asyncio.gather(*pool.returning)
    assert not os.listdir(tmp_path)


def test_reader_refuses_what_is_not_a_ring(tmp_path):
    path = tmp_path / "not-a-ring"
    path.write_bytes(b"\0" * (4096 + 4096))
    with pytest.raises(SharedMemoryUnavailable, match="not an augserve ring"):
        RingReader().take(str(path), 1, 4096, 0, 10)
    with pytest.raises(SharedMemoryUnavailable, match="cannot open"):
        RingReader().take(str(tmp_path / "gone"), 1, 4096, 0, 10)


@pytest.mark.parametrize(("target", "local"), [
    ("localhost:8001", True), ("127.0.0.1:8001", True), ("[::1]:8001", True),
    ("unix:/tmp/augserve.sock", True), ("ipv4:127.0.0.2:1", True), ("dns:///localhost:1", True),
    ("trainer-7:8001", False), ("10.0.0.3:8001", False), ("[2001:db8::1]:8001", False)])
def test_loopback_targets(target, local):
    assert is_loopback_target(target) is local


@pytest.mark.parametrize(("peer", "local"), [
    ("ipv4:127.0.0.1:5000", True), ("ipv6:[::1]:5000", True), ("unix:", True),
    ("ipv6:%5B::1%5D:5000", True), ("ipv4:10.1.2.3:5000", False), ("ipv6:[fe80::1]:9", False)])
def test_local_peers(peer, local):
    assert is_local_peer(peer) is local


def test_slots_are_checked_in_settings():
    with pytest.raises(ValueError, match="shared_memory_slots"):
        StreamSettings(shared_memory_slots=0)


async def test_stream_through_shared_memory_equals_inline_and_leaves_no_file(tmp_path):
    running = await start(settings(shared_memory_dir=str(tmp_path), shared_memory_slots=2))
    try:
        shared = await asyncio.to_thread(read, running.target, 2, shared_memory=True)
        inline = await asyncio.to_thread(read, running.target, 2, shared_memory=False)
        auto = await asyncio.to_thread(read, running.target, 1)  # loopback: shared
        assert len(shared) == 2 * 18 and shared == inline and auto == inline[:18]
        assert running.servicer.rings.made < 3  # three calls: at least one reused a ring
        for pool in (running.servicer.rings, running.servicer.private_rings):
            await asyncio.gather(*pool.returning)
            pool.close()
        assert not os.listdir(tmp_path)
    finally:
        await running.server.stop(None)


async def test_batches_name_their_slot_and_carry_no_pixels(tmp_path):
    running = await start(settings(shared_memory_dir=str(tmp_path), shared_memory_slots=3))
    inline = await asyncio.to_thread(read, running.target, shared_memory=False)
    ring = RingReader()
    try:
        async with grpc.aio.insecure_channel(running.target, options=OPTIONS) as channel:
            stub = pb_grpc.StreamServiceStub(channel)
            call = stub.StreamBatches(request(batch_size=100, seed=5, shared_memory=True))
            async for message in call:
                assert message.HasField("shared_memory") and not message.images.data
                where = message.shared_memory
                assert 0 <= where.slot < where.slots == 4 + 3  # window 4
                assert where.holdable == 3 - 1  # one spare slot for the batch on its way
                parsed = parse_batch(message.SerializeToString(), ring)
                assert parsed.images.tobytes() == inline[message.position][3]
    finally:
        ring.close()
        await running.server.stop(None)


async def test_server_without_a_directory_sends_inline():
    running = await start(settings(shared_memory_dir=""))
    try:
        async with grpc.aio.insecure_channel(running.target, options=OPTIONS) as channel:
            stub = pb_grpc.StreamServiceStub(channel)
            got = [b async for b in stub.StreamBatches(request(shared_memory=True))]
        assert got and not any(b.HasField("shared_memory") for b in got)
        assert images_of(got[0]).shape == (64, 3, 24, 24)
    finally:
        await running.server.stop(None)


async def test_a_ring_the_client_cannot_open_falls_back_to_inline(tmp_path, monkeypatch):
    def refuse(self, path, slots, slot_bytes):
        raise SharedMemoryUnavailable(f"shared_memory: cannot open {path}: permission denied")

    running = await start(settings(shared_memory_dir=str(tmp_path)))
    running.servicer.rings.release_timeout_s = 0.05
    try:
        inline = await asyncio.to_thread(read, running.target, shared_memory=False)
        monkeypatch.setattr(RingReader, "_ring", refuse)
        fallback = await asyncio.to_thread(read, running.target, shared_memory=True)
        assert fallback == inline
        rings = running.servicer.rings
        await asyncio.gather(*rings.returning)
        assert not rings.free and rings.made == 1  # the cancelled call's ring is removed
        private = running.servicer.private_rings
        await asyncio.gather(*private.returning)
        assert {Path(r.path).name for r in private.free} == set(os.listdir(tmp_path))
    finally:
        await running.server.stop(None)


async def test_a_reader_that_never_releases_stalls_only_its_own_stream(tmp_path):
    running = await start(settings(shared_memory_dir=str(tmp_path), shared_memory_slots=1))
    running.servicer.rings.release_timeout_s = 0.2
    try:
        async with grpc.aio.insecure_channel(running.target, options=OPTIONS) as channel:
            stub = pb_grpc.StreamServiceStub(channel)
            stalled = stub.StreamBatches(request(shared_memory=True))
            received = [await stalled.read()]  # never released: the ring fills up
            while True:
                try:
                    received.append(await asyncio.wait_for(stalled.read(), 0.5))
                except TimeoutError:
                    break
            assert all(m.HasField("shared_memory") for m in received) and len(received) < 18
            assert len(os.listdir(tmp_path)) == 1
            others = await asyncio.to_thread(read, running.target, shared_memory=True)
            assert len(others) == 18
            stalled.cancel()
        await asyncio.gather(*running.servicer.rings.returning)
        pooled = {Path(ring.path).name for ring in running.servicer.rings.free}
        # The stalled call's ring is removed, the finished one's pooled.
        await async_wait_until(lambda: set(os.listdir(tmp_path)) == pooled, interval_s=0.05)
        assert set(os.listdir(tmp_path)) == pooled and len(pooled) == 1
    finally:
        await running.server.stop(None)


async def test_the_worker_writes_into_the_slot_it_was_given(tmp_path):
    pool = RingPool(str(tmp_path), slots=3, release_timeout_s=0.05)
    writer, reader, rings = RingWriter(pool, batch_size=2), RingReader(), MappedRings()
    first = np.arange(2 * 12, dtype=np.uint8).reshape(2, 12)
    assert await writer.reserve() is None  # submitted before the ring exists
    where = await writer.put(made(first))
    destination = await writer.reserve()
    assert destination.path == where.path and destination.capacity == where.slot_bytes
    second = first[::-1] + 1
    assert rings.write(destination, second)
    written = BatchResult(None, "uint8", np.ones(2, bool), [], written=second.shape)
    slot = await writer.put(written)
    assert slot.slot == 1 and (writer.by_workers, writer.copied) == (1, 1)
    got = reader.take(slot.path, slot.slots, slot.slot_bytes, 1, second.nbytes)
    np.testing.assert_array_equal(got.reshape(second.shape), second)
    assert not rings.write(destination, np.zeros(destination.capacity + 1, np.uint8))
    writer.finish(completed=False)  # removed (batch 0 unreleased: after the timeout) ...
    await asyncio.gather(*pool.returning)
    assert not rings.write(destination, second) and not rings.maps  # ... and let go
    reader.close()


@pytest.mark.parametrize("pool_size", [0, 2])
async def test_workers_write_the_pixels_of_a_same_host_stream(tmp_path, pool_size, request):
    if pool_size:
        request.getfixturevalue("ray_session")
    running = await start(settings(shared_memory_dir=str(tmp_path), pool_size=pool_size))
    try:
        shared = await asyncio.to_thread(read, running.target, 2, shared_memory=True)
        inline = await asyncio.to_thread(read, running.target, 2, shared_memory=False)
        assert shared == inline
        rings = running.servicer.rings
        # The first call's first window and the next batch are submitted before its
        # first batch sets the slot size: the server copies those in. The second call
        # of the same kind gets a ring at once.
        assert (rings.by_workers, rings.copied) == (18 - 5 + 18, 5)
        # The inline stream's pixels come to the server through a private ring, the same way.
        private = running.servicer.private_rings
        assert (private.by_workers, private.copied) == (18 - 5 + 18, 0)
    finally:
        await running.server.stop(None)
        running.pool.shutdown()


async def test_a_worker_writes_any_slot_of_a_ring_it_mapped_for_another(tmp_path):
    pool = RingPool(str(tmp_path), slots=3)
    writer, rings = RingWriter(pool, batch_size=1), MappedRings()
    await writer.put(made(np.zeros((1, 100), np.uint8)))  # makes the ring
    ring = writer.ring
    assert rings.write(ring.destination(0), np.ones((1, 100), np.uint8))  # maps it
    assert rings.write(ring.destination(2), np.full((1, 100), 7, np.uint8))
    last = slot_array(ring.buffer, ring.slot_bytes, 2, 100)
    assert (last == 7).all()
    writer.finish(completed=False)
