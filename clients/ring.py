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

The server (or the worker that makes the batch) writes each batch into a slot whose
batches the client has all released, and sends a `Batch` naming the slot. The client
(`RingReader.take`) either keeps the pixels where they are, as a numpy view that
releases the slot when the last array or tensor viewing it is garbage collected, or
copies them out and releases the slot at once. It keeps at most `holdable` (a field of
the `Batch`'s slot) at a time, so that batches a trainer holds on to never stall the
stream: past that it copies.
"""

from __future__ import annotations

import mmap
import os
import threading
import weakref
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


class RingMaps:
    """Ring files mapped by path: at most `keep` of them, and none the server has removed.

    Each `get` first drops the maps of removed files (one `fstat` per map), so that a
    removed ring's memory goes back once nothing views it, then maps `path` if it is new,
    dropping the oldest map past `keep`. The client's `RingReader` and the stream
    workers (`augserve.server.stream.ring.MappedRings`) both keep their maps here. Not
    thread-safe.
    """

    def __init__(self, keep: int) -> None:
        """Nothing mapped yet."""
        self.keep = keep
        self.maps: dict[str, tuple[int, mmap.mmap]] = {}

    def get(self, path: str, min_size: int) -> mmap.mmap:
        """The map of the ring file `path`, at least `min_size` bytes long.

        Raises:
            SharedMemoryUnavailable: it cannot be opened, is too small, or is not a ring.
        """
        for known, (descriptor, buffer) in list(self.maps.items()):
            if os.fstat(descriptor).st_nlink == 0 or (known == path and len(buffer) < min_size):
                self.drop(known)
        if path not in self.maps:
            descriptor, buffer = open_ring(path, min_size)
            while len(self.maps) >= self.keep:
                self.drop(next(iter(self.maps)))
            self.maps[path] = (descriptor, buffer)
        return self.maps[path][1]

    def drop(self, path: str) -> None:
        """Unmap `path` (a view still alive keeps its memory until the last one goes)."""
        descriptor, buffer = self.maps.pop(path)
        os.close(descriptor)
        with suppress(BufferError):
            buffer.close()

    def close(self) -> None:
        """Unmap every ring."""
        while self.maps:
            self.drop(next(iter(self.maps)))


class RingReader:
    """The client's end of a stream's rings: maps the one a batch names, views or copies, releases.

    The server pools rings across calls (a trainer's epochs), and a batch kept in
    place can outlive its call, so the reader keeps the last few rings mapped (their
    pages already faulted in; `RingMaps`). The server owns the files.
    """

    def __init__(self, zero_copy: bool = True, keep: int = 4) -> None:
        """No ring mapped yet.

        Args:
            zero_copy: hand out views of the slots while fewer than the batch's
                `holdable` are held; False: always copy.
            keep: rings kept mapped at most.
        """
        self.zero_copy = zero_copy
        self._maps = RingMaps(keep)
        self._held = 0
        self._lock = threading.Lock()  # views are released on whichever thread drops them

    @property
    def held(self) -> int:
        """Batches handed out as views and not yet released."""
        return self._held

    def take(self, path: str, slots: int, slot_bytes: int, slot: int, nbytes: int,
             holdable: int = 0) -> np.ndarray:
        """The first `nbytes` of `slot` as a writable uint8 array.

        A view of the slot, released when the last array or tensor viewing it goes,
        while fewer than `holdable` views are held (and `zero_copy`); else a copy, and
        the slot is released at once.

        Raises:
            SharedMemoryUnavailable: the ring cannot be opened or is not a ring.
            ValueError: the slot or size lies outside the ring.
        """
        if not 0 <= slot < slots or nbytes > slot_bytes:
            raise ValueError(f"shared_memory: slot {slot} of {nbytes} bytes is outside a ring "
                             f"of {slots} x {slot_bytes} bytes")
        buffer, released = self._ring(path, slots, slot_bytes)
        view = slot_array(buffer, slot_bytes, slot, nbytes)
        with self._lock:
            keep_in_place = self.zero_copy and self._held < holdable
            self._held += keep_in_place
        if keep_in_place:
            # Every array derived from `view` (reshapes, slices, torch.from_numpy) has it
            # as its base, so this runs once the last of them is gone.
            weakref.finalize(view, self._release, released, slot, os.getpid()).atexit = False
            return view
        images = np.empty(nbytes, np.uint8)
        np.copyto(images, view)
        released[slot] += 1
        return images

    def _release(self, released: np.ndarray, slot: int, owner: int) -> None:
        if os.getpid() != owner:  # a forked child's copy of the view: the parent holds it
            return
        released[slot] += 1
        with self._lock:
            self._held -= 1

    def _ring(self, path: str, slots: int, slot_bytes: int) -> tuple[mmap.mmap, np.ndarray]:
        if not 1 <= slots <= MAX_SLOTS:
            raise ValueError(f"shared_memory: {slots} slots (1..{MAX_SLOTS})")
        buffer = self._maps.get(path, ring_bytes(slots, slot_bytes))
        return buffer, released_counts(buffer, slots)

    def close(self) -> None:
        """Unmap every ring (views still held keep their memory until they go)."""
        self._maps.close()


__all__ = ["HEADER_BYTES", "MAGIC", "MAX_SLOTS", "RingMaps", "RingReader",
           "SharedMemoryUnavailable", "is_loopback_target", "open_ring", "released_counts",
           "ring_bytes", "slot_array"]
