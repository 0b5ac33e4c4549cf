"""Image files that declare huge sizes in their headers and hold no pixels (decompression bombs)."""

from __future__ import annotations

import struct
import zlib


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose IHDR declares width x height (no pixel data follows)."""
    ihdr = b"IHDR" + struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + ihdr
            + struct.pack(">I", zlib.crc32(ihdr)) + struct.pack(">I", 0) + b"IEND"
            + struct.pack(">I", zlib.crc32(b"IEND")))


def jpeg_declaring(width: int, height: int) -> bytes:
    """A tiny JPEG whose SOF0 declares width x height (no scan follows)."""
    sof = struct.pack(">BHHB", 8, height, width, 3) + b"".join(
        bytes([i, 0x11, 0]) for i in (1, 2, 3))
    return (b"\xff\xd8" + b"\xff\xc0" + struct.pack(">H", len(sof) + 2) + sof
            + b"\xff\xda" + struct.pack(">H", 12) + bytes(10) + b"\xff\xd9")
