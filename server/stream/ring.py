"""The server's end of same-host streams' shared-memory rings (layout: `augserve.clients.ring`).

A `RingWriter` belongs to one StreamBatches call. Each batch goes through a free slot
of the ring: one the client has released everything sent through, and no other batch
of the call has reserved. Its first batch comes back from a worker as usual and sets
the slot size: the writer then takes a ring of that size from the servicer's
`RingPool` (or makes one) and copies the batch in. From then on each batch is given a
slot when it is submitted (`reserve`), and the worker writes its pixels straight into
it (`MappedRings`), so they cross no object store and no copy in the server; a worker
that cannot open the ring (another node, another user) returns them as usual and the
server copies them in.

Any free slot, not slot n % slots: a client may keep up to `holdable` batches as
views of their slots (`augserve.clients.ring.RingReader`), released in whatever order
it drops them, and a batch it keeps must not stall the stream. The ring has `window`
slots for the batches in flight, one for the message on its way, and `holdable` for
the client.

Making a ring costs what reusing one does not: reserving its memory
(`posix_fallocate`, so that a full /dev/shm fails here with ENOSPC instead of faulting
later) and a page fault per 4 KiB at first touch in every process that maps it, about
12 ms per 38 MB measured here. A trainer opens one call per epoch, so rings are
pooled: a finished call's ring goes back once the client has released every batch sent
through it (then no late release can land in the next call's counts), and the next call
with the same slot size gets it, counts reset; the client and the workers keep their
mappings. Rings of cancelled or failed calls are removed. Anything that keeps a call
from getting a ring sends its pixels inline instead.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import mmap
import os
import re
import tempfile
import threading
import weakref
from collections.abc import Collection, Hashable
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from augserve.clients.proto.augserve.v1 import stream_pb2 as pb
from augserve.clients.ring import (
    HEADER_BYTES,
    MAGIC,
    RingMaps,
    released_counts,
    ring_bytes,
    slot_array,
)

if TYPE_CHECKING:
    from augserve.server.stream.pool import BatchResult

log = logging.getLogger(__name__)

_PAGE = 4096
_VIEW_DTYPES = {"uint8": np.uint8, "float32": np.float32, "float16": np.float16,
                "bfloat16": np.int16}  # bfloat16 travels as 16-bit words
_FIRST_POLL_S, _LAST_POLL_S = 0.0002, 0.005
_PREFIX = "augserve-ring-"
_OWNER = re.compile(rf"{_PREFIX}(\d+)-")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Ring:
    """One ring file, mapped: `slots` slots of `slot_bytes`, and the header's release counts."""

    def __init__(self, directory: str, slots: int, slot_bytes: int) -> None:
        """Make and map the file (named after this process, so stale ones can be found).

        Raises:
            OSError: the directory is missing, or has no room (ENOSPC).
        """
        self.slots, self.slot_bytes = slots, slot_bytes
        descriptor, self.path = tempfile.mkstemp(prefix=f"{_PREFIX}{os.getpid()}-",
                                                 dir=directory)
        try:
            size = ring_bytes(slots, slot_bytes)
            if hasattr(os, "posix_fallocate"):
                os.posix_fallocate(descriptor, 0, size)
            else:  # macOS: sparse (its /dev/shm does not exist; a chosen folder may)
                os.ftruncate(descriptor, size)
            self.buffer = mmap.mmap(descriptor, size)
        except OSError:
            os.unlink(self.path)
            raise
        finally:
            os.close(descriptor)
        self.buffer[:len(MAGIC)] = MAGIC
        self.released = released_counts(self.buffer, slots)
        self.sent = np.zeros(slots, np.uint64)

    def reset(self) -> None:
        """Counts to zero, for a new call."""
        self.released[:] = 0
        self.sent[:] = 0

    def all_released(self) -> bool:
        """Whether the client released every batch sent through the ring since the reset."""
        return bool(np.all(self.released >= self.sent))

    async def free_slot(self, after: int, taken: Collection[int]) -> int:
        """The first slot past `after` (cyclically) that is released and not `taken`.

        Polls until there is one.
        """
        delay = _FIRST_POLL_S
        while True:
            for step in range(1, self.slots + 1):
                slot = (after + step) % self.slots
                if slot not in taken and self.released[slot] >= self.sent[slot]:
                    return slot
            await asyncio.sleep(delay)
            delay = min(2 * delay, _LAST_POLL_S)

    def destination(self, slot: int) -> Destination:
        """Where a worker writes the batch of `slot`."""
        return Destination(self.path, HEADER_BYTES + slot * self.slot_bytes, self.slot_bytes)

    def remove(self) -> None:
        """Unmap and delete the file (a client keeps its own mapping until it closes it)."""
        self.released = None
        with suppress(BufferError):  # a cancelled copy's view: unmapped when it goes
            self.buffer.close()
        with suppress(OSError):
            os.unlink(self.path)


class RingPool:
    """Rings of finished calls, kept mapped for the next calls (at most `keep` of them).

    Counts the batches that went through rings: written there by the workers
    (`by_workers`) or copied in by the server (`copied`).
    """

    def __init__(self, directory: str, slots: int, keep: int = 4,
                 release_timeout_s: float = 10.0, holdable: int = 0) -> None:
        """Remove rings left by dead servers in `directory`; start with none.

        `holdable`: the batches a client may keep unreleased without stalling its
        stream (told to it in each `SharedMemorySlot`); 0 for private rings.
        """
        self.directory, self.slots, self.keep = directory, slots, keep
        self.holdable = holdable
        self.release_timeout_s = release_timeout_s
        self.free: list[Ring] = []
        self.returning: set[asyncio.Task] = set()
        self.made = 0
        self.by_workers = 0
        self.copied = 0
        self.slot_sizes: dict[Hashable, int] = {}  # a stream's kind -> its last slot size
        self.failed = False
        remove_stale_rings(directory)
        weakref.finalize(self, _remove_all, self.free)

    def take(self, slot_bytes: int) -> Ring | None:
        """A free ring with this slot size (counts reset), a new one, or None (inline)."""
        for index in range(len(self.free) - 1, -1, -1):
            if self.free[index].slot_bytes == slot_bytes:
                ring = self.free.pop(index)
                ring.reset()
                return ring
        try:
            ring = Ring(self.directory, self.slots, slot_bytes)
        except OSError as error:
            if not self.failed:
                log.warning("shared-memory ring of %d x %d bytes not made in %s (%s); "
                            "streams send their pixels inline meanwhile", self.slots,
                            slot_bytes, self.directory, error)
            self.failed = True
            return None
        self.failed = False
        self.made += 1
        return ring

    async def give_back(self, ring: Ring, keep: bool = True) -> None:
        """Pool `ring` (`keep`) or remove it, once its client released all it was sent.

        After `release_timeout_s` it is removed whatever the client did. A failed
        call's ring is removed this way too: the client may still be reading the
        batches sent before the failure, and they name it.
        """
        delay, waited = _FIRST_POLL_S, 0.0
        try:
            while not ring.all_released() and waited < self.release_timeout_s:
                await asyncio.sleep(delay)
                waited += delay
                delay = min(2 * delay, _LAST_POLL_S)
        except asyncio.CancelledError:  # the server is shutting down
            ring.remove()
            raise
        if not keep or not ring.all_released():
            ring.remove()
            return
        self.free.append(ring)
        while len(self.free) > self.keep:
            self.free.pop(0).remove()

    def close(self) -> None:
        """Remove every pooled ring."""
        _remove_all(self.free)

    async def aclose(self) -> None:
        """Remove every ring: the pooled ones and those still waiting for their client."""
        returning = list(self.returning)
        for task in returning:
            task.cancel()
        await asyncio.gather(*returning, return_exceptions=True)
        self.close()


def _remove_all(rings: list[Ring]) -> None:
    while rings:
        rings.pop().remove()


def remove_stale_rings(directory: str) -> int:
    """Delete the ring files in `directory` whose server process is gone; return how many."""
    removed = 0
    with suppress(OSError):
        for path in Path(directory).glob(f"{_PREFIX}*"):
            owner = _OWNER.match(path.name)
            if owner and not _pid_alive(int(owner.group(1))):
                with suppress(OSError):
                    path.unlink()
                    removed += 1
    return removed


@dataclasses.dataclass(frozen=True)
class Destination:
    """A ring slot a worker writes a batch into.

    Attributes:
        path: the ring's file.
        offset: the slot's first byte in it.
        capacity: the slot's size in bytes.
    """

    path: str
    offset: int
    capacity: int


class MappedRings(RingMaps):
    """A worker's maps of the rings it writes into (at most `keep`; removed ones dropped)."""

    def __init__(self, keep: int = 16) -> None:
        """No ring mapped yet."""
        super().__init__(keep)
        self._lock = threading.Lock()  # the in-process worker makes batches on threads

    def write(self, destination: Destination, images: np.ndarray) -> bool:
        """Copy `images` into `destination`; False when it cannot (then send them back)."""
        if images.nbytes > destination.capacity:
            return False
        try:
            with self._lock:
                buffer = self.get(destination.path, destination.offset + destination.capacity)
        except OSError:  # e.g. a worker on another node
            return False
        target = np.frombuffer(buffer, np.uint8, count=images.nbytes, offset=destination.offset)
        np.copyto(target, np.ascontiguousarray(images).reshape(-1).view(np.uint8))
        return True


class RingWriter:
    """One call's use of a ring: a free slot per batch, reserved at submission.

    A shared ring (`put`) is the client's: it keeps the pixels in place or copies them
    out, and releases the slots. A private ring (`place`, `release`) only carries the
    pixels from the workers to this process, for streams that send them inline: it
    spares the object store (about 1.4 ms of the raylet's CPU and 1.7 ms of the
    worker's per 9.6 MB batch, measured here).

    The ring needs more slots than the stream's window: a batch is submitted while
    `window - 1` others are in flight and the one before it is on its way, so with
    `window + 1 + holdable` slots one is free once the client released what it does
    not hold.
    """

    def __init__(self, pool: RingPool, batch_size: int, kind: Hashable = None) -> None:
        """A writer for one call; it takes a ring when it learns the slot size.

        An earlier call of the same `kind` (dataset, pipeline, batch size, dtype,
        layout) gives it at the first submission; else the call's first batch does.
        """
        self.pool, self.batch_size, self.kind = pool, batch_size, kind
        self.ring: Ring | None = None
        self.reserved = 0
        self.sent = 0
        self.slot_of: dict[int, int] = {}  # batch number -> its reserved slot, until sent
        self.last_slot = -1
        self.inline = False
        self.by_workers = 0
        self.copied = 0

    async def reserve(self) -> Destination | None:
        """The slot of the next batch submitted, once free; None before the ring exists."""
        number, self.reserved = self.reserved, self.reserved + 1
        if self.ring is None and not self.inline and self.kind in self.pool.slot_sizes:
            self._take_slots(self.pool.slot_sizes[self.kind])
        if self.ring is None:
            return None
        slot = self.slot_of[number] = await self._free_slot()
        return self.ring.destination(slot)

    async def _free_slot(self) -> int:
        self.last_slot = await self.ring.free_slot(self.last_slot, self.slot_of.values())
        return self.last_slot

    async def put(self, result: BatchResult) -> pb.SharedMemorySlot | None:
        """The next batch's slot, its pixels copied in unless the worker wrote them there.

        None: send the pixels inline (no ring, or a batch larger than a slot).
        """
        number, self.sent = self.sent, self.sent + 1
        slot = self.slot_of.pop(number, None)
        images = result.images
        if not result.written and (self.inline or images is None or not images.size):
            return None
        if self.ring is None and not self._take(images):
            return None
        ring = self.ring
        if result.written:
            self.by_workers += 1
        elif images.nbytes > ring.slot_bytes:
            self.pool.slot_sizes.pop(self.kind, None)
            return None
        else:
            if slot is None:
                slot = await self._free_slot()
            target = slot_array(ring.buffer, ring.slot_bytes, slot, images.nbytes)
            source = np.ascontiguousarray(images).reshape(-1).view(np.uint8)
            await asyncio.to_thread(np.copyto, target, source)  # numpy copies without the GIL
            self.copied += 1
        ring.sent[slot] += 1
        return pb.SharedMemorySlot(path=ring.path, slots=ring.slots, slot_bytes=ring.slot_bytes,
                                   slot=slot, holdable=self.pool.holdable)

    def place(self, result: BatchResult) -> tuple[int, np.ndarray] | None:
        """A private ring's next batch: (slot, its images viewed there), or None.

        None when the worker did not write them to the ring: they are in
        `result.images`, and the first such batch sets the slot size (the next batches
        are written to the ring). `release` the slot once the images are copied out.
        """
        number, self.sent = self.sent, self.sent + 1
        slot = self.slot_of.pop(number, None)
        if not result.written:
            images = result.images
            if self.ring is None and not self.inline and images is not None and images.size:
                self._take(images)
            return None
        ring = self.ring
        ring.sent[slot] += 1
        self.by_workers += 1
        view = np.frombuffer(ring.buffer, _VIEW_DTYPES[result.dtype],
                             count=int(np.prod(result.written)),
                             offset=HEADER_BYTES + slot * ring.slot_bytes)
        return slot, view.reshape(result.written)

    def release(self, slot: int) -> None:
        """A private ring's slot is free again (its images were copied out)."""
        self.ring.released[slot] += 1

    def _take(self, images: np.ndarray) -> bool:
        per_sample = images.nbytes // max(len(images), 1)
        wanted = max(per_sample * self.batch_size, images.nbytes)
        return self._take_slots(-(-wanted // _PAGE) * _PAGE)

    def _take_slots(self, slot_bytes: int) -> bool:
        self.ring = self.pool.take(slot_bytes)
        self.inline = self.ring is None
        if self.ring is not None:
            if len(self.pool.slot_sizes) >= 1024:
                self.pool.slot_sizes.clear()
            self.pool.slot_sizes[self.kind] = slot_bytes
        return not self.inline

    def finish(self, completed: bool) -> None:
        """The call ended: pool the ring if it completed, else remove it.

        Either waits until the client has released what was sent (a private ring's
        sends are released already).
        """
        self.pool.by_workers += self.by_workers
        self.pool.copied += self.copied
        ring, self.ring = self.ring, None
        if ring is None:
            return
        if not completed and ring.all_released():
            ring.remove()  # nothing sent is unread; a worker may still write: never pool it
            return
        task = asyncio.get_running_loop().create_task(self.pool.give_back(ring, completed))
        self.pool.returning.add(task)
        task.add_done_callback(self.pool.returning.discard)


__all__ = ["Destination", "MappedRings", "Ring", "RingPool", "RingWriter", "remove_stale_rings"]
