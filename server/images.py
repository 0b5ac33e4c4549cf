"""Encoded images (JPEG, PNG, WebP) to uint8 RGB, with the pixel bound checked from the header.

Every encoded image augserve decodes, from a request or from a dataset file, goes through
`decode_image_bytes`: the format is told from the first bytes (anything else is refused),
the header's width and height are read without decoding (PIL reads only the JPEG SOF, the
PNG IHDR or the WebP VP8 header), and an image that declares more than `max_pixels` pixels
raises `ImageTooLarge` before a pixel buffer is allocated: a guard against decompression
bombs. Decoding itself is OpenCV's (libjpeg-turbo, libpng, libwebp), with PIL as the
fallback for variants OpenCV rejects.

Example:
    >>> import cv2, numpy as np
    >>> _, encoded = cv2.imencode(".png", np.zeros((4, 6, 3), np.uint8))
    >>> decode_image_bytes(encoded.tobytes(), max_pixels=100, what="image").shape
    (4, 6, 3)
"""

from __future__ import annotations

import io

import numpy as np

from augserve.server.errors import InvalidArgument, ResourceExhausted

#: The default bound on the pixels an encoded image may declare (64 Mi).
MAX_IMAGE_PIXELS = 64 * 1024 * 1024

_MAGIC = (
    ("jpeg", b"\xff\xd8\xff", 0),
    ("png", b"\x89PNG\r\n\x1a\n", 0),
    ("webp", b"WEBP", 8),  # "RIFF" <u32 size> "WEBP"
)
FORMATS = tuple(name for name, _, _ in _MAGIC)
# A JPEG ends in an EOI marker; a few writers append bytes after it, so the tail is searched.
_JPEG_END, _JPEG_TAIL = b"\xff\xd9", 1024


class CorruptImage(InvalidArgument):
    """Bytes that are not a decodable JPEG, PNG or WebP image; the message says why."""


class ImageTooLarge(ResourceExhausted):
    """An image whose header declares more pixels than the limit (a decompression bomb)."""


#: What a caller that skips bad images (a stream over a folder) catches.
IMAGE_ERRORS = (CorruptImage, ImageTooLarge)


def image_format(data: bytes | memoryview) -> str | None:
    """"jpeg", "png" or "webp" from the first bytes of `data`, else None."""
    head = bytes(data[:16])
    for name, magic, offset in _MAGIC:
        if head[offset : offset + len(magic)] == magic and (name != "webp" or head[:4] == b"RIFF"):
            return name
    return None


def declared_size(data: bytes | memoryview, what: str) -> tuple[int, int]:
    """(width, height) as the header of `data` declares them; nothing is decoded.

    Raises:
        CorruptImage: not a JPEG, PNG or WebP, or a header that cannot be read.
    """
    from PIL import Image

    fmt = image_format(data)
    if fmt is None:
        raise CorruptImage(f"{what}: not a JPEG, PNG or WebP image (formats: {list(FORMATS)})")
    try:
        Image.MAX_IMAGE_PIXELS = None  # the bound is ours, checked below
        with Image.open(io.BytesIO(data), formats=[fmt.upper()]) as pil:
            width, height = pil.size
    except Exception as error:
        raise CorruptImage(f"{what}: unreadable {fmt} header ({type(error).__name__}: "
                           f"{error})") from None
    if width <= 0 or height <= 0:
        raise CorruptImage(f"{what}: zero-size image ({width}x{height})")
    return width, height


def check_pixels(width: int, height: int, max_pixels: int, what: str,
                 limit: str = "max_image_pixels") -> None:
    """Raise ImageTooLarge when width x height passes `max_pixels`; `limit` names the bound."""
    if width * height > max_pixels:
        raise ImageTooLarge(f"{what}: its header declares {width}x{height} = "
                            f"{width * height} pixels, over {limit} = {max_pixels}")


def check_encoded(data: bytes | memoryview, max_pixels: int, what: str,
                  limit: str = "max_image_pixels") -> tuple[int, int]:
    """Every check of `decode_image_bytes` that needs no decoding; returns (width, height).

    A servicer runs it at the edge, so a bad image fails its request before it is queued.

    Raises:
        CorruptImage: empty, an unsupported format, an unreadable header, a zero size or a
            truncated JPEG.
        ImageTooLarge: the header declares more than `max_pixels` pixels.
    """
    if not len(data):
        raise CorruptImage(f"{what}: empty (0 bytes)")
    width, height = declared_size(data, what)
    check_pixels(width, height, max_pixels, what, limit)
    if image_format(data) == "jpeg" and _JPEG_END not in bytes(data[-_JPEG_TAIL:]):
        # libjpeg decodes a cut-off file and fills the rest grey; refuse it instead
        raise CorruptImage(f"{what}: truncated JPEG (no end-of-image marker)")
    return width, height


def decode_image_bytes(data: bytes | memoryview, max_pixels: int, what: str,
                       limit: str = "max_image_pixels") -> np.ndarray:
    """Decode an encoded image to a C-contiguous uint8 RGB [H, W, 3] array.

    Args:
        data: the encoded bytes.
        max_pixels: the most pixels its header may declare.
        what: names the image in error messages (a path, or "input 'image' row 3").
        limit: names the bound in the ImageTooLarge message (a config field and flag).

    Raises:
        CorruptImage: empty, an unsupported format, or bytes that do not decode.
        ImageTooLarge: the header declares more than `max_pixels` pixels.
    """
    width, height = check_encoded(data, max_pixels, what, limit)
    return decode_checked(data, width, height, what)


def decode_checked(data: bytes | memoryview, width: int, height: int, what: str) -> np.ndarray:
    """Decode bytes that `check_encoded` passed as a `width` x `height` image (uint8 RGB).

    The header is not read again: a replica decodes what the servicer checked at the edge.

    Raises:
        CorruptImage: the bytes do not decode to that size.
    """
    import cv2

    encoded = np.frombuffer(data, dtype=np.uint8)
    image = cv2.imdecode(encoded, cv2.IMREAD_COLOR)
    if image is not None and image.shape[:2] == (height, width):
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    try:  # variants OpenCV rejects (or truncated files it half-decodes)
        from PIL import Image

        with Image.open(io.BytesIO(data)) as pil:
            pil.load()
            rgb = np.asarray(pil.convert("RGB"))
    except Exception as error:
        raise CorruptImage(f"{what}: cannot decode ({type(error).__name__}: {error})") from None
    return np.ascontiguousarray(rgb)


__all__ = [
    "FORMATS",
    "IMAGE_ERRORS",
    "MAX_IMAGE_PIXELS",
    "CorruptImage",
    "ImageTooLarge",
    "check_encoded",
    "check_pixels",
    "declared_size",
    "decode_checked",
    "decode_image_bytes",
    "image_format",
]
