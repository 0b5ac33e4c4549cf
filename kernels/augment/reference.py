"""Plain-torch references for the fused CPU routines (float64/float32 math, no rounding).

Each function takes a float CHW tensor and mirrors one routine of
`augserve.kernels.augment`; the tests hold the fused routines to these.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _fill_tensor(fill: float | tuple[float, ...], x: torch.Tensor) -> torch.Tensor:
    values = [float(fill)] * x.shape[0] if isinstance(fill, int | float) else list(fill)
    return torch.tensor(values[: x.shape[0]], dtype=x.dtype).view(-1, 1, 1)


def crop_resize_reference(
    x: torch.Tensor, box: tuple[int, int, int, int], out_hw: tuple[int, int],
    fill: float | tuple[float, ...] = 0, mode: str = "bilinear",
) -> torch.Tensor:
    """Crop `box` = (x0, y0, w, h) from CHW `x` (fill outside) and resize to `out_hw`."""
    x0, y0, w, h = (int(v) for v in box)
    _, height, width = x.shape
    f = _fill_tensor(fill, x)
    pad = (max(0, -x0), max(0, x0 + w - width), max(0, -y0), max(0, y0 + h - height))
    shifted = F.pad(x - f, pad) + f
    crop = shifted[:, y0 + pad[2] : y0 + pad[2] + h, x0 + pad[0] : x0 + pad[0] + w]
    if (h, w) == tuple(out_hw):
        return crop
    if mode == "nearest":
        return F.interpolate(crop[None], size=tuple(out_hw), mode="nearest-exact")[0]
    return F.interpolate(crop[None], size=tuple(out_hw), mode="bilinear", align_corners=False)[0]


def warp_affine_reference(
    x: torch.Tensor, forward: torch.Tensor, out_hw: tuple[int, int],
    fill: float | tuple[float, ...] = 0, mode: str = "bilinear",
) -> torch.Tensor:
    """Warp CHW `x` by a 3x3 forward map in continuous coordinates (fill outside)."""
    _, height, width = x.shape
    out_h, out_w = out_hw
    inverse = torch.linalg.inv(forward.to(torch.float64))
    ys, xs = torch.meshgrid(torch.arange(out_h, dtype=torch.float64) + 0.5,
                            torch.arange(out_w, dtype=torch.float64) + 0.5, indexing="ij")
    points = torch.stack([xs, ys, torch.ones_like(xs)], -1) @ inverse.T
    grid = torch.stack([points[..., 0] / width * 2 - 1, points[..., 1] / height * 2 - 1], -1)
    f = _fill_tensor(fill, x)
    out = F.grid_sample((x - f)[None], grid[None].to(x.dtype), mode=mode,
                        padding_mode="zeros", align_corners=False)[0]
    return out + f


def colour_reference(x: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Apply a 3x4 colour matrix to CHW `x`: `M[:, :3] @ rgb + M[:, 3]` per pixel."""
    m = matrix.to(x.dtype)
    return torch.einsum("ck,khw->chw", m[:, :3], x) + m[:, 3].view(-1, 1, 1)


def gaussian_blur_reference(x: torch.Tensor, kernel_size: int, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of CHW `x` with reflect-101 padding."""
    half = kernel_size // 2
    t = torch.arange(kernel_size, dtype=torch.float64) - half
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = (k / k.sum()).to(x.dtype)
    padded = F.pad(x[None], (half, half, half, half), mode="reflect")
    c = x.shape[0]
    out = F.conv2d(padded, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(out, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)[0]
