"""One StreamBatches call's use of a shared-memory ring (layout: `augserve.clients.ring`).

Each batch goes through a free slot of the ring: one the client has released
everything sent through, and no other batch of the call has reserved. Its first
batch comes back from a worker as usual and sets the slot size: the writer then
takes a ring of that size from the servicer's `RingPool` (or makes one) and copies
the batch in. From then on each batch is given a slot when it is submitted
(`reserve`), and the worker writes its pixels straight into it (`MappedRings`), so
they cross no object store and no copy in the server; a worker that cannot open the
ring (another node, another user) returns them as usual and the server copies them in.

Any free slot, not slot n % slots: a client may keep up to `holdable` batches as
views of their slots (`augserve.clients.ring.RingReader`), released in whatever order
it drops them, and a batch it keeps must not stall the stream. The ring has `window`
slots for the batches in flight, one for the message on its way, and `holdable` for
the client.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from typing import TYPE_CHECKING

import numpy as np

from augserve.clients.proto.augserve.v1 import stream_pb2 as pb
from augserve.clients.ring import HEADER_BYTES, slot_array
from augserve.server.stream.ring.file import Ring
from augserve.server.stream.ring.pool import RingPool
from augserve.server.stream.ring.worker import Destination

if TYPE_CHECKING:
    from augserve.server.stream.pool import BatchResult

_PAGE = 4096
_VIEW_DTYPES = {"uint8": np.uint8, "float32": np.float32, "float16": np.float16,
                "bfloat16": np.int16}  # bfloat16 travels as 16-bit words


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
