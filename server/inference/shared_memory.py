"""Triton's system shared-memory extension: regions clients register, and tensors in them.

A client on the server's host puts an input tensor in a POSIX shared-memory object
(`/dev/shm/<key>`), registers it under a name (SystemSharedMemoryRegister: key, offset,
byte size), and names the region in the input's parameters (`shared_memory_region`,
`shared_memory_byte_size`, optionally `shared_memory_offset`) instead of sending its
bytes; an output named the same way is written into its region instead of into the
reply. This is what `tritonclient.utils.shared_memory` and `InferInput.set_shared_memory`
speak. Regions are registered and used only by clients on this host (loopback or a Unix
socket): a region maps memory of this machine, which a remote client must not reach.
Inputs are copied out of their region when the request is decoded, so a client may reuse
the region as soon as it has the reply.
"""

from __future__ import annotations

import mmap
import os
import threading
from contextlib import suppress
from dataclasses import dataclass

import numpy as np

from augserve.server.errors import AlreadyExists, InvalidArgument, NotFound
from augserve.server.paths import check_name, inside

SHM_ROOT = "/dev/shm"
REGION = "shared_memory_region"
BYTE_SIZE = "shared_memory_byte_size"
OFFSET = "shared_memory_offset"


@dataclass
class Region:
    """A registered region: `byte_size` bytes at `offset` of the object `key`, mapped."""

    name: str
    key: str
    offset: int
    byte_size: int
    buffer: mmap.mmap


def _object_path(key: str) -> str:
    name = key.removeprefix("/")
    if not name or "/" in name or name in (".", ".."):
        raise InvalidArgument(f"key: {key!r} is not a POSIX shared-memory name ('/name')")
    return str(inside(SHM_ROOT, check_name(name, "key"), field="key"))


class SystemSharedMemory:
    """The server's registered regions, by name (thread-safe)."""

    def __init__(self) -> None:
        """No region yet."""
        self.regions: dict[str, Region] = {}
        self._lock = threading.Lock()

    def register(self, name: str, key: str, offset: int, byte_size: int) -> None:
        """Map `byte_size` bytes at `offset` of the shared-memory object `key` as `name`.

        Raises:
            AlreadyExists: a region of that name is registered.
            InvalidArgument: an empty name, a bad key, or a range outside the object.
        """
        if not name:
            raise InvalidArgument("name: a region needs a name")
        check_name(name, "name")
        if byte_size <= 0:
            raise InvalidArgument(f"byte_size: expected > 0, got {byte_size}")
        path = _object_path(key)
        with self._lock:
            if name in self.regions:
                raise AlreadyExists(f"name: shared-memory region {name!r} is already registered")
            try:
                descriptor = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError as error:
                raise InvalidArgument(f"key: cannot open shared memory {key!r}: "
                                      f"{error.strerror}") from None
            try:
                size = os.fstat(descriptor).st_size
                if offset + byte_size > size:
                    raise InvalidArgument(f"byte_size: offset {offset} + {byte_size} bytes is "
                                          f"past the end of {key!r} ({size} bytes)")
                buffer = mmap.mmap(descriptor, size)
            finally:
                os.close(descriptor)
            self.regions[name] = Region(name, key, offset, byte_size, buffer)

    def unregister(self, name: str) -> None:
        """Forget region `name`, or every region when `name` is empty.

        Raises:
            NotFound: no region of that name.
        """
        with self._lock:
            names = [name] if name else list(self.regions)
            if name and name not in self.regions:
                raise NotFound(f"name: no shared-memory region {name!r} is registered")
            for each in names:
                region = self.regions.pop(each)
                with suppress(BufferError):  # a request is reading it: unmapped when done
                    region.buffer.close()

    def status(self, name: str) -> list[Region]:
        """Region `name`, or every region when `name` is empty.

        Raises:
            NotFound: no region of that name.
        """
        with self._lock:
            if not name:
                return list(self.regions.values())
            if name not in self.regions:
                raise NotFound(f"name: no shared-memory region {name!r} is registered")
            return [self.regions[name]]

    def span(self, what: str, parameters: dict[str, int | str], needed: int | None
             ) -> tuple[Region, int, int]:
        """The region, start and byte size a tensor's parameters name (checked).

        Raises:
            InvalidArgument: an unknown region, a range outside it, or a byte size
                other than `needed` (when given).
        """
        name = str(parameters[REGION])
        region = self.regions.get(name)
        if region is None:
            raise InvalidArgument(f"{what}: shared-memory region {name!r} is not registered")
        byte_size = int(parameters.get(BYTE_SIZE, region.byte_size))
        offset = int(parameters.get(OFFSET, 0))
        if offset < 0 or byte_size < 0 or offset + byte_size > region.byte_size:
            raise InvalidArgument(f"{what}: offset {offset} + {byte_size} bytes is outside "
                                  f"region {name!r} ({region.byte_size} bytes)")
        if needed is not None and byte_size != needed:
            raise InvalidArgument(f"{what}: {BYTE_SIZE} is {byte_size}, its shape and "
                                  f"datatype need {needed}")
        return region, region.offset + offset, byte_size

    def read(self, what: str, parameters: dict[str, int | str], needed: int) -> bytes:
        """A copy of the `needed` bytes an input's parameters point to."""
        region, start, byte_size = self.span(what, parameters, needed)
        return region.buffer[start:start + byte_size]

    def write(self, what: str, parameters: dict[str, int | str], array: np.ndarray) -> None:
        """Write an output into the region its parameters point to (it must fit)."""
        region, start, byte_size = self.span(what, parameters, None)
        data = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
        if data.nbytes > byte_size:
            raise InvalidArgument(f"{what}: {data.nbytes} bytes do not fit the "
                                  f"{byte_size} of region {region.name!r}")
        region.buffer[start:start + data.nbytes] = data.tobytes()


def parameters_of(tensor: object) -> dict[str, int | str]:
    """A tensor's shared-memory parameters (empty when it is not in shared memory)."""
    if not len(tensor.parameters):  # the common case, once per tensor of every request
        return {}
    found: dict[str, int | str] = {}
    for key in (REGION, BYTE_SIZE, OFFSET):
        if key in tensor.parameters:
            value = tensor.parameters[key]
            found[key] = value.string_param if key == REGION else (
                value.int64_param or value.uint64_param)
    return found if REGION in found else {}


__all__ = ["BYTE_SIZE", "OFFSET", "REGION", "Region", "SystemSharedMemory", "parameters_of"]
