"""One shared-memory ring file, mapped by the server: its slots and the client's release counts.

Making a ring costs what reusing one does not: reserving its memory
(`posix_fallocate`, so that a full /dev/shm fails here with ENOSPC instead of faulting
later) and a page fault per 4 KiB at first touch in every process that maps it, about
12 ms per 38 MB measured here; `RingPool` therefore reuses them. Files are named
after the server's process id, so that the rings of a server that died can be found
and removed (`remove_stale_rings`).
"""

from __future__ import annotations

import asyncio
import mmap
import os
import re
import tempfile
from collections.abc import Collection
from contextlib import suppress
from pathlib import Path

import numpy as np

from augserve.clients.ring import HEADER_BYTES, MAGIC, released_counts, ring_bytes
from augserve.server.stream.ring.worker import Destination

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

        Polls until there is one: the client releases slots by writing the header's
        counts from its own process, which no event here can announce.
        """
        delay = _FIRST_POLL_S
        while True:
            for step in range(1, self.slots + 1):
                slot = (after + step) % self.slots
                if slot not in taken and self.released[slot] >= self.sent[slot]:
                    return slot
            await asyncio.sleep(delay)
            delay = min(2 * delay, _LAST_POLL_S)

    async def until_released(self, timeout_s: float) -> bool:
        """Wait until the client released all it was sent, at most `timeout_s`; whether it did.

        Polls, like `free_slot`.
        """
        delay, waited = _FIRST_POLL_S, 0.0
        while not self.all_released() and waited < timeout_s:
            await asyncio.sleep(delay)
            waited += delay
            delay = min(2 * delay, _LAST_POLL_S)
        return self.all_released()

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
