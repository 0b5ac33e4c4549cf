"""Weight masks: unstructured magnitude (per layer, global), N:M along the input dim, blocks.

Every mask is a bool tensor shaped like the weight (True = keep). All are vectorized:
one `topk` / `kthvalue` per tensor or per group, never a Python loop over elements.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch


def _check_sparsity(sparsity: float) -> None:
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")


def magnitude_mask(weight: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep the largest-|w| entries of one tensor so that `sparsity` of them are pruned.

    Exactly round(numel * sparsity) entries are False (ties broken by index).

    Example:
        >>> magnitude_mask(torch.tensor([0.1, -3.0, 2.0, 0.5]), 0.5)
        tensor([False,  True,  True, False])
    """
    _check_sparsity(sparsity)
    flat = weight.detach().abs().reshape(-1)
    n_prune = round(flat.numel() * sparsity)
    mask = torch.ones_like(flat, dtype=torch.bool)
    if n_prune:
        mask[torch.topk(flat, n_prune, largest=False, sorted=False).indices] = False
    return mask.reshape(weight.shape)


def global_magnitude_masks(
    weights: Mapping[str, torch.Tensor], sparsity: float
) -> dict[str, torch.Tensor]:
    """One |w| threshold across all tensors, so layers are pruned unevenly.

    Returns:
        name -> bool mask; exactly round(total * sparsity) entries are False overall.
    """
    _check_sparsity(sparsity)
    flats = [w.detach().abs().reshape(-1).float() for w in weights.values()]
    mask = magnitude_mask(torch.cat(flats), sparsity) if flats else torch.ones(0, dtype=torch.bool)
    out, start = {}, 0
    for (name, w), flat in zip(weights.items(), flats, strict=True):
        out[name] = mask[start : start + flat.numel()].reshape(w.shape)
        start += flat.numel()
    return out


def _input_last(weight: torch.Tensor) -> torch.Tensor:
    # (out, in, *k) -> (out, *k, in): groups run along the input channels.
    return weight.movedim(1, -1) if weight.dim() > 2 else weight


def nm_mask(weight: torch.Tensor, n: int = 2, m: int = 4) -> torch.Tensor:
    """N:M structured sparsity: in every run of `m` consecutive inputs, keep the `n` largest |w|.

    The groups run along the input dimension (dim 1 of a Linear or Conv weight), so each
    group holds exactly `n` True entries.

    Example:
        >>> nm_mask(torch.tensor([[1.0, -4.0, 3.0, 2.0]]), 2, 4)
        tensor([[False,  True,  True, False]])
    """
    if not 0 < n <= m:
        raise ValueError(f"need 0 < n <= m, got {n}:{m}")
    if weight.dim() < 2 or weight.shape[1] % m:
        raise ValueError(f"input dim of shape {tuple(weight.shape)} must be a multiple of m={m}")
    moved = _input_last(weight.detach().abs())
    groups = moved.reshape(-1, m)
    keep = torch.zeros_like(groups, dtype=torch.bool)
    keep.scatter_(1, torch.topk(groups, n, dim=1).indices, True)
    keep = keep.reshape(moved.shape)
    return keep.movedim(-1, 1) if weight.dim() > 2 else keep


def block_mask(
    weight: torch.Tensor, sparsity: float, block: tuple[int, int] = (1, 4)
) -> torch.Tensor:
    """Prune whole (rows x cols) blocks of the 2-D view (out, in * k) by their L2 norm.

    Conv weights are viewed as (out, in*kh*kw) with the input channels innermost, so a
    1x4 block spans 4 input channels at one kernel position.

    Returns:
        A bool mask shaped like `weight`; round(blocks * sparsity) blocks are pruned.
    """
    _check_sparsity(sparsity)
    rows, cols = block
    moved = _input_last(weight.detach())
    view = moved.reshape(weight.shape[0], -1)
    h, w = view.shape
    if rows <= 0 or cols <= 0 or h % rows or w % cols:
        raise ValueError(f"block {block} does not tile the 2-D weight view {tuple(view.shape)}")
    tiles = view.float().reshape(h // rows, rows, w // cols, cols)
    norms = tiles.pow(2).sum(dim=(1, 3))
    keep = magnitude_mask(norms, sparsity)
    keep = keep[:, None, :, None].expand(-1, rows, -1, cols).reshape(moved.shape)
    return keep.movedim(-1, 1) if weight.dim() > 2 else keep
