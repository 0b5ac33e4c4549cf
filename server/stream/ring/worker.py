"""A stream worker's side of the shared-memory rings: where to write a batch, and writing it."""

from __future__ import annotations

import dataclasses
import threading

import numpy as np

from augserve.clients.ring import RingMaps


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
