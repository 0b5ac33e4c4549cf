"""Geometric resampling of uint8 (or float32) HWC images with OpenCV, one pass each.

Coordinates are continuous: pixel (i, j) covers [j, j+1) x [i, i+1) and its centre
is (j + 0.5, i + 0.5). Bilinear sampling uses half-pixel centres, as
`torch.nn.functional.interpolate(align_corners=False)` and `cv2.resize` do.
"""

from __future__ import annotations

import cv2
import numpy as np

_INTERP = {"bilinear": cv2.INTER_LINEAR, "nearest": cv2.INTER_NEAREST_EXACT}
_WARP_INTERP = {"bilinear": cv2.INTER_LINEAR, "nearest": cv2.INTER_NEAREST}


def _fill_value(fill: float | tuple[float, ...], channels: int) -> tuple[float, ...]:
    values = (fill,) * channels if isinstance(fill, int | float) else tuple(fill)
    return tuple(float(v) for v in values[:channels]) + (0.0,) * (4 - min(channels, 4))


def crop_resize(
    image: np.ndarray,
    box: tuple[int, int, int, int],
    out_hw: tuple[int, int],
    fill: float | tuple[float, ...] = 0,
    interpolation: str = "bilinear",
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Crop an integer box and resize it to `out_hw` in one resampling pass.

    Args:
        image: HWC (or HW) array, uint8 or float32.
        box: (x0, y0, w, h) in pixels; parts outside the image read `fill`.
        out_hw: output (height, width).
        fill: value (or one value per channel) for pixels outside the image.
        interpolation: "bilinear" (half-pixel centres, no antialias) or "nearest".
        out: optional destination of the right shape and dtype (reused buffers spare the
            page faults of fresh allocations).

    Returns:
        The (out_h, out_w[, C]) array, same dtype as `image`.

    """
    x0, y0, w, h = (int(v) for v in box)
    height, width = image.shape[:2]
    xa, ya, xb, yb = max(x0, 0), max(y0, 0), min(x0 + w, width), min(y0 + h, height)
    crop = image[ya:yb, xa:xb]
    if (xa, ya, xb, yb) != (x0, y0, x0 + w, y0 + h):
        channels = 1 if image.ndim == 2 else image.shape[2]
        if xb <= xa or yb <= ya:
            shape = (h, w) if image.ndim == 2 else (h, w, channels)
            crop = np.empty(shape, image.dtype)
            crop[...] = np.asarray(_fill_value(fill, channels)[:channels], dtype=image.dtype)
        else:
            crop = cv2.copyMakeBorder(
                crop, ya - y0, y0 + h - yb, xa - x0, x0 + w - xb,
                cv2.BORDER_CONSTANT, value=_fill_value(fill, channels),
            )
    if (h, w) == tuple(out_hw):
        if out is None:
            return np.ascontiguousarray(crop)
        np.copyto(out, crop)
        return out
    size = (int(out_hw[1]), int(out_hw[0]))
    result = cv2.resize(crop, size, dst=out, interpolation=_INTERP[interpolation])
    return result if result.ndim == image.ndim else result[..., None]


def warp_affine(
    image: np.ndarray,
    forward: np.ndarray,
    out_hw: tuple[int, int],
    fill: float | tuple[float, ...] = 0,
    interpolation: str = "bilinear",
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Warp by a forward affine map given in continuous coordinates.

    Args:
        image: HWC (or HW) array, uint8 or float32.
        forward: 3x3 (or 2x3) map from source to destination continuous coordinates.
        out_hw: output (height, width).
        fill: value (or one per channel) where the map reads outside the image.
        interpolation: "bilinear" or "nearest".
        out: optional destination of the right shape and dtype.

    Returns:
        The warped (out_h, out_w[, C]) array, same dtype as `image`.

    """
    forward3 = np.eye(3)
    forward3[:2] = np.asarray(forward, dtype=np.float64)[:2]
    # cv2 works on pixel indices: index = continuous - 0.5; it wants dst -> src.
    shift = np.array([[1.0, 0, 0.5], [0, 1.0, 0.5], [0, 0, 1.0]])
    unshift = np.array([[1.0, 0, -0.5], [0, 1.0, -0.5], [0, 0, 1.0]])
    inverse = unshift @ np.linalg.inv(forward3) @ shift
    channels = 1 if image.ndim == 2 else image.shape[2]
    result = cv2.warpAffine(
        image, inverse[:2], (int(out_hw[1]), int(out_hw[0])), dst=out,
        flags=_WARP_INTERP[interpolation] | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT, borderValue=_fill_value(fill, channels),
    )
    return result if result.ndim == image.ndim else result[..., None]


def flip(image: np.ndarray, horizontal: bool, out: np.ndarray | None = None) -> np.ndarray:
    """Mirror an HWC image left-right (`horizontal`) or top-bottom (into `out` if given)."""
    result = cv2.flip(image, 1 if horizontal else 0, dst=out)
    return result if result.ndim == image.ndim else result[..., None]


def gaussian_blur(
    image: np.ndarray, kernel_size: int, sigma: float, out: np.ndarray | None = None
) -> np.ndarray:
    """Gaussian blur, odd square kernel, reflect-101 borders (kornia's 'reflect')."""
    result = cv2.GaussianBlur(image, (kernel_size, kernel_size), dst=out, sigmaX=sigma,
                              sigmaY=sigma, borderType=cv2.BORDER_REFLECT_101)
    return result if result.ndim == image.ndim else result[..., None]
