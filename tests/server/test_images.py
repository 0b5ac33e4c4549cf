"""Encoded images to RGB: formats, the header's pixel bound before decoding, bad bytes refused."""

from __future__ import annotations

import io

import cv2
import grpc
import numpy as np
import pytest
from PIL import Image

from augserve.server.images import (
    CorruptImage,
    ImageTooLarge,
    declared_size,
    decode_image_bytes,
    image_format,
)

from ..bombs import jpeg_declaring, png_declaring


def photo(height: int = 48, width: int = 64) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def encoded(image: np.ndarray, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=fmt, **options)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_lossless_formats_decode_to_the_same_rgb_pixels(fmt):
    image = photo()
    data = encoded(image, fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    assert image_format(data) == fmt.lower()
    np.testing.assert_array_equal(decode_image_bytes(data, 10_000, "x"), image)


def test_jpeg_decodes_to_rgb_close_to_the_source():
    image = np.full((40, 30, 3), (200, 30, 90), np.uint8)
    out = decode_image_bytes(encoded(image, "JPEG", quality=95), 10_000, "x")
    assert out.shape == (40, 30, 3) and out.flags.c_contiguous
    assert np.abs(out.astype(int) - image).max() <= 4  # RGB order, not BGR


def test_declared_size_reads_the_header_only():
    assert declared_size(encoded(photo(10, 20), "PNG"), "x") == (20, 10)


@pytest.mark.parametrize("make", [png_declaring, jpeg_declaring])
def test_a_pixel_bomb_is_refused_from_its_header_before_decoding(monkeypatch, make):
    def no_decoding(*args):
        raise AssertionError("decoded")

    monkeypatch.setattr(cv2, "imdecode", no_decoding)
    with pytest.raises(ImageTooLarge, match="50000x50000 = 2500000000 pixels, over "
                                            "max_image_pixels = 1000") as caught:
        decode_image_bytes(make(50_000, 50_000), 1000, "input 'image' row 0")
    assert caught.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "input 'image' row 0" in str(caught.value)


@pytest.mark.parametrize(("data", "reason"), [
    (b"", "empty"),
    (b"GIF89a" + b"\0" * 32, "not a JPEG, PNG or WebP"),
    (b"\xff\xd8\xff" + b"\0" * 40, "unreadable jpeg header"),
])
def test_bad_bytes_are_refused_with_the_reason(data, reason):
    with pytest.raises(CorruptImage, match=reason) as caught:
        decode_image_bytes(data, 1000, "x")
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_a_truncated_image_is_refused(fmt):
    data = encoded(photo(), fmt)
    with pytest.raises(CorruptImage):
        decode_image_bytes(data[: len(data) * 2 // 3], 10_000, "x")
