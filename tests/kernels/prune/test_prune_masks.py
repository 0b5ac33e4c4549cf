"""Masks and scores: vectorized routines against loop references; exact counts."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from augserve.kernels.prune import (
    block_mask,
    bn_scale_scores,
    channel_scores,
    filter_scores,
    global_magnitude_masks,
    magnitude_mask,
    nm_mask,
)


def _nm_reference(w: torch.Tensor, n: int, m: int) -> torch.Tensor:
    moved = w.abs().movedim(1, -1) if w.dim() > 2 else w.abs()
    flat = moved.reshape(-1, m)
    keep = torch.zeros_like(flat, dtype=torch.bool)
    for row in range(flat.shape[0]):
        order = sorted(range(m), key=lambda i: -float(flat[row, i]))
        for i in order[:n]:
            keep[row, i] = True
    keep = keep.reshape(moved.shape)
    return keep.movedim(-1, 1) if w.dim() > 2 else keep


@settings(max_examples=30, deadline=None)
@given(
    nm=st.sampled_from([(2, 4), (4, 8), (1, 4)]),
    out=st.integers(1, 6), groups=st.integers(1, 4), conv=st.booleans(),
)
def test_nm_mask_has_exactly_n_per_group_and_matches_reference(nm, out, groups, conv):
    n, m = nm
    shape = (out, groups * m, 3, 3) if conv else (out, groups * m)
    w = torch.randn(shape)
    mask = nm_mask(w, n, m)
    per_group = (mask.movedim(1, -1) if conv else mask).reshape(-1, m).sum(1)
    assert torch.all(per_group == n)
    assert torch.equal(mask, _nm_reference(w, n, m))


def test_nm_mask_rejects_indivisible_inputs():
    with pytest.raises(ValueError, match="multiple"):
        nm_mask(torch.randn(4, 6), 2, 4)


@settings(max_examples=30, deadline=None)
@given(numel=st.integers(1, 500), sparsity=st.floats(0.0, 0.95))
def test_magnitude_mask_prunes_the_smallest(numel, sparsity):
    w = torch.randn(numel)
    mask = magnitude_mask(w, sparsity)
    assert int((~mask).sum()) == round(numel * sparsity)
    if mask.any() and (~mask).any():
        assert w[mask].abs().min() >= w[~mask].abs().max()


def test_global_masks_share_one_threshold():
    weights = {"a": torch.randn(100) * 10, "b": torch.randn(50, 2) * 0.1}
    masks = global_magnitude_masks(weights, 0.5)
    kept = torch.cat([weights[k].reshape(-1)[masks[k].reshape(-1)] for k in weights])
    gone = torch.cat([weights[k].reshape(-1)[~masks[k].reshape(-1)] for k in weights])
    assert kept.numel() == gone.numel() == 100
    assert kept.abs().min() >= gone.abs().max()
    assert masks["b"].float().mean() < masks["a"].float().mean()  # uneven per layer


def test_global_masks_large_tensor_is_fast_enough():
    weights = {f"w{i}": torch.randn(512, 512, 3, 3) for i in range(4)}  # 9.4M weights
    masks = global_magnitude_masks(weights, 0.9)
    total = sum(int(m.sum()) for m in masks.values())
    assert total == 4 * 512 * 512 * 9 - round(4 * 512 * 512 * 9 * 0.9)


@pytest.mark.parametrize("block", [(1, 4), (4, 4)])
def test_block_mask_prunes_whole_blocks_by_norm(block):
    rows, cols = block
    w = torch.randn(8, 16)
    mask = block_mask(w, 0.5, block)
    tiles = mask.reshape(8 // rows, rows, 16 // cols, cols)
    assert torch.all(tiles.all(dim=(1, 3)) | ~tiles.any(dim=(1, 3)))  # all or nothing
    norms = w.reshape(8 // rows, rows, 16 // cols, cols).pow(2).sum((1, 3))
    keep = tiles.all(dim=(1, 3))
    assert int(keep.sum()) == keep.numel() // 2
    assert norms[keep].min() >= norms[~keep].max()


def test_block_mask_on_conv_groups_input_channels():
    w = torch.randn(4, 8, 3, 3)
    mask = block_mask(w, 0.5, (1, 4))
    runs = mask.movedim(1, -1).reshape(-1, 4)
    assert torch.all(runs.all(1) | ~runs.any(1))


def test_scores_match_loop_references():
    w = torch.randn(6, 4, 3, 3)
    l1 = torch.tensor([float(w[i].abs().sum()) for i in range(6)])
    l2 = torch.tensor([float(w[:, j].pow(2).sum().sqrt()) for j in range(4)])
    torch.testing.assert_close(filter_scores(w, "l1"), l1)
    torch.testing.assert_close(channel_scores(w, "l2"), l2)
    bn = torch.nn.BatchNorm2d(3)
    bn.weight.data = torch.tensor([-2.0, 0.5, 1.0])
    torch.testing.assert_close(bn_scale_scores(bn), torch.tensor([2.0, 0.5, 1.0]))
    with pytest.raises(ValueError, match="norm"):
        filter_scores(w, "l3")
