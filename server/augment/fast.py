"""The CPU fast path: a generic driver that runs a plan one image at a time.

Each image goes through every stage before the next starts, in buffers reused from
image to image (fresh 150 kB arrays would cost a page fault per 4 kB page), and output
batches recycled from call to call once released (`recycle`): uint8
HWC through each stage's `fast_step` (the op's own OpenCV / numpy code). Colour
stages give matrices instead (`colour_plan`), composed per image and applied
lazily: a jitter step whose clamp can act is applied with one `cv2.transform` into
uint8 (whose saturation is the clamp to [0, 1]); everything else folds into the next
matrix, and the last one is written straight into the output batch. A stage with
neither runs its kornia reference on the image (as float32).

Values: the pipeline's meaning is on [0, 1] floats; a uint8 image stores them times
255. Each stage's scale converts matrices and fills exactly once.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import torch

from augserve.kernels.augment import apply_colour, mean_rgb
from augserve.server.augment.ops.stage import ColourPlan, FastStep, Stage
from augserve.server.augment.recycle import BatchRecycler

_IDENTITY = np.eye(4)
#: Output batches are reused once their tensors are gone (no page faults per call).
_OUTPUTS = BatchRecycler()
_NP_DTYPES = {"uint8": np.uint8, "float32": np.float32, "float16": np.float16,
              "bfloat16": np.float32}


class _Buffers:
    """Scratch arrays of one call, keyed by (stage, shape, dtype), reused across images."""

    def __init__(self) -> None:
        self.arrays: dict[tuple[Any, ...], np.ndarray] = {}
        self.colour: dict[Any, np.ndarray] = {}

    def get(self, stage: Any, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        key = (stage, shape, dtype)
        if key not in self.arrays:
            self.arrays[key] = np.empty(shape, dtype)
        return self.arrays[key]


def _raw(matrix: np.ndarray, scale_in: float, scale_out: float) -> np.ndarray:
    """A [0, 1]-valued 4x4 matrix as the 3x4 one for stored values (uint8: times 255)."""
    m = matrix[:3] * (scale_out / scale_in)
    m[:, 3] *= scale_in
    return m


def _reference_step(stage: Stage) -> FastStep:
    """A stage without a fast path: its kornia reference on the image, as float32."""

    def step(i: int, im: np.ndarray, scale: float, buf: np.ndarray
             ) -> tuple[np.ndarray, float]:
        x = torch.from_numpy(np.ascontiguousarray(im)).permute(2, 0, 1).to(torch.float32) / scale
        out = stage.kornia_one(x, i, reference=True)
        return np.ascontiguousarray(out.permute(1, 2, 0).numpy(), np.float32), 1.0

    return step


def _prepare(stage: Stage) -> ColourPlan | FastStep:
    """The stage's colour plan, else its fast step, else its reference as a step."""
    return stage.colour_plan() or stage.fast_step() or _reference_step(stage)


def run_fast(
    stages: list[Stage], images: list[np.ndarray], dtype: str, layout: str,
) -> torch.Tensor | list[torch.Tensor]:
    """Run `stages` over uint8 HWC `images`; return the outputs as CPU tensors.

    Returns:
        One (n, ...) tensor when every output has the same shape, else a list.
    """
    n = len(images)
    prepared = [_prepare(stage) for stage in stages]
    sizes = [stage.out_sizes.tolist() for stage in stages]
    last_plan = prepared[-1] if prepared else None
    if not isinstance(last_plan, ColourPlan) or last_plan.clamp:
        # the output is written by a final colour stage (here, the identity)
        prepared.append(ColourPlan.identity_plan(n))
        sizes.append(sizes[-1] if sizes else [list(im.shape[:2]) for im in images])
    channels_first = layout == "NCHW"
    shapes = [(3, h, w) if channels_first else (h, w, 3) for h, w in sizes[-1]]
    np_dtype = _NP_DTYPES[dtype]
    outs: Any
    if len(set(shapes)) == 1:
        batch = _OUTPUTS.empty((n, *shapes[0]), np_dtype)
        outs = batch
    else:
        batch = None
        outs = [np.empty(s, np_dtype) for s in shapes]
    last = len(prepared) - 1
    final_scale = 255.0 if np_dtype == np.uint8 else 1.0
    buffers = _Buffers()
    for i, image in enumerate(images):
        im, scale = image, 255.0
        # colour matrices not applied yet: folded until a clamp, another op or the output
        pending: np.ndarray | None = None
        for k, prep in enumerate(prepared):
            if isinstance(prep, ColourPlan):
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
                elif prep.clamps[i] and pending is not None:
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
            im, scale = prep(i, im, scale, buffers.get(k, (h, w, 3), im.dtype))
    tensors: Any = torch.from_numpy(batch) if batch is not None else [torch.from_numpy(o)
                                                                       for o in outs]
    if dtype == "bfloat16":
        return (tensors.to(torch.bfloat16) if batch is not None
                else [t.to(torch.bfloat16) for t in tensors])
    return tensors


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
