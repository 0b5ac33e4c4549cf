"""The kornia backend: runs a plan with kornia's functional ops on torch tensors.

On CUDA this is the GPU path; on CPU it runs too (slowly) and serves as the tests'
reference. Each geometric, blur or erase op is applied by the op's own kornia
`apply`; a colour run is applied as its one composed 3x4 matrix, clamped after a
jitter (the semantics the fast path has), or, with `reference=True`, op by op
through kornia's `adjust_*` functions, which clamp to [0, 1] after each step.
"""

from __future__ import annotations

import numpy as np
import torch

from augserve.server.augment.plan import Stage

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
        reference: apply colour ops one by one with kornia (clamping each step).
        compute_dtype: float type of the computation (float64 for tight references).

    Returns:
        One (n, ...) tensor when every output has the same shape, else a list.
    """
    device = device or default_device()
    outs = []
    for i, image in enumerate(images):
        x = torch.from_numpy(image).to(device).permute(2, 0, 1).to(compute_dtype) / 255.0
        for stage in stages:
            if stage.kind == "colour" and not reference:
                x = _colour(stage, x, i)
                if stage.clamp:
                    x = x.clamp(0, 1)
            else:
                for op, params in zip(stage.ops, stage.params, strict=True):
                    x = op.apply(x, params.take([i]), 0)
        if dtype == "uint8":
            x = (x * 255).round().clamp(0, 255)
        x = x.to(_TORCH_DTYPES[dtype])
        outs.append((x if layout == "NCHW" else x.permute(1, 2, 0)).contiguous().cpu())
    if len({tuple(o.shape) for o in outs}) == 1:
        return torch.stack(outs)
    return outs


def _colour(stage: Stage, x: torch.Tensor, i: int) -> torch.Tensor:
    mean = x.mean(dim=(1, 2)).to(torch.float64).cpu()[None]
    params = tuple(p.take([i]) for p in stage.params)
    matrix = Stage(stage.kind, stage.ops, params, stage.out_sizes).colour_matrices(mean)[0]
    m = matrix.to(x.dtype).to(x.device)
    return torch.einsum("ck,khw->chw", m[:, :3], x) + m[:, 3].view(-1, 1, 1)
