"""`StreamedBatch` and `parse_batch`: a `Batch` message's wire bytes, pixels left in place.

`reuse_large_buffers` keeps glibc from handing every ~10 MB message buffer back to the
kernel, so both ends of a stream reuse mapped pages instead of faulting in fresh ones.

Protobuf would copy the image bytes twice (into the message, then out as `bytes`); here
the small fields go through protobuf and the pixels stay in the buffer gRPC delivered,
viewed by `np.frombuffer`.

Example:
    >>> batch = parse_batch(raw)  # raw: the bytes of one augserve.v1.Batch  # doctest: +SKIP
    >>> batch.images.shape, batch.labels[:3], batch.position  # doctest: +SKIP
    ((64, 3, 224, 224), array([3, 1, 4]), 7)
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
from collections.abc import Iterator

import numpy as np

from augserve.clients.augment import decode_image
from augserve.clients.proto.augserve.v1 import augment_pb2
from augserve.clients.proto.augserve.v1 import stream_pb2 as pb
from augserve.clients.ring import RingReader

_DTYPES = {"uint8": np.uint8, "float32": np.float32, "float16": np.float16}
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
_MMAP_THRESHOLD = 32 << 20  # glibc's largest (HEAP_MAX_SIZE / 2 on 64-bit)
_TRIM_THRESHOLD = 256 << 20


@functools.cache
def reuse_large_buffers() -> bool:
    """Let glibc reuse freed message buffers of up to 32 MiB (process-wide; once).

    By default glibc maps each allocation of this size (or the arena it lands in
    trims it on free), so every batch's buffers (gRPC's slices, the `bytes` of a
    message) cost ~2,400 page faults of freshly zeroed pages: measured here at about
    1 ms of CPU per 9.6 MB batch on each end of a stream. With allocations up to
    32 MiB served from the heap and up to 256 MiB of free heap kept (per arena), the
    pages are reused. The process's resident memory then stays at its peak instead of
    shrinking after it. No effect (False) where the C library has no `mallopt`.

    Returns:
        True when both settings were applied.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library already loaded in the process
    except (AttributeError, OSError, TypeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
                and mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))


@dataclasses.dataclass(frozen=True)
class StreamedBatch:
    """One batch with its metadata (numpy).

    Attributes:
        images: [n, C, H, W] or [n, H, W, C] array.
        labels: [n] int64.
        sample_indices: [n] dataset indices.
        epoch: the epoch.
        position: the batch's position in the shard's epoch.
        batches_in_epoch: how many batches the shard's epoch has.
        skipped: corrupt files the server left out ("path: reason").
        normalize_mean: normalization left to the trainer (empty when none).
        normalize_std: idem.
    """

    images: np.ndarray
    labels: np.ndarray
    sample_indices: np.ndarray
    epoch: int
    position: int
    batches_in_epoch: int
    skipped: tuple[str, ...] = ()
    normalize_mean: tuple[float, ...] = ()
    normalize_std: tuple[float, ...] = ()


def _varint(raw: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = raw[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _fields(raw: bytes, start: int, stop: int) -> Iterator[tuple[int, int, int, int]]:
    """(field number, field start, value start, value end) of each field in raw[start:stop]."""
    pos = start
    while pos < stop:
        begin = pos
        key, pos = _varint(raw, pos)
        wire = key & 7
        if wire == 2:
            length, pos = _varint(raw, pos)
            end = pos + length
        elif wire == 0:
            end = _varint(raw, pos)[1]
        elif wire in (1, 5):
            end = pos + (8 if wire == 1 else 4)
        else:
            raise ValueError(f"unsupported wire type {wire} in a Batch message")
        yield key >> 3, begin, pos, end
        pos = end


def _split(raw: bytes, start: int, stop: int, field: int
           ) -> tuple[tuple[int, int] | None, bytes]:
    """The span of `field` (length-delimited, once) and the other fields' bytes."""
    view, span, rest = memoryview(raw), None, []
    for number, begin, value, end in _fields(raw, start, stop):
        if number == field and span is None:
            span = (value, end)
        else:
            rest.append(view[begin:end])
    return span, b"".join(rest)


def _take(where: pb.SharedMemorySlot, info: augment_pb2.Image, ring: RingReader | None
          ) -> np.ndarray:
    if ring is None:
        raise ValueError("the batch's pixels are in shared memory: parse it with a RingReader")
    itemsize = 2 if info.dtype == "bfloat16" else np.dtype(_DTYPES[info.dtype or "uint8"]).itemsize
    nbytes = int(np.prod(info.shape)) * itemsize
    return ring.take(where.path, where.slots, where.slot_bytes, where.slot, nbytes,
                     where.holdable)


def parse_batch(raw: bytes, ring: RingReader | None = None) -> StreamedBatch:
    """A `Batch` message's wire bytes as a StreamedBatch; inline pixels are not copied.

    Protobuf would copy the image bytes twice (into the message, then out as `bytes`);
    here the small fields go through protobuf and the pixels stay where gRPC put them,
    viewed by `np.frombuffer` (read-only). Pixels sent through the stream's
    shared-memory ring are taken by `ring` (writable): left in their slot, released
    when the last array viewing them goes, or copied out (see `RingReader.take`).

    Raises:
        ValueError: the pixels are in shared memory and no `ring` was given.
        SharedMemoryUnavailable: the ring the batch names cannot be opened here.
    """
    image_span, rest = _split(raw, 0, len(raw), 1)
    message = pb.Batch.FromString(rest)
    if image_span is None:
        images = np.zeros(0, np.uint8)  # every sample of the batch was a corrupt file
    else:
        data_span, meta = _split(raw, *image_span, 1)
        info = augment_pb2.Image.FromString(meta)
        if not info.shape:
            data = b""
        elif message.HasField("shared_memory"):
            data = _take(message.shared_memory, info, ring)
        else:
            data = b"" if data_span is None else memoryview(raw)[data_span[0]:data_span[1]]
        if not info.shape:
            images = np.zeros(0, np.uint8)
        elif info.dtype == "bfloat16":
            images = decode_image(augment_pb2.Image(data=bytes(data), shape=info.shape,
                                                    dtype=info.dtype))
        else:
            images = np.frombuffer(data, _DTYPES[info.dtype or "uint8"]).reshape(
                tuple(info.shape))
    return StreamedBatch(images, np.asarray(message.labels, np.int64),
                         np.asarray(message.sample_indices, np.int64), message.epoch,
                         message.position, message.batches_in_epoch, tuple(message.skipped),
                         tuple(message.normalize_mean), tuple(message.normalize_std))
