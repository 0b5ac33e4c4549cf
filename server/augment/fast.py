"""The CPU fast path: runs a plan with `augserve.kernels.augment`, one image at a time.

Each image goes through every stage before the next starts, in buffers reused from
image to image (fresh 150 kB arrays would cost a page fault per 4 kB page): uint8
HWC through geometry (one `cv2.resize` per box stage, one `cv2.warpAffine` per warp
stage, a `cv2.flip`). Colour matrices are composed per image and applied lazily: a
jitter step whose clamp can act is applied with one `cv2.transform` into uint8 (whose
saturation is the clamp to [0, 1]); everything else folds into the next matrix, and
the last one is written straight into the output batch.

Values: the pipeline's meaning is on [0, 1] floats; a uint8 image stores them times
255. Each stage's scale converts matrices and fills exactly once.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import torch

from augserve.kernels.augment import apply_colour, crop_resize, flip, gaussian_blur, mean_rgb
from augserve.kernels.augment import warp_affine as warp
from augserve.server.augment.plan import Stage

_EYE4 = torch.eye(4, dtype=torch.float64)

_IDENTITY = np.eye(4)
_NP_DTYPES = {"uint8": np.uint8, "float32": np.float32, "float16": np.float16,
              "bfloat16": np.float32}


class _Buffers:
    """Scratch arrays of one call, keyed by (stage, shape, dtype), reused across images."""

    def __init__(self) -> None:
        self.arrays: dict[tuple[Any, ...], np.ndarray] = {}
        self.colour: dict[Any, np.ndarray] = {}

    def get(self, stage: int, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        key = (stage, shape, dtype)
        if key not in self.arrays:
            self.arrays[key] = np.empty(shape, dtype)
        return self.arrays[key]


class _ColourPlan:
    """A colour stage's per-sample matrices (on [0, 1] values), precomputed for the batch.

    `clamps[i]` says whether the stage's clamp can act on sample i: a jitter step whose
    factor exceeds 1 (or a hue rotation). Brightness, contrast or saturation factors
    of at most 1 blend values in [0, 1] towards black or grey and stay inside, so
    their clamp is the identity and the fast path folds the step into the next one.
    """

    def __init__(self, stage: Stage) -> None:
        base, slope = stage.colour_affine_in_mean()
        n = base.shape[0]
        square = _EYE4.expand(n, 4, 4).clone()
        square[:, :3] = base
        self.base = list(square.numpy())  # 4x4 homogeneous, one per sample
        self.slope = list(slope.numpy())
        self.needs_mean = stage.needs_mean()
        identity = (base == torch.eye(3, 4, dtype=torch.float64)).all(2).all(1)
        self.identity = (identity & (slope == 0).all(2).all(1)).tolist()
        clamps = torch.zeros(n, dtype=torch.bool)
        if stage.clamp:
            params = stage.params[0]
            step = stage.steps[0]
            factor = getattr(params, step)
            clamps = params.applied & ((factor != 0) if step == "hue" else (factor > 1))
        self.clamps = clamps.tolist()

    def matrix(self, i: int, mean_in: np.ndarray | None) -> np.ndarray:
        """Sample i's 4x4 homogeneous matrix on [0, 1] values, given the entering mean RGB."""
        if not self.needs_mean:
            return self.base[i]
        m = self.base[i].copy()
        m[:3, 3] += self.slope[i] @ mean_in
        return m


def _raw(matrix: np.ndarray, scale_in: float, scale_out: float) -> np.ndarray:
    """A [0, 1]-valued 4x4 matrix as the 3x4 one for stored values (uint8: times 255)."""
    m = matrix[:3] * (scale_out / scale_in)
    m[:, 3] *= scale_in
    return m


def run_fast(
    stages: list[Stage], images: list[np.ndarray], dtype: str, layout: str,
) -> torch.Tensor | list[torch.Tensor]:
    """Run `stages` over uint8 HWC `images`; return the outputs as CPU tensors.

    Returns:
        One (n, ...) tensor when every output has the same shape, else a list.
    """
    n = len(images)
    if not stages or stages[-1].kind != "colour" or stages[-1].clamp:
        # the output is written by a final colour stage (here, the identity)
        final_sizes = stages[-1].out_sizes if stages else torch.tensor(
            [im.shape[:2] for im in images], dtype=torch.int64).reshape(n, 2)
        stages = [*stages, Stage("colour", (), (), final_sizes)]
    channels_first = layout == "NCHW"
    out_hw = stages[-1].out_sizes.tolist()
    shapes = [(3, h, w) if channels_first else (h, w, 3) for h, w in out_hw]
    np_dtype = _NP_DTYPES[dtype]
    outs: Any
    if len(set(shapes)) == 1:
        batch = np.empty((n, *shapes[0]), np_dtype)
        outs = batch
    else:
        batch = None
        outs = [np.empty(s, np_dtype) for s in shapes]
    prepared = [_prepare(stage) for stage in stages]
    sizes = [stage.out_sizes.tolist() for stage in stages]
    last = len(stages) - 1
    final_scale = 255.0 if np_dtype == np.uint8 else 1.0
    buffers = _Buffers()
    for i, image in enumerate(images):
        im, scale = image, 255.0
        # colour matrices not applied yet: folded until a clamp, another op or the output
        pending: np.ndarray | None = None
        for k, (stage, prep) in enumerate(zip(stages, prepared, strict=True)):
            if stage.kind == "colour":
                if not prep.identity[i]:
                    mean_in = None
                    if prep.needs_mean:
                        mean_in = mean_rgb(im) / scale
                        if pending is not None:
                            mean_in = pending[:3, :3] @ mean_in + pending[:3, 3]
                    m = prep.matrix(i, mean_in)
                    pending = m if pending is None else m @ pending
                if k == last:
                    m = _IDENTITY if pending is None else pending
                    apply_colour(im, _raw(m, scale, final_scale), outs[i], channels_first,
                                 buffers.colour)
                elif prep.clamps[i]:
                    buf = buffers.get(k, im.shape, im.dtype)
                    if im.dtype == np.uint8:  # saturation is the clamp
                        cv2.transform(im, _raw(pending, scale, 255.0), dst=buf)
                        im, scale = buf, 255.0
                    else:
                        im, scale = _materialise(im, scale, pending, True, buf)
                    pending = None
                continue
            if pending is not None:  # a non-colour op needs the colours applied
                im, scale = _materialise(im, scale, pending, False,
                                         buffers.get(("pending", k), im.shape, np.float32))
                pending = None
            h, w = sizes[k][i]
            buf = buffers.get(k, (h, w, 3), im.dtype)
            im, scale = _step(stage, prep, i, im, scale, buf)
    tensors: Any = torch.from_numpy(batch) if batch is not None else [torch.from_numpy(o)
                                                                       for o in outs]
    if dtype == "bfloat16":
        return (tensors.to(torch.bfloat16) if batch is not None
                else [t.to(torch.bfloat16) for t in tensors])
    return tensors


def _fills(stage: Stage) -> dict[float, tuple[float, ...]]:
    """The op's fill for uint8 images (scale 255) and float32 ones (scale 1)."""
    fill = stage.ops[0].fill  # type: ignore[attr-defined]
    return {255.0: tuple(float(v) for v in fill), 1.0: tuple(float(v) / 255.0 for v in fill)}


def _prepare(stage: Stage) -> Any:
    if stage.kind == "colour":
        return _ColourPlan(stage)
    if stage.kind == "box":
        return stage.boxes.tolist(), stage.out_sizes.tolist(), _fills(stage)  # type: ignore[union-attr]
    if stage.kind == "warp":
        return stage.params[0].applied.tolist(), stage.forward.numpy(), _fills(stage)  # type: ignore[union-attr]
    if stage.kind == "blur":
        return stage.params[0].applied.tolist(), stage.params[0].sigma.tolist()  # type: ignore[attr-defined]
    return stage.params[0].applied.tolist()


def _materialise(im: np.ndarray, scale: float, matrix: np.ndarray, clamp: bool,
                 buf: np.ndarray) -> tuple[np.ndarray, float]:
    """Apply pending colours into `buf`: uint8 (saturation clamps) or float32 (clipped if asked)."""
    if buf.dtype == np.uint8:
        apply_colour(im, _raw(matrix, scale, 255.0), buf, False)
        return buf, 255.0
    apply_colour(im, _raw(matrix, scale, 1.0), buf, False)
    if clamp:
        np.clip(buf, 0.0, 1.0, out=buf)
    return buf, 1.0


def _step(stage: Stage, prep: Any, i: int, im: np.ndarray, scale: float,
          buf: np.ndarray) -> tuple[np.ndarray, float]:
    """Run one geometry, blur or erase stage on image `i`; returns the image and its scale."""
    kind, op = stage.kind, (stage.ops[0] if stage.ops else None)
    if kind == "box":
        boxes, sizes, fills = prep
        fill = fills[scale]
        return crop_resize(im, boxes[i], sizes[i], fill, out=buf), scale
    if kind == "warp":
        applied, forward, fills = prep
        if not applied[i]:
            return im, scale
        fill = fills[scale]
        return warp(im, forward[i], im.shape[:2], fill, out=buf), scale
    if kind == "flip":
        return (flip(im, op.horizontal, out=buf) if prep[i] else im), scale  # type: ignore[union-attr]
    if kind == "blur":
        applied, sigma = prep
        if not applied[i]:
            return im, scale
        return gaussian_blur(im, op.kernel_size, sigma[i], out=buf), scale  # type: ignore[union-attr]
    if kind == "erase":
        if not prep[i]:
            return im, scale
        np.copyto(buf, im)
        x0, y0, w, h = op.box(stage.params[0], i)  # type: ignore[union-attr]
        raw = op.value * scale  # type: ignore[union-attr]
        value = np.clip(np.round(raw), 0, 255) if buf.dtype == np.uint8 else raw
        buf[y0 : y0 + h, x0 : x0 + w] = value
        return buf, scale
    raise AssertionError(f"unknown stage kind {kind!r}")
