"""The fused CPU routines against their plain-torch references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage import data

from augserve.kernels.augment import apply_colour, crop_resize, flip, gaussian_blur, warp_affine
from augserve.kernels.augment.reference import (
    colour_reference,
    crop_resize_reference,
    gaussian_blur_reference,
    warp_affine_reference,
)


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return np.ascontiguousarray(data.astronaut()[::2, ::2][:200, :230])


def chw(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a).permute(2, 0, 1).to(torch.float64)


@pytest.mark.parametrize(
    ("box", "out"),
    [((10, 20, 120, 90), (64, 80)), ((0, 0, 230, 200), (300, 250)), ((-8, -5, 60, 70), (60, 70)),
     ((200, 150, 50, 80), (33, 47))],
)
def test_crop_resize_matches_reference(photo, box, out):
    got = crop_resize(photo, box, out, fill=(10, 20, 30))
    want = crop_resize_reference(chw(photo), box, out, fill=(10, 20, 30))
    diff = (chw(got) - want).abs()
    assert got.shape == (*out, 3)
    assert diff.max() <= 1.0  # cv2's 11-bit fixed-point weights, then rounding to uint8


def test_warp_affine_matches_reference(photo):
    angle = np.deg2rad(17.0)
    c, s = np.cos(angle), np.sin(angle)
    centre = np.array([115.0, 100.0])
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])
    to = np.array([[1, 0, centre[0] + 3.25], [0, 1, centre[1] - 7.5], [0, 0, 1.0]])
    back = np.array([[1, 0, -centre[0]], [0, 1, -centre[1]], [0, 0, 1.0]])
    forward = to @ np.diag([1.2, 0.9, 1.0]) @ rot @ back
    got = warp_affine(photo, forward, (200, 230), fill=(0, 128, 255))
    want = warp_affine_reference(chw(photo), torch.from_numpy(forward), (200, 230), (0, 128, 255))
    diff = (chw(got) - want).abs()
    # cv2 quantises source positions to 1/32 pixel: sharp edges move by up to 1/64 px.
    assert diff.mean() < 0.5
    assert torch.quantile(diff.flatten(), 0.999) <= 6.0


def test_flip_is_exact(photo):
    np.testing.assert_array_equal(flip(photo, True), photo[:, ::-1])
    np.testing.assert_array_equal(flip(photo, False), photo[::-1])


@pytest.mark.parametrize("out_dtype", [np.uint8, np.float32, np.float16])
@pytest.mark.parametrize("channels_first", [True, False])
def test_apply_colour_matches_reference(photo, out_dtype, channels_first):
    rng = np.random.default_rng(0)
    matrix = np.concatenate([rng.uniform(-0.4, 0.8, (3, 3)), rng.uniform(-20, 40, (3, 1))], 1)
    shape = (3, *photo.shape[:2]) if channels_first else photo.shape
    out = np.empty(shape, out_dtype)
    apply_colour(photo, matrix, out, channels_first)
    want = colour_reference(chw(photo), torch.from_numpy(matrix))
    if out_dtype == np.uint8:
        want = want.round().clamp(0, 255)
    got = torch.from_numpy(out.astype(np.float64))
    got = got if channels_first else got.permute(2, 0, 1)
    tolerance = {np.uint8: 1.0, np.float32: 1e-3, np.float16: 0.25}[out_dtype]
    assert (got - want).abs().max() <= tolerance


@pytest.mark.parametrize("out_dtype", [np.uint8, np.float32, np.float16])
@pytest.mark.parametrize("channels_first", [True, False])
def test_apply_colour_from_float_input(photo, out_dtype, channels_first):
    image = photo.astype(np.float32) / 255
    matrix = np.array([[200.0, 30, 0, 5], [0, 250, 0, -3], [10, 0, 240, 0]])
    shape = (3, *photo.shape[:2]) if channels_first else photo.shape
    out = np.full(shape, 7, out_dtype)
    apply_colour(image, matrix, out, channels_first)
    want = colour_reference(chw(image), torch.from_numpy(matrix))
    if out_dtype == np.uint8:
        want = want.round().clamp(0, 255)
    got = torch.from_numpy(out.astype(np.float64))
    got = got if channels_first else got.permute(2, 0, 1)
    tolerance = {np.uint8: 1.0, np.float32: 1e-3, np.float16: 0.25}[out_dtype]
    assert (got - want).abs().max() <= tolerance


def test_gaussian_blur_matches_reference(photo):
    got = gaussian_blur(photo, 7, 1.7)
    want = gaussian_blur_reference(chw(photo), 7, 1.7)
    assert (chw(got) - want).abs().max() <= 1.0


def test_out_buffers_give_the_same_bytes(photo):
    box_out = np.empty((64, 80, 3), np.uint8)
    got = crop_resize(photo, (10, 20, 120, 90), (64, 80), out=box_out)
    assert got is box_out
    np.testing.assert_array_equal(got, crop_resize(photo, (10, 20, 120, 90), (64, 80)))
    forward = np.array([[0.9, 0.1, 5.0], [-0.1, 0.9, 3.0], [0, 0, 1.0]])
    warp_out = np.empty_like(photo)
    np.testing.assert_array_equal(warp_affine(photo, forward, photo.shape[:2], out=warp_out),
                                  warp_affine(photo, forward, photo.shape[:2]))
    flip_out = np.empty_like(photo)
    np.testing.assert_array_equal(flip(photo, True, out=flip_out), photo[:, ::-1])
    blur_out = np.empty_like(photo)
    np.testing.assert_array_equal(gaussian_blur(photo, 5, 1.2, out=blur_out),
                                  gaussian_blur(photo, 5, 1.2))


def test_masks_resample_nearest(photo):
    mask = (photo[..., 0] > 128).astype(np.uint8) * 7
    resized = crop_resize(mask, (5, 5, 100, 80), (50, 40), interpolation="nearest")
    assert resized.shape == (50, 40) and set(np.unique(resized)) <= {0, 7}
    forward = np.array([[0.8, 0.3, 10.0], [-0.3, 0.8, 30.0], [0, 0, 1.0]])
    warped = warp_affine(mask, forward, mask.shape, interpolation="nearest")
    assert warped.shape == mask.shape and set(np.unique(warped)) <= {0, 7}
