"""One affine colour transform per image, written straight into the output buffer.

Every colour op of the pipeline (brightness, contrast, saturation, hue in YIQ,
grayscale, normalize) is affine in RGB, so a run of them folds into one 3x4 matrix
`M`: `out = M[:, :3] @ rgb + M[:, 3]`. The matrix here works on the image's raw
values (0..255 for uint8); the caller folds the 1/255 scale in.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np


def mean_rgb(image: np.ndarray) -> np.ndarray:
    """Mean of each channel of an HWC image, float64 of shape (C,), in raw units."""
    return np.asarray(cv2.mean(image)[: image.shape[2]], dtype=np.float64)


def apply_colour(
    image: np.ndarray,
    matrix: np.ndarray,
    out: np.ndarray,
    channels_first: bool,
    scratch: dict[Any, np.ndarray] | None = None,
) -> None:
    """Apply a 3x4 colour matrix to an HWC image and write the result into `out`.

    OpenCV writes into a `dst` only when its type fits and silently allocates
    otherwise, so every branch below hands it a buffer of the type it produces.

    Args:
        image: (H, W, 3) uint8 or float32.
        matrix: (3, 4) float; raw input values in, output values out.
        out: destination, (3, H, W) if `channels_first` else (H, W, 3); uint8
            (rounded, saturated), float32 or float16. Written once.
        channels_first: whether `out` is CHW.
        scratch: optional dict of reusable float32 buffers (keyed by shape) so that a
            loop over a batch allocates nothing.

    Returns:
        None; `out` holds the result.

    """
    height, width = image.shape[:2]
    scratch = {} if scratch is None else scratch

    def buffer(name: str, dtype: type) -> np.ndarray:
        key = (name, height, width)
        array = scratch.get(key)  # type: ignore[call-overload]
        if array is None:
            array = scratch[key] = np.empty((height, width, 3), dtype)  # type: ignore[index]
        return array

    if out.dtype == np.uint8 and image.dtype != np.uint8:
        # float in, uint8 out (rare): compute in float32, then round and saturate
        target = buffer("f32", np.float32)
        cv2.transform(image, matrix.astype(np.float32), dst=target)
        rounded = np.clip(np.rint(target), 0, 255)
        np.copyto(out, rounded.transpose(2, 0, 1) if channels_first else rounded,
                  casting="unsafe")
        return
    if out.dtype == np.uint8:
        source, m = image, matrix.astype(np.float64)
        direct = not channels_first
        target = out if direct else buffer("u8", np.uint8)
        cv2.transform(source, m, dst=target)
    else:
        if image.dtype == np.float32:
            source = image
        else:
            source = buffer("in", np.float32)
            np.copyto(source, image, casting="unsafe")
        m32 = matrix.astype(np.float32)
        if channels_first and out.dtype == np.float32:
            # one single-channel transform per plane, straight into CHW: no HWC
            # intermediate and no split (about 40% less time than transform + split)
            for c in range(3):
                cv2.transform(source, m32[c:c + 1], dst=out[c])
            return
        direct = not channels_first and out.dtype == np.float32
        target = out if direct else buffer("f32", np.float32)
        cv2.transform(source, m32, dst=target)
    if direct:
        return
    if channels_first and out.dtype == target.dtype:
        cv2.split(target, mv=[out[0], out[1], out[2]])
    elif channels_first:
        np.copyto(out, target.transpose(2, 0, 1), casting="unsafe")
    else:
        np.copyto(out, target, casting="unsafe")
