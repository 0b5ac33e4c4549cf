"""KServe v2 tensor datatypes and their numpy equivalents.

One table serves both sides of the wire: the server decodes requests with it and
the clients encode them. BF16 has no numpy dtype: its raw bytes travel as
little-endian uint16 words (the upper half of an IEEE float32), which torch
views as `torch.bfloat16` without a copy. BYTES tensors travel in Triton's raw
form: every element is a 4-byte little-endian length followed by its bytes.

Example:
    >>> numpy_dtype("FP32")
    dtype('float32')
    >>> datatype_of(np.zeros(3, dtype=np.uint8))
    'UINT8'

"""

from __future__ import annotations

import math
import struct

import numpy as np


class WireFormatError(ValueError):
    """Raw tensor contents that do not match their shape and datatype."""


_NUMPY_BY_DATATYPE: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BF16": np.dtype("<u2"),
    "BYTES": np.dtype(np.object_),
}

DATATYPES: frozenset[str] = frozenset(_NUMPY_BY_DATATYPE)

# Which InferTensorContents field carries each datatype when typed contents are used.
# FP16 and BF16 have none: they travel only as raw contents.
CONTENTS_FIELD: dict[str, str] = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def numpy_dtype(datatype: str) -> np.dtype:
    """The numpy dtype that holds `datatype`'s elements (uint16 words for BF16).

    Raises:
        ValueError: `datatype` is not a KServe v2 datatype.

    """
    try:
        return _NUMPY_BY_DATATYPE[datatype]
    except KeyError:
        raise ValueError(
            f"unknown datatype {datatype!r}; expected one of {sorted(DATATYPES)}"
        ) from None


def datatype_of(array: np.ndarray) -> str:
    """The KServe v2 datatype name of a numpy array (object or bytes arrays are BYTES)."""
    if array.dtype.kind in "OSU":
        return "BYTES"
    for name, dtype in _NUMPY_BY_DATATYPE.items():
        if name != "BF16" and dtype == array.dtype.newbyteorder("<"):
            return name
    raise ValueError(f"numpy dtype {array.dtype} has no KServe v2 datatype")


def element_size(datatype: str) -> int:
    """Bytes per element in raw form; 0 for BYTES, whose elements vary in length."""
    return 0 if datatype == "BYTES" else numpy_dtype(datatype).itemsize


def serialize_bytes_tensor(array: np.ndarray) -> bytes:
    """Raw form of a BYTES tensor: each element as a uint32 length then its bytes."""
    parts = []
    for item in array.reshape(-1):
        data = item.encode() if isinstance(item, str) else bytes(item)
        parts.append(struct.pack("<I", len(data)))
        parts.append(data)
    return b"".join(parts)


def deserialize_bytes_tensor(raw: bytes | memoryview, count: int) -> np.ndarray:
    """Parse `count` length-prefixed elements from raw BYTES contents.

    Raises:
        WireFormatError: the buffer holds fewer or more elements than `count`.

    """
    view = memoryview(raw)
    items = []
    offset = 0
    while offset < len(view):
        if offset + 4 > len(view):
            raise WireFormatError("BYTES contents end inside an element's length prefix")
        (length,) = struct.unpack_from("<I", view, offset)
        offset += 4
        if offset + length > len(view):
            raise WireFormatError("BYTES contents end inside an element")
        items.append(bytes(view[offset : offset + length]))
        offset += length
    if len(items) != count:
        raise WireFormatError(f"BYTES contents hold {len(items)} elements, the shape needs {count}")
    result = np.empty(count, dtype=np.object_)
    result[:] = items
    return result


def to_raw(array: np.ndarray) -> bytes:
    """Raw little-endian bytes of `array` in row-major order."""
    if array.dtype.kind in "OSU":
        return serialize_bytes_tensor(array)
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


def from_raw(raw: bytes | memoryview, datatype: str, shape: tuple[int, ...]) -> np.ndarray:
    """A numpy array over raw contents without copying (read-only view; BYTES is parsed).

    Raises:
        WireFormatError: the byte length does not match `shape` and `datatype`, or BYTES
            contents do not parse into `shape`'s count of elements.

    """
    count = math.prod(shape)
    if datatype == "BYTES":
        return deserialize_bytes_tensor(raw, count).reshape(shape)
    dtype = numpy_dtype(datatype)
    expected = count * dtype.itemsize
    if len(raw) != expected:
        raise WireFormatError(
            f"raw contents hold {len(raw)} bytes; shape {list(shape)} of {datatype} "
            f"needs {expected}"
        )
    return np.frombuffer(raw, dtype=dtype).reshape(shape)
