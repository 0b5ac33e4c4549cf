"""Fast JPEG decode of one crop: DCT-domain scaling, then one resampling of the crop.

A training pipeline that starts with a box op (RandomResizedCrop, a crop, a resize) keeps
one box of each image and resizes it to a fixed size. A folder of JPEGs therefore need not
be decoded whole at full size:

1. `read_encoded` reads the file and its header only (simplejpeg's `decode_jpeg_header`,
   libjpeg-turbo's `jpeg_read_header`): the size the box is sampled from, the colour space,
   and the checks of `augserve.server.images` (pixel bound, truncation).
2. `reduction` picks the largest DCT scale 1/2, 1/4 or 1/8 at which the box, scaled,
   still covers the output size (no upsampling is ever added by the scaling).
3. `decode_box` has libjpeg-turbo decode the image at that scale (its IDCT then works on
   4x4, 2x2 or 1x1 blocks instead of 8x8, and upsampling and colour conversion run on the
   smaller image) down to the box's last row only, then resamples the box, mapped to the
   scaled image in continuous coordinates, to the output size with one bilinear
   `cv2.warpAffine` (at scale 1: `crop_resize`, as the full-decode path).

The rows: simplejpeg exposes neither `jpeg_skip_scanlines` nor `jpeg_crop_scanline`, so
for a sequential JPEG (SOF0 / SOF1, whose scan holds the MCU rows top to bottom) the copy
handed to the decoder declares a height that ends at the box's last row, rounded up to a
whole MCU row. libjpeg-turbo then stops after those rows and skips the rest of the entropy
data (it warns about the "extraneous bytes", hence `strict=False` there). With merged
(box) chroma upsampling no row depends on the rows below it, so the rows it gives are
those of a whole decode, bit for bit. Rows above the box and the columns beside it are
still decoded. Progressive JPEGs (each scan covers the whole image) are decoded whole.

At a reduced scale the DCT scaling averages each 2x2 (4x4, 8x8) block where full decode +
bilinear resize (no antialias) samples it: the result is smoother, within the tolerance
stated in docs/streaming.md (the tests check it).

Everything else (PNG, WebP, CMYK / YCCK JPEGs, anything simplejpeg refuses) is decoded
whole by `augserve.server.images` and cut with `crop_resize`: the generic path.
"""

from __future__ import annotations

import dataclasses
import math
import struct

import cv2
import numpy as np

from augserve.kernels.augment import crop_resize
from augserve.server.images import (
    CorruptImage,
    check_encoded,
    check_pixels,
    decode_checked,
    image_format,
)

#: DCT scale denominators libjpeg-turbo decodes fast (SIMD IDCTs); 3/8, 5/8, 7/8 ... are slower
#: than a full decode here, so they are not used.
FACTORS = (8, 4, 2, 1)
#: libjpeg-turbo's fast integer IDCT and its merged (box) chroma upsampling: ~13% faster on
#: 4:2:0 files here, for the small differences the tolerance in docs/streaming.md allows.
FAST_DCT = FAST_UPSAMPLE = True
# A JPEG ends in an EOI marker; a few writers append bytes after it (as images.py checks).
_JPEG_END, _JPEG_TAIL = b"\xff\xd9", 1024
# Colour spaces libjpeg-turbo converts to RGB itself; CMYK / YCCK go the generic way.
_FAST_SPACES = ("YCbCr", "Gray", "RGB")
# Sequential Huffman frames (baseline, extended): one scan, MCU rows top to bottom.
_SEQUENTIAL, _OTHER_FRAMES = (0xC0, 0xC1), frozenset(range(0xC2, 0xD0)) - {0xC4, 0xC8, 0xCC}
_NO_LENGTH = frozenset((0x01, *range(0xD0, 0xDA)))  # TEM, RSTn, SOI, EOI: no length field
_MCU_ROWS = 16  # the tallest MCU (4:2:0 and 4:4:0)


@dataclasses.dataclass(frozen=True)
class Encoded:
    """One encoded image whose header passed the checks.

    Attributes:
        data: the file's bytes.
        width: declared width in pixels.
        height: declared height in pixels.
        fast: whether `decode_box` may take the scaled JPEG path (a JPEG in a colour space
            libjpeg-turbo turns into RGB itself).
        what: names the image in error messages (its path).
        height_at: the byte offset of the frame's height field in a sequential JPEG
            (what `decode_box` lowers to stop after the box's rows), else -1.
    """

    data: bytes
    width: int
    height: int
    fast: bool
    what: str
    height_at: int = -1


def height_field(data: bytes) -> int:
    """The offset of the height in a sequential JPEG's SOF0 / SOF1 header, else -1."""
    at = 2
    while at + 4 <= len(data) and data[at] == 0xFF:
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in _SEQUENTIAL:
            return at + 5  # FF Cn, length (2), precision (1), then the height
        if marker in _OTHER_FRAMES or marker in _NO_LENGTH or marker == 0xDA:
            return -1  # progressive, lossless, arithmetic; a marker out of place; a scan
        at += 2 + struct.unpack_from(">H", data, at + 2)[0]
    return -1


def read_encoded(data: bytes, max_pixels: int, what: str) -> Encoded:
    """Check the header of `data` (nothing decoded) and say which decode path it may take.

    Raises:
        CorruptImage: empty, an unsupported format, an unreadable header, a zero size or a
            truncated JPEG.
        ImageTooLarge: the header declares more than `max_pixels` pixels.
    """
    if image_format(data) != "jpeg":
        width, height = check_encoded(data, max_pixels, what)
        return Encoded(data, width, height, False, what)
    import simplejpeg

    try:
        height, width, space, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:  # a header libjpeg-turbo rejects: let PIL read it and say why
        width, height = check_encoded(data, max_pixels, what)
        return Encoded(data, width, height, False, what)
    if width <= 0 or height <= 0:
        raise CorruptImage(f"{what}: zero-size image ({width}x{height})")
    check_pixels(width, height, max_pixels, what)
    if _JPEG_END not in data[-_JPEG_TAIL:]:
        raise CorruptImage(f"{what}: truncated JPEG (no end-of-image marker)")
    fast = space in _FAST_SPACES
    at = height_field(data) if fast else -1
    if at >= 0 and (at + 2 > len(data) or struct.unpack_from(">H", data, at)[0] != height):
        at = -1  # not the frame libjpeg-turbo read: decode to the full height
    return Encoded(data, width, height, fast, what, at)


def reduction(box: tuple[int, int, int, int], out_hw: tuple[int, int]) -> int:
    """The largest DCT scale denominator (8, 4, 2 or 1) at which `box` still covers `out_hw`."""
    _, _, w, h = box
    out_h, out_w = out_hw
    for factor in FACTORS:
        if w >= out_w * factor and h >= out_h * factor:
            return factor
    return 1


def _inside(box: tuple[int, int, int, int], width: int, height: int) -> bool:
    x0, y0, w, h = box
    return x0 >= 0 and y0 >= 0 and x0 + w <= width and y0 + h <= height


def decode_box(encoded: Encoded, box: tuple[int, int, int, int], out_hw: tuple[int, int],
               fill: tuple[float, ...] = (0.0, 0.0, 0.0), out: np.ndarray | None = None
               ) -> np.ndarray:
    """`box` (x0, y0, w, h in full-size pixels) of `encoded`, resized to `out_hw`, uint8 RGB.

    A box inside a fast JPEG takes the scaled path (module docstring); anything else is
    decoded whole and cut with `crop_resize` (`fill` where the box leaves the image).
    The choice depends only on the bytes and the box, so a sample comes out the same on
    every worker, batch and retry.

    Raises:
        CorruptImage: the bytes do not decode.
    """
    box = tuple(int(v) for v in box)  # type: ignore[assignment]
    if encoded.fast and _inside(box, encoded.width, encoded.height):
        factor = reduction(box, out_hw)
        image = _scaled(encoded, factor, box[1] + box[3])
        if image is not None:
            return _resample(image, factor, box, out_hw, out)
    full = decode_checked(encoded.data, encoded.width, encoded.height, encoded.what)
    return crop_resize(full, box, out_hw, fill, out=out)


def _scaled(encoded: Encoded, factor: int, rows: int) -> np.ndarray | None:
    """Rows 0..`rows` (or more) of the image decoded at 1/`factor`.

    None where simplejpeg refuses it: the generic path decodes it instead.
    """
    import simplejpeg

    data: bytes | bytearray = encoded.data
    strict, height = True, encoded.height
    rows = min(height, -(-rows // _MCU_ROWS) * _MCU_ROWS)
    if encoded.height_at >= 0 and rows < height:
        data = bytearray(data)
        struct.pack_into(">H", data, encoded.height_at, rows)
        strict, height = False, rows
    try:
        return simplejpeg.decode_jpeg(
            data, colorspace="RGB", fastdct=FAST_DCT, fastupsample=FAST_UPSAMPLE,
            min_height=math.ceil(height / factor), min_width=math.ceil(encoded.width / factor),
            strict=strict)
    except ValueError:  # corrupt data (strict: libjpeg's warnings too), odd variants
        return None


def _resample(image: np.ndarray, factor: int, box: tuple[int, int, int, int],
              out_hw: tuple[int, int], out: np.ndarray | None) -> np.ndarray:
    if factor == 1:
        return crop_resize(image, box, out_hw, out=out)
    # Scaled pixel k covers full-size [k f, (k + 1) f): output pixel centre j + 0.5 maps to
    # full-size x0 + (j + 0.5) w / out_w, to scaled x / f, to the index x / f - 0.5.
    x0, y0, w, h = box
    out_h, out_w = out_hw
    inverse = np.array([[w / out_w / factor, 0.0, (x0 + 0.5 * w / out_w) / factor - 0.5],
                        [0.0, h / out_h / factor, (y0 + 0.5 * h / out_h) / factor - 0.5]])
    return cv2.warpAffine(image, inverse, (out_w, out_h), dst=out,
                          flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)


__all__ = ["FACTORS", "Encoded", "decode_box", "height_field", "read_encoded", "reduction"]
