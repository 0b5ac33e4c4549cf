"""The shared-memory ring of a same-host stream: its layout, and the client's end.

A server streaming to a client on its own host can put each batch's pixels in a ring
of equal slots in a file under /dev/shm instead of in the gRPC message. The pixels are
then written once by the worker that makes them and copied once by the client, instead
of going through Ray's object store, protobuf, gRPC's buffers and the kernel's socket
on both sides (~7 ms of CPU per 9.6 MB batch on the development box). The layout
(also in stream.proto, `SharedMemorySlot`):

    bytes 0..15          MAGIC
    bytes 16..           one little-endian uint64 per slot: batches the client released
    HEADER_BYTES + k * slot_bytes   slot k

The n-th batch of a call goes through slot n % slots: the server (or the worker that
makes the batch) writes it there once the client has released every batch sent through
that slot, and the server sends a `Batch` naming the slot. The client copies the pixels
out and releases the slot (`RingReader.take`).
"""

from __future__ import annotations

import mmap
import os
from contextlib import suppress

import numpy as np

MAGIC = b"augserve-ring-v1"
HEADER_BYTES = 4096
MAX_SLOTS = (HEADER_BYTES - len(MAGIC)) // 8
"""The most slots a ring's header has room for."""


class SharedMemoryUnavailable(OSError):
    """The ring a batch names cannot be opened here (another host, another user...)."""


def ring_bytes(slots: int, slot_bytes: int) -> int:
    """The size of a ring's file."""
    return HEADER_BYTES + slots * slot_bytes


def released_counts(buffer: mmap.mmap, slots: int) -> np.ndarray:
    """The header's per-slot release counts, as a writable uint64 view of `buffer`."""
    return np.frombuffer(buffer, np.dtype("<u8"), count=slots, offset=len(MAGIC))


def slot_array(buffer: mmap.mmap, slot_bytes: int, slot: int, nbytes: int) -> np.ndarray:
    """The first `nbytes` of slot `slot`, as a uint8 view of `buffer`."""
    return np.frombuffer(buffer, np.uint8, count=nbytes, offset=HEADER_BYTES + slot * slot_bytes)


def open_ring(path: str, min_size: int) -> tuple[int, mmap.mmap]:
    """Open and map the whole ring file `path`: (its descriptor, its map).

    Raises:
        SharedMemoryUnavailable: it cannot be opened, is under `min_size` bytes, or is
            not a ring.
    """
    try:
        descriptor = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as error:
        raise SharedMemoryUnavailable(f"shared_memory: cannot open {path}: {error}") from error
    try:
        size = os.fstat(descriptor).st_size
        if size < max(min_size, HEADER_BYTES):
            raise SharedMemoryUnavailable(f"shared_memory: {path} is smaller than its slots")
        buffer = mmap.mmap(descriptor, size)
        if buffer[:len(MAGIC)] != MAGIC:
            buffer.close()
            raise SharedMemoryUnavailable(f"shared_memory: {path} is not an augserve ring")
    except BaseException:
        os.close(descriptor)
        raise
    return descriptor, buffer


def is_loopback_target(target: str) -> bool:
    """Whether a gRPC target names this host: a Unix socket, localhost, 127.x or ::1."""
    if target.startswith("unix:") or target.startswith("unix-abstract:"):
        return True
    for scheme in ("dns:///", "ipv4:", "ipv6:"):
        target = target.removeprefix(scheme)
    host = target.rsplit(":", 1)[0] if target.count(":") == 1 or "]" in target else target
    host = host.strip("[]").lower()
    return host in ("localhost", "::1") or host.startswith("127.")


class RingReader:
    """The client's end of a stream's rings: maps the one a batch names, copies out, releases.

    One reader serves one call at a time (a call's batches name one ring). The server
    pools rings across calls, so the next call usually names the same file and the
    mapping (its pages already faulted in) is kept; a batch naming another ring closes
    the previous mapping. The server owns the files and removes them.
    """

    def __init__(self) -> None:
        """No ring mapped yet."""
        self._path = ""
        self._buffer: mmap.mmap | None = None
        self._released: np.ndarray | None = None

    def take(self, path: str, slots: int, slot_bytes: int, slot: int,
             nbytes: int) -> np.ndarray:
        """A copy of the first `nbytes` of `slot` (uint8, writable); the slot is released.

        Raises:
            SharedMemoryUnavailable: the ring cannot be opened or is not a ring.
            ValueError: the slot or size lies outside the ring.
        """
        if path != self._path or self._buffer is None:
            self._open(path, slots, slot_bytes)
        if not 0 <= slot < slots or nbytes > slot_bytes:
            raise ValueError(f"shared_memory: slot {slot} of {nbytes} bytes is outside a ring "
                             f"of {slots} x {slot_bytes} bytes")
        images = np.empty(nbytes, np.uint8)
        np.copyto(images, slot_array(self._buffer, slot_bytes, slot, nbytes))
        self._released[slot] += 1
        return images

    def _open(self, path: str, slots: int, slot_bytes: int) -> None:
        self.close()
        if not 1 <= slots <= MAX_SLOTS:
            raise ValueError(f"shared_memory: {slots} slots (1..{MAX_SLOTS})")
        descriptor, buffer = open_ring(path, ring_bytes(slots, slot_bytes))
        os.close(descriptor)
        self._path, self._buffer = path, buffer
        self._released = released_counts(buffer, slots)

    def close(self) -> None:
        """Unmap the current ring, if any."""
        self._released = None
        if self._buffer is not None:
            with suppress(BufferError):  # a view still alive: unmapped when it goes
                self._buffer.close()
        self._path, self._buffer = "", None


__all__ = ["HEADER_BYTES", "MAGIC", "MAX_SLOTS", "RingReader", "SharedMemoryUnavailable",
           "is_loopback_target", "open_ring", "released_counts", "ring_bytes", "slot_array"]
