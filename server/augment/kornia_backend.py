"""The kornia backend: runs a plan with kornia's functional ops on torch tensors.

On CUDA this is the GPU path; on CPU it runs too (slowly) and serves as the tests'
reference. Stages run batched whenever the images entering them share a size:
flips, warps (`warp_affine` with per-sample matrices), Gaussian blur (per-sample
sigma) and colour runs (one composed 3x4 matrix per sample, clamped after each
jitter step: the semantics the fast path has). Box crops, erasing and mixed sizes go sample by
sample through each op's own kornia `apply`. With `reference=True` every op runs
sample by sample through `apply`, colour ops included: kornia's `adjust_*`
functions, which clamp to [0, 1] after each step.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F
from kornia.filters import gaussian_blur2d
from kornia.geometry.transform import warp_affine

from augserve.server.augment.ops import Op
from augserve.server.augment.ops.base import fill_tensor
from augserve.server.augment.ops.color import JITTER_STEPS
from augserve.server.augment.plan import Stage

_TORCH_DTYPES = {"uint8": torch.uint8, "float32": torch.float32, "float16": torch.float16,
                 "bfloat16": torch.bfloat16}
_TO_INDEX = torch.tensor([[1.0, 0, -0.5], [0, 1.0, -0.5], [0, 0, 1.0]], dtype=torch.float64)


def default_device() -> torch.device:
    """CUDA when available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def run_kornia(
    stages: list[Stage], images: list[np.ndarray], dtype: str, layout: str,
    device: torch.device | None = None, reference: bool = False,
    compute_dtype: torch.dtype = torch.float32,
) -> torch.Tensor | list[torch.Tensor]:
    """Run `stages` over uint8 HWC `images` with kornia; outputs come back on the CPU.

    Args:
        stages: the plan.
        images: uint8 HWC arrays.
        dtype: output dtype name.
        layout: "NCHW" or "NHWC".
        device: where to compute (default: CUDA if present).
        reference: run every op sample by sample through its kornia `apply`.
        compute_dtype: float type of the computation (float64 for tight references).

    Returns:
        One (n, ...) tensor when every output has the same shape, else a list.
    """
    device = device or default_device()
    # a (n, 3, H, W) tensor while the images share a size, else a list of (3, H, W)
    xs: torch.Tensor | list[torch.Tensor]
    if len({im.shape for im in images}) == 1:
        stacked = torch.from_numpy(np.stack(images)).to(device)
        xs = stacked.permute(0, 3, 1, 2).to(compute_dtype) / 255.0
    else:
        xs = [torch.from_numpy(im).to(device).permute(2, 0, 1).to(compute_dtype) / 255.0
              for im in images]
    for stage in stages:
        if not reference and stage.kind in ("flip", "warp", "blur", "colour", "box"):
            if isinstance(xs, list) and len({tuple(x.shape) for x in xs}) == 1:
                xs = torch.stack(xs)
            if isinstance(xs, torch.Tensor):
                xs = _batched(stage, xs)
                continue
        xs = [_one(stage, x, i, reference) for i, x in enumerate(xs)]
    return _finish(xs, dtype, layout)


def _finish(xs: torch.Tensor | list[torch.Tensor], dtype: str, layout: str
            ) -> torch.Tensor | list[torch.Tensor]:
    """Convert to the output dtype and layout, on the CPU."""
    if isinstance(xs, list) and len({tuple(x.shape) for x in xs}) == 1:
        xs = torch.stack(xs)
    parts = [xs] if isinstance(xs, torch.Tensor) else [x[None] for x in xs]
    outs = []
    for x in parts:
        if dtype == "uint8":
            x = (x * 255).round().clamp(0, 255)
        x = x.to(_TORCH_DTYPES[dtype])
        outs.append((x if layout == "NCHW" else x.permute(0, 2, 3, 1)).contiguous().cpu())
    return outs[0] if isinstance(xs, torch.Tensor) else [o[0] for o in outs]


def _one(stage: Stage, x: torch.Tensor, i: int, reference: bool) -> torch.Tensor:
    if stage.kind == "colour" and not reference:
        x = _colour(stage, x[None], [i])[0]
        return x.clamp(0, 1) if stage.clamp else x
    if stage.steps and stage.steps[0] != _first_step(stage.ops[0]):
        return x  # the reference runs the whole jitter at its first step's stage
    for op, params in zip(stage.ops, stage.params, strict=True):
        x = op.apply(x, params.take([i]))
    return x


def _first_step(op: Op) -> str:
    return next(step for step in JITTER_STEPS if getattr(op, step))


def _batched(stage: Stage, x: torch.Tensor) -> torch.Tensor:
    """Run a flip, warp, blur, colour or box stage on a (n, 3, H, W) batch."""
    if stage.kind == "box":
        return _crop_resize(stage, x)
    if stage.kind == "colour":
        out = _colour(stage, x, list(range(x.shape[0])))
        return out.clamp(0, 1) if stage.clamp else out
    op, params = stage.ops[0], stage.params[0]
    rows = params.applied.nonzero()[:, 0].tolist()
    if not rows:
        return x
    index = torch.tensor(rows, device=x.device)
    part = x[index]
    if stage.kind == "flip":
        part = part.flip(-1 if op.horizontal else -2)  # type: ignore[attr-defined]
    elif stage.kind == "warp":
        pixel = _TO_INDEX @ stage.forward[rows] @ torch.linalg.inv(_TO_INDEX)  # type: ignore[index]
        m = pixel[:, :2].to(x.dtype).to(x.device)
        fill = fill_tensor(op.fill, x)  # type: ignore[attr-defined]
        part = warp_affine(part, m, tuple(x.shape[-2:]), mode="bilinear", padding_mode="fill",
                           align_corners=True, fill_value=fill)
    else:  # blur
        sigma = params.sigma[rows].to(x.dtype).to(x.device)  # type: ignore[attr-defined]
        k = op.kernel_size  # type: ignore[attr-defined]
        part = gaussian_blur2d(part, (k, k), torch.stack([sigma, sigma], 1), border_type="reflect")
    out = x.clone()
    out[index] = part
    return out


def _crop_resize(stage: Stage, x: torch.Tensor) -> torch.Tensor:
    """Every sample's box crop and resize as one `grid_sample` (the semantics of `resize`).

    `resize` (bilinear, align_corners=False) reads source row (y + 0.5) * h / out_h - 0.5,
    clamped to the crop; the crop is padded with the fill where it leaves the image.
    Sampling the fill-shifted image at those rows and columns, zeros outside, reproduces
    both exactly.
    """
    n, _, height, width = x.shape
    boxes = stage.boxes.to(torch.float64)  # type: ignore[union-attr]
    out_h, out_w = (int(v) for v in stage.out_sizes[0])
    x0, y0, w, h = boxes[:, 0:1], boxes[:, 1:2], boxes[:, 2:3], boxes[:, 3:4]
    ys = (torch.arange(out_h, dtype=torch.float64) + 0.5) * h / out_h - 0.5
    xs = (torch.arange(out_w, dtype=torch.float64) + 0.5) * w / out_w - 0.5
    ys = torch.minimum(ys.clamp(min=0), h - 1) + y0  # (n, out_h), source pixel rows
    xs = torch.minimum(xs.clamp(min=0), w - 1) + x0
    # normalised for align_corners=True: pixel p -> 2 p / (size - 1) - 1
    gy = (2 * ys / max(height - 1, 1) - 1)[:, :, None].expand(n, out_h, out_w)
    gx = (2 * xs / max(width - 1, 1) - 1)[:, None, :].expand(n, out_h, out_w)
    grid = torch.stack([gx, gy], -1).to(x.dtype).to(x.device)
    fill = fill_tensor(stage.ops[0].fill, x).view(1, -1, 1, 1)  # type: ignore[attr-defined]
    out = F.grid_sample(x - fill, grid, mode="bilinear", padding_mode="zeros",
                        align_corners=True)
    return out + fill


def _colour(stage: Stage, x: torch.Tensor, rows: list[int]) -> torch.Tensor:
    mean = x.mean(dim=(2, 3)).to(torch.float64).cpu()
    params = tuple(p.take(rows) for p in stage.params)
    sizes = stage.out_sizes[rows]
    matrices = dataclasses.replace(stage, params=params, out_sizes=sizes).colour_matrices(mean)
    m = matrices.to(x.dtype).to(x.device)
    return torch.einsum("nck,nkhw->nchw", m[:, :, :3], x) + m[:, :, 3, None, None]
