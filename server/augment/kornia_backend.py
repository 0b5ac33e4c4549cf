"""The kornia backend: a generic driver that runs a plan on torch tensors.

On CUDA this is the GPU path; on CPU it runs too (slowly) and serves as the tests'
reference. While the images entering a stage share a size, the stage runs batched
(`Stage.kornia_batch`: the op's own batched kornia code, e.g. `warp_affine` with
per-sample matrices, one `grid_sample` for all box crops, one composed colour matrix
per sample); a stage with no batched path, and every stage on mixed sizes, runs
sample by sample (`Stage.kornia_one`, the op's `apply`). With `reference=True`
every op runs sample by sample through its `apply`, colour ops included: kornia's
`adjust_*` functions, which clamp to [0, 1] after each step.
"""

from __future__ import annotations

import numpy as np
import torch

from augserve.server.augment.ops.stage import Stage

_TORCH_DTYPES = {"uint8": torch.uint8, "float32": torch.float32, "float16": torch.float16,
                 "bfloat16": torch.bfloat16}


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
        if not reference:
            if isinstance(xs, list) and len({tuple(x.shape) for x in xs}) == 1:
                xs = torch.stack(xs)
            if isinstance(xs, torch.Tensor):
                batched = stage.kornia_batch(xs)
                if batched is not None:
                    xs = batched
                    continue
        xs = [stage.kornia_one(x, i, reference) for i, x in enumerate(xs)]
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
