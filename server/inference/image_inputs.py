"""A request's images, checked at the edge and packed into two arrays for the replica.

Batches cross to a replica as numpy arrays that the batcher concatenates on dim 0
(`inference.channel` carries nothing else), so a request's images travel as:

- a record, int64 [n, 5], one row per image: (payload bytes, height, width, channels,
  views), channels 0 for an encoded image and 3 for raw HWC pixels, views the number of
  TTA views the row runs through;
- a payload, uint8 [total bytes]: the encoded files (or the pixels) one after another.

Requests of different image sizes concatenate like any other, so they share a batch; the
replica walks the record to find each image (`unpack_images`).

Every check that needs no decoding runs here, before the request is queued: the format
from the magic bytes, the header, the pixel bound, truncated JPEGs, zero sizes, and the
request's `tta` / `tta_views` parameters. A failure names the input and the row.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from augserve.server.errors import InvalidArgument
from augserve.server.images import check_encoded, check_pixels
from augserve.server.inference.preprocess_config import PreprocessSettings
from augserve.server.inference.settings import InferenceSettings
from augserve.server.options import flag_of

NBYTES, HEIGHT, WIDTH, CHANNELS, VIEWS = range(5)
RECORD_WIDTH = 5
ENCODED = 0  # the channels of a row that holds an encoded file
_KINDS = {"bool_param": "a bool (bool_param)", "int64_param": "an int64 (int64_param)"}


def _limit_name(limits: InferenceSettings) -> str:
    field = next(f for f in dataclasses.fields(limits) if f.name == "max_image_pixels")
    return f"max_image_pixels ({flag_of(field)})"


def _parameter(parameters: Mapping[str, Any], name: str, kind: str) -> Any:
    """The request parameter `name` if it is of `kind` (bool_param, ...), else None."""
    if name not in parameters:
        return None
    value = parameters[name]
    if value.WhichOneof("parameter_choice") != kind:
        raise InvalidArgument(f"parameter {name!r} must be {_KINDS[kind]}, got "
                              f"{value.WhichOneof('parameter_choice')}")
    return getattr(value, kind)


def requested_views(parameters: Mapping[str, Any], preprocess: PreprocessSettings) -> int:
    """How many views (the first k of `[tta]`) a request's rows run through.

    `tta` (bool): false runs the identity view only. `tta_views` (int64): the first k
    views, 1 <= k <= the configured views. Without either, every configured view.

    Raises:
        InvalidArgument: a parameter of the wrong type or out of range, or the two disagree.
    """
    total = len(preprocess.views)
    enabled = _parameter(parameters, "tta", "bool_param")
    count = _parameter(parameters, "tta_views", "int64_param")
    if count is None:
        return 1 if enabled is False else total
    if not 1 <= count <= total:
        raise InvalidArgument(f"parameter 'tta_views' must lie in 1..{total} (the model's "
                              f"views), got {count}")
    if enabled is False and count != 1:
        raise InvalidArgument(f"parameters 'tta' = false and 'tta_views' = {count} disagree")
    return count


def pack_images(array: np.ndarray, preprocess: PreprocessSettings,
                parameters: Mapping[str, Any], limits: InferenceSettings) -> list[np.ndarray]:
    """Check a request's images and pack them as [record, payload] (see the module doc).

    Args:
        array: the public input: BYTES [n, 1] (object array of bytes) or UINT8 [n, H, W, 3].
        preprocess: the model's `[preprocess]`.
        parameters: the request's parameters (`tta`, `tta_views`).
        limits: the server's limits (`max_image_pixels`).

    Raises:
        InvalidArgument: a corrupt, truncated, unsupported or zero-size image; bad parameters.
        ResourceExhausted: an image whose header declares more than `max_image_pixels`.
    """
    views = requested_views(parameters, preprocess)
    name, limit = preprocess.input.name, _limit_name(limits)
    rows = array.shape[0]
    record = np.empty((rows, RECORD_WIDTH), np.int64)
    record[:, VIEWS] = views
    if preprocess.input.datatype == "UINT8":
        _, height, width, channels = array.shape
        if height < 1 or width < 1:
            raise InvalidArgument(f"input {name!r}: zero-size images ({height}x{width})")
        check_pixels(width, height, limits.max_image_pixels, f"input {name!r}", limit)
        record[:, NBYTES] = height * width * channels
        record[:, HEIGHT], record[:, WIDTH], record[:, CHANNELS] = height, width, channels
        return [record, array.reshape(-1)]
    files = []
    for row, data in enumerate(array.reshape(-1)):
        width, height = check_encoded(data, limits.max_image_pixels,
                                      f"input {name!r} row {row}", limit)
        record[row, :VIEWS] = (len(data), height, width, ENCODED)
        files.append(data)
    return [record, np.frombuffer(b"".join(files), np.uint8)]


def unpack_images(record: np.ndarray, payload: np.ndarray
                  ) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(row, its record, its payload bytes) for every row of a packed batch."""
    offset = 0
    for row in range(record.shape[0]):
        size = int(record[row, NBYTES])
        yield row, record[row], payload[offset : offset + size]
        offset += size
    if offset != payload.shape[0]:
        raise ValueError(f"packed images: the record counts {offset} bytes, the payload "
                         f"holds {payload.shape[0]}")
