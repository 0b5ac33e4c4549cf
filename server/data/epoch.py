"""The epoch plan: which samples each shard gets, in which batches, in which order.

1. Order: with `shuffle`, a permutation of 0..n-1 drawn by numpy's PCG64 seeded with
   (seed, epoch), the same on every machine; without it, index order.
2. `drop_last`: the permutation's tail is cut so that every shard holds the same number
   of *full* batches, `n // (num_shards * batch_size)` of them (data-parallel trainers
   must step in lockstep). The samples cut change from epoch to epoch under shuffle.
   Without `drop_last`, nothing is cut: shards differ by at most one sample and a
   shard's last batch may be short; the shards' union is the whole dataset.
3. Sharding: "contiguous" gives shard i one run of the order (numpy's `array_split`
   boundaries); "strided" gives it order[i::num_shards]. Either way the shards are
   disjoint.
4. Batches: the shard's samples cut into runs of `batch_size`; a batch's position is
   its index in that list. A stream starts at any position (resume).

Example:
    >>> plan = EpochPlan(10, batch_size=3, seed=0, epoch=0, shuffle=False, num_shards=2,
    ...                  shard_index=1)
    >>> [b.tolist() for b in plan.batches()]
    [[5, 6, 7], [8, 9]]
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

SHARDINGS = ("contiguous", "strided")


def permutation(n: int, seed: int, epoch: int, shuffle: bool = True) -> np.ndarray:
    """The epoch's order of 0..n-1 (int64): seeded by (seed, epoch), or identity."""
    if not shuffle:
        return np.arange(n, dtype=np.int64)
    return np.random.Generator(np.random.PCG64([seed, epoch])).permutation(n).astype(np.int64)


@dataclasses.dataclass(frozen=True)
class EpochPlan:
    """One shard's epoch of a dataset of `size` samples.

    Attributes:
        size: samples in the dataset.
        batch_size: samples per batch (>= 1).
        seed: the permutation's seed.
        epoch: the epoch (part of the permutation's seed).
        shuffle: permute (True) or keep index order.
        num_shards: how many disjoint shards (>= 1).
        shard_index: this shard, in 0..num_shards-1.
        drop_last: cut the tail so that all shards have the same number of full batches.
        sharding: "contiguous" or "strided".
    """

    size: int
    batch_size: int
    seed: int = 0
    epoch: int = 0
    shuffle: bool = True
    num_shards: int = 1
    shard_index: int = 0
    drop_last: bool = False
    sharding: str = "contiguous"

    def __post_init__(self) -> None:
        if self.size < 0 or self.batch_size < 1 or self.num_shards < 1:
            raise ValueError("size >= 0, batch_size >= 1 and num_shards >= 1 are required")
        if not 0 <= self.shard_index < self.num_shards:
            raise ValueError(f"shard_index {self.shard_index} is not in 0..{self.num_shards - 1}")
        if self.sharding not in SHARDINGS:
            raise ValueError(f"sharding: expected one of {SHARDINGS}, got {self.sharding!r}")

    def shard_indices(self) -> np.ndarray:
        """This shard's sample indices, in epoch order (computed once per plan)."""
        return self._shard_indices

    @functools.cached_property
    def _shard_indices(self) -> np.ndarray:
        order = permutation(self.size, self.seed, self.epoch, self.shuffle)
        k = self.num_shards
        if self.drop_last:
            per_shard = (self.size // (k * self.batch_size)) * self.batch_size
            order = order[: per_shard * k]
        if self.sharding == "strided":
            return order[self.shard_index :: k]
        return np.array_split(order, k)[self.shard_index]

    def num_batches(self) -> int:
        """How many batches this shard's epoch has."""
        n = len(self.shard_indices())
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def batches(self, start: int = 0, stride: int = 1) -> list[np.ndarray]:
        """The batches at positions start, start + stride, ... (each an int64 index array)."""
        indices = self.shard_indices()
        count = len(indices) // self.batch_size if self.drop_last else -(
            -len(indices) // self.batch_size)
        b = self.batch_size
        return [indices[p * b : (p + 1) * b] for p in range(start, count, max(stride, 1))]
