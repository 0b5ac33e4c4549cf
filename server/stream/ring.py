"""The server's end of same-host streams' shared-memory rings (layout: `augserve.clients.ring`).

A `RingWriter` belongs to one StreamBatches call: on the call's first batch it takes a
ring of the right slot size from the servicer's `RingPool` (or makes one), writes each
batch into the next slot once the client has released it, and hands the ring back when
the call ends. Making a ring costs what reusing one does not: reserving its memory
(`posix_fallocate`, so that a full /dev/shm fails here with ENOSPC instead of faulting
later) and a page fault per 4 KiB on both sides at first touch, about 12 ms per
38 MB ring measured here. A trainer opens one call per epoch, so rings are pooled: a
finished call's ring goes back once the client has released every batch written to it
(then no late release can land in the next call's counts), and the next call with the
same slot size gets it, counts reset; a client that reads on gets the same file and
keeps its mapping. Rings of cancelled or failed calls are removed. Anything that keeps
a call from getting a ring sends its pixels inline instead.
"""

from __future__ import annotations

import asyncio
import logging
import mmap
import os
import re
import tempfile
import weakref
from contextlib import suppress
from pathlib import Path

import numpy as np

from augserve.clients.proto.augserve.v1 import stream_pb2 as pb
from augserve.clients.ring import MAGIC, released_counts, ring_bytes, slot_array

log = logging.getLogger(__name__)

_PAGE = 4096
_FIRST_POLL_S, _LAST_POLL_S = 0.0002, 0.005
_PREFIX = "augserve-ring-"
_OWNER = re.compile(rf"{_PREFIX}(\d+)-")


def is_local_peer(peer: str) -> bool:
    """Whether a gRPC peer string ("ipv4:127.0.0.1:5000", "unix:...") is on this host."""
    return peer.startswith(("unix:", "ipv4:127.", "ipv6:[::1]", "ipv6:%5B::1%5D",
                            "ipv6:[::ffff:127."))


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
            os.posix_fallocate(descriptor, 0, size)
            self.buffer = mmap.mmap(descriptor, size)
        except OSError:
            os.unlink(self.path)
            raise
        finally:
            os.close(descriptor)
        self.buffer[:len(MAGIC)] = MAGIC
        self.released = released_counts(self.buffer, slots)
        self.written = np.zeros(slots, np.uint64)

    def reset(self) -> None:
        """Counts to zero, for a new call."""
        self.released[:] = 0
        self.written[:] = 0

    def all_released(self) -> bool:
        """Whether the client released every batch written since the last reset."""
        return bool(np.all(self.released >= self.written))

    def remove(self) -> None:
        """Unmap and delete the file (a client keeps its own mapping until it closes it)."""
        self.released = None
        with suppress(BufferError):  # a cancelled copy's view: unmapped when it goes
            self.buffer.close()
        with suppress(OSError):
            os.unlink(self.path)


class RingPool:
    """Rings of finished calls, kept mapped for the next calls (at most `keep` of them)."""

    def __init__(self, directory: str, slots: int, keep: int = 4,
                 release_timeout_s: float = 10.0) -> None:
        """Remove rings left by dead servers in `directory`; start with none."""
        self.directory, self.slots, self.keep = directory, slots, keep
        self.release_timeout_s = release_timeout_s
        self.free: list[Ring] = []
        self.returning: set[asyncio.Task] = set()
        self.made = 0
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

    async def give_back(self, ring: Ring) -> None:
        """Pool `ring` once its client released everything written to it; else remove it."""
        delay, waited = _FIRST_POLL_S, 0.0
        while not ring.all_released():
            if waited >= self.release_timeout_s:
                ring.remove()
                return
            await asyncio.sleep(delay)
            waited += delay
            delay = min(2 * delay, _LAST_POLL_S)
        self.free.append(ring)
        while len(self.free) > self.keep:
            self.free.pop(0).remove()

    def close(self) -> None:
        """Remove every pooled ring."""
        _remove_all(self.free)


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


class RingWriter:
    """One call's use of a ring: slot after slot, waiting for the client's releases."""

    def __init__(self, pool: RingPool, batch_size: int) -> None:
        """Nothing is taken from `pool` until the first batch (it sets the slot size)."""
        self.pool, self.batch_size = pool, batch_size
        self.ring: Ring | None = None
        self.sent = 0
        self.inline = False

    async def put(self, images: np.ndarray) -> pb.SharedMemorySlot | None:
        """Write `images` into the next slot once it is free; None: send them inline.

        Waits (polling the header, 0.2 to 5 ms apart) while the client still holds the
        slot; a client that stops reading therefore holds only its own stream back.
        """
        if self.inline or not images.size:
            return None
        if self.ring is None:
            per_sample = images.nbytes // max(len(images), 1)
            wanted = max(per_sample * self.batch_size, images.nbytes)
            self.ring = self.pool.take(-(-wanted // _PAGE) * _PAGE)
            if self.ring is None:
                self.inline = True
                return None
        ring = self.ring
        if images.nbytes > ring.slot_bytes:
            return None
        slot, lap = self.sent % ring.slots, self.sent // ring.slots
        delay = _FIRST_POLL_S
        while ring.released[slot] < lap:
            await asyncio.sleep(delay)
            delay = min(2 * delay, _LAST_POLL_S)
        target = slot_array(ring.buffer, ring.slot_bytes, slot, images.nbytes)
        source = np.ascontiguousarray(images).reshape(-1).view(np.uint8)
        await asyncio.to_thread(np.copyto, target, source)  # numpy copies without the GIL
        ring.written[slot] += 1
        self.sent += 1
        return pb.SharedMemorySlot(path=ring.path, slots=ring.slots, slot_bytes=ring.slot_bytes,
                                   slot=slot)

    def finish(self, completed: bool) -> None:
        """The call ended: pool the ring (once released) if it completed, else remove it."""
        ring, self.ring = self.ring, None
        if ring is None:
            return
        if completed:
            task = asyncio.get_running_loop().create_task(self.pool.give_back(ring))
            self.pool.returning.add(task)
            task.add_done_callback(self.pool.returning.discard)
        else:
            ring.remove()


__all__ = ["Ring", "RingPool", "RingWriter", "is_local_peer", "remove_stale_rings"]
