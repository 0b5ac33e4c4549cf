"""The CPU fast path: runs a plan with `augserve.kernels.augment`, stage by stage.

Images stay uint8 HWC through geometry (one `cv2.resize` per box stage, one
`cv2.warpAffine` per warp stage, a `cv2.flip`); a colour run becomes one
`cv2.transform` per image with a 3x4 matrix, written straight into the output
buffer when it is the last stage. The only intermediate float32 images appear when
blur, erase or geometry follow a colour run.

Values: the pipeline's meaning is on [0, 1] floats; a uint8 image stores them times
255. Each state carries that scale so matrices and fills are converted exactly once.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from augserve.kernels.augment import apply_colour, crop_resize, flip, gaussian_blur, mean_rgb
from augserve.kernels.augment import warp_affine as warp
from augserve.server.augment.plan import Stage

_NP_DTYPES = {"uint8": np.uint8, "float32": np.float32, "float16": np.float16,
              "bfloat16": np.float32}


def _scaled(matrix: np.ndarray, scale_in: float, scale_out: float) -> np.ndarray:
    out = np.empty_like(matrix)
    out[:, :3] = matrix[:, :3] * (scale_out / scale_in)
    out[:, 3] = matrix[:, 3] * scale_out
    return out


def _identity_stage(n: int, sizes: torch.Tensor) -> Stage:
    return Stage("colour", (), (), sizes)


def run_fast(
    stages: list[Stage], images: list[np.ndarray], dtype: str, layout: str,
) -> torch.Tensor | list[torch.Tensor]:
    """Run `stages` over uint8 HWC `images`; return the outputs as CPU tensors.

    Returns:
        One (n, ...) tensor when every output has the same shape, else a list.
    """
    n = len(images)
    state: list[np.ndarray] = list(images)
    scale = 255.0
    if not stages or stages[-1].kind != "colour" or stages[-1].clamp:
        final_sizes = stages[-1].out_sizes if stages else torch.tensor(
            [im.shape[:2] for im in images], dtype=torch.int64).reshape(n, 2)
        stages = [*stages, _identity_stage(n, final_sizes)]
    for index, stage in enumerate(stages):
        last = index == len(stages) - 1
        if stage.kind == "box":
            fill = np.asarray(stage.ops[0].fill) / 255.0 * scale  # type: ignore[attr-defined]
            boxes = stage.boxes.tolist()  # type: ignore[union-attr]
            sizes = stage.out_sizes.tolist()
            state = [crop_resize(im, boxes[i], sizes[i], tuple(fill)) for i, im in enumerate(state)]
        elif stage.kind == "warp":
            fill = tuple(np.asarray(stage.ops[0].fill) / 255.0 * scale)  # type: ignore[attr-defined]
            applied = stage.params[0].applied.tolist()
            forward = stage.forward.numpy()  # type: ignore[union-attr]
            state = [warp(im, forward[i], im.shape[:2], fill) if applied[i] else im
                     for i, im in enumerate(state)]
        elif stage.kind == "flip":
            horizontal = stage.ops[0].horizontal  # type: ignore[attr-defined]
            applied = stage.params[0].applied.tolist()
            state = [flip(im, horizontal) if applied[i] else im for i, im in enumerate(state)]
        elif stage.kind == "blur":
            k = stage.ops[0].kernel_size  # type: ignore[attr-defined]
            sigma = stage.params[0].sigma.tolist()  # type: ignore[attr-defined]
            applied = stage.params[0].applied.tolist()
            state = [gaussian_blur(im, k, sigma[i]) if applied[i] else im
                     for i, im in enumerate(state)]
        elif stage.kind == "erase":
            state = _erase(stage, state, scale)
        elif last:
            return _final_colour(stage, state, scale, dtype, layout)
        elif stage.clamp and state[0].dtype == np.uint8:
            # uint8 saturation is the clamp to [0, 1] (with rounding to 1/255)
            skip = stage.identity_rows().tolist()
            outs = [None if skip[i] else np.empty(im.shape, np.uint8) for i, im in enumerate(state)]
            done = _colour(stage, state, scale, outs, channels_first=False, skip=skip)
            state = [state[i] if skip[i] else done[i] for i in range(n)]
        else:
            state = _colour(stage, state, scale, None, channels_first=False)
            if stage.clamp:
                state = [np.clip(im, 0.0, 1.0, out=im) for im in state]
            scale = 1.0
    raise AssertionError("the plan always ends with a colour stage")


def _erase(stage: Stage, state: list[np.ndarray], scale: float) -> list[np.ndarray]:
    op, params = stage.ops[0], stage.params[0]
    raw = op.value * scale  # type: ignore[attr-defined]
    out = []
    for i, im in enumerate(state):
        if bool(params.applied[i]):
            im = im.copy()
            x0, y0, w, h = op.box(params, i)  # type: ignore[attr-defined]
            value = np.clip(np.round(raw), 0, 255) if im.dtype == np.uint8 else raw
            im[y0 : y0 + h, x0 : x0 + w] = value
        out.append(im)
    return out


def _matrices(stage: Stage, state: list[np.ndarray], scale: float) -> np.ndarray:
    n = len(state)
    if stage.needs_mean():
        mean = torch.from_numpy(np.stack([mean_rgb(im) for im in state]) / scale)
    else:
        mean = torch.zeros(n, 3, dtype=torch.float64)
    if not stage.ops:
        return np.tile(np.eye(3, 4), (n, 1, 1))
    return stage.colour_matrices(mean).numpy()


def _colour(stage: Stage, state: list[np.ndarray], scale: float, out: list[Any] | None,
            channels_first: bool, skip: list[bool] | None = None) -> list[np.ndarray]:
    matrices = _matrices(stage, state, scale)
    scratch: dict[str, np.ndarray] = {}
    results = []
    for i, im in enumerate(state):
        if skip is not None and skip[i]:
            results.append(im)
            continue
        target = out[i] if out is not None else np.empty(im.shape, np.float32)
        apply_colour(im, _scaled(matrices[i], scale, 1.0 if target.dtype != np.uint8 else 255.0),
                     target, channels_first, scratch)
        results.append(target)
    return results


def _final_colour(stage: Stage, state: list[np.ndarray], scale: float, dtype: str,
                  layout: str) -> torch.Tensor | list[torch.Tensor]:
    np_dtype = _NP_DTYPES[dtype]
    channels_first = layout == "NCHW"
    shapes = [((3, *im.shape[:2]) if channels_first else im.shape) for im in state]
    stacked = len(set(shapes)) == 1
    if stacked:
        batch = np.empty((len(state), *shapes[0]), np_dtype)
        _colour(stage, state, scale, list(batch), channels_first)
        result = torch.from_numpy(batch)
        return result.to(torch.bfloat16) if dtype == "bfloat16" else result
    outs = [np.empty(s, np_dtype) for s in shapes]
    _colour(stage, state, scale, outs, channels_first)
    tensors = [torch.from_numpy(o) for o in outs]
    return [t.to(torch.bfloat16) for t in tensors] if dtype == "bfloat16" else tensors
