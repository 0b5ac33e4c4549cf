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
5. Elastic resumption: `consumed` lists what earlier trainer layouts (each a
   `Consumed`: its shard count, sharding, drop_last, batch size, and how many batches
   each of its shards had consumed) took of this epoch, oldest first. Each layout split
   what the ones before it left, in order; the plan splits what they all left, in
   order, by steps 2-4. So S trainers can hand an epoch over to S' != S, and the new
   shards cover exactly the samples not consumed yet, each once.

Example:
    >>> plan = EpochPlan(10, batch_size=3, seed=0, epoch=0, shuffle=False, num_shards=2,
    ...                  shard_index=1)
    >>> [b.tolist() for b in plan.batches()]
    [[5, 6, 7], [8, 9]]
    >>> two = Consumed(num_shards=2, batch_size=3, batches=(1, 1))  # 0-2 and 5-7 are done
    >>> plan = EpochPlan(10, batch_size=2, shuffle=False, consumed=(two,))
    >>> [b.tolist() for b in plan.batches()]
    [[3, 4], [8, 9]]
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


def _check_layout(num_shards: int, batch_size: int, sharding: str) -> None:
    if batch_size < 1 or num_shards < 1:
        raise ValueError("batch_size >= 1 and num_shards >= 1 are required")
    if sharding not in SHARDINGS:
        raise ValueError(f"sharding: expected one of {SHARDINGS}, got {sharding!r}")


def _kept(length: int, num_shards: int, batch_size: int, drop_last: bool) -> int:
    """How many of `length` ordered samples the shards hold (drop_last cuts the tail)."""
    if drop_last:
        return (length // (num_shards * batch_size)) * batch_size * num_shards
    return length


def split(order: np.ndarray, num_shards: int, shard_index: int, batch_size: int,
          drop_last: bool = False, sharding: str = "contiguous") -> np.ndarray:
    """Shard `shard_index`'s samples of `order` (steps 2-3 of the module docstring)."""
    order = order[: _kept(len(order), num_shards, batch_size, drop_last)]
    if sharding == "strided":
        return order[shard_index::num_shards]
    return np.array_split(order, num_shards)[shard_index]


@dataclasses.dataclass(frozen=True)
class Consumed:
    """The batches one layout of trainers consumed of an epoch before their number changed.

    Attributes:
        num_shards: that layout's shard count.
        batch_size: its batch size.
        batches: per shard (num_shards of them), how many of its first batches were
            consumed; a count past the shard's end means all of it.
        drop_last: its drop_last.
        sharding: its sharding, "contiguous" or "strided".
    """

    num_shards: int
    batch_size: int
    batches: tuple[int, ...]
    drop_last: bool = False
    sharding: str = "contiguous"

    def __post_init__(self) -> None:
        _check_layout(self.num_shards, self.batch_size, self.sharding)
        if len(self.batches) != self.num_shards or min(self.batches) < 0:
            raise ValueError(f"batches: expected {self.num_shards} counts >= 0, "
                             f"got {list(self.batches)}")

    def mask(self, length: int) -> np.ndarray:
        """Which of `length` ordered samples this layout consumed (a bool array).

        Vectorized over the shards: one pass over the order whatever their number.
        """
        k, b = self.num_shards, self.batch_size
        kept = _kept(length, k, b, self.drop_last)
        taken = np.array([min(c, length) for c in self.batches], np.int64) * b
        if self.sharding == "strided":  # sample q * k + r is shard r's q-th: one row per q
            rows = np.arange(-(-kept // k))[:, None]
            consumed = (rows < taken[None, :]).reshape(-1)[:kept]
        else:  # array_split: the first kept % k shards hold one sample more
            sizes = np.full(k, kept // k, np.int64)
            sizes[: kept % k] += 1
            starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
            edges = np.zeros(kept + 1, np.int64)
            np.add.at(edges, starts, 1)
            np.add.at(edges, starts + np.minimum(taken, sizes), -1)
            consumed = np.cumsum(edges[:kept]) > 0
        return np.concatenate([consumed, np.zeros(length - kept, bool)])


def remaining(order: np.ndarray, consumed: tuple[Consumed, ...]) -> np.ndarray:
    """`order` less what the layouts of `consumed` took, oldest first, in order."""
    for layout in consumed:
        order = order[~layout.mask(len(order))]
    return order


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
        consumed: what earlier trainer layouts consumed of this epoch, oldest first
            (elastic resumption); the shards split the rest.
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
    consumed: tuple[Consumed, ...] = ()

    def __post_init__(self) -> None:
        if self.size < 0:
            raise ValueError("size >= 0 is required")
        _check_layout(self.num_shards, self.batch_size, self.sharding)
        if not 0 <= self.shard_index < self.num_shards:
            raise ValueError(f"shard_index {self.shard_index} is not in 0..{self.num_shards - 1}")

    def shard_indices(self) -> np.ndarray:
        """This shard's sample indices, in epoch order (computed once per plan)."""
        return self._shard_indices

    @functools.cached_property
    def _shard_indices(self) -> np.ndarray:
        order = remaining(permutation(self.size, self.seed, self.epoch, self.shuffle),
                          self.consumed)
        return split(order, self.num_shards, self.shard_index, self.batch_size,
                     self.drop_last, self.sharding)

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
