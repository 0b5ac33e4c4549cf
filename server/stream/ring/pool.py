"""Rings kept between calls: a trainer opens one StreamBatches call per epoch.

A finished call's ring goes back once the client has released every batch sent
through it (then no late release can land in the next call's counts), and the next
call with the same slot size gets it, counts reset; the client and the workers keep
their mappings. Rings of cancelled or failed calls are removed. Anything that keeps a
call from getting a ring sends its pixels inline instead.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Hashable

from augserve.server.stream.ring.file import Ring, remove_stale_rings

log = logging.getLogger(__name__)


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
        try:
            released = await ring.until_released(self.release_timeout_s)
        except asyncio.CancelledError:  # the server is shutting down
            ring.remove()
            raise
        if not keep or not released:
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
