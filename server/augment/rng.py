"""Counter-based randomness: every draw is a pure function of (seed, epoch, sample, op, counter).

No generator state exists: the key of a sample for an op is a SplitMix64 hash of
(seed, epoch, sample index, op index), and draw number `j` of that key is the hash
of (key, j). A sample therefore gets the same numbers whatever batch it sits in,
whichever worker runs it and however often it is retried.

Example:
    >>> keys = Keys.for_op(seed=7, epoch=0, sample_indices=np.arange(3), op_index=1)
    >>> keys.uniform(0).shape
    torch.Size([3])

"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_MASK64 = (1 << 64) - 1


def _mix(z: np.ndarray) -> np.ndarray:
    """The SplitMix64 finaliser, element-wise on uint64 (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


def _absorb(state: np.ndarray, value: np.ndarray | int) -> np.ndarray:
    with np.errstate(over="ignore"):
        return _mix(state ^ (np.asarray(value, dtype=np.uint64) + _GOLDEN))


def check_seed(seed: int, name: str = "seed") -> int:
    """Return `seed` as an int in [0, 2**64), or raise ValueError naming `name`."""
    if not isinstance(seed, int | np.integer) or isinstance(seed, bool):
        raise ValueError(f"{name} must be an integer, got {type(seed).__name__}")
    if not 0 <= int(seed) <= _MASK64:
        raise ValueError(f"{name} must lie in [0, 2**64), got {seed}")
    return int(seed)


@dataclass(frozen=True)
class Keys:
    """Per-sample uint64 keys of one op; each draw index gives an independent stream.

    Attributes:
        values: (n,) uint64, one key per sample.

    """

    values: np.ndarray

    @staticmethod
    def for_op(seed: int, epoch: int, sample_indices: np.ndarray, op_index: int) -> Keys:
        """The keys of op `op_index` for the samples `sample_indices` of (seed, epoch)."""
        indices = np.asarray(sample_indices, dtype=np.int64)
        if indices.size and indices.min() < 0:
            raise ValueError("sample indices must be >= 0")
        state = _mix(np.full(indices.shape, np.uint64(check_seed(seed)), dtype=np.uint64))
        state = _absorb(state, check_seed(epoch, "epoch"))
        state = _absorb(state, indices.astype(np.uint64))
        return Keys(_absorb(state, op_index))

    def __len__(self) -> int:
        return int(self.values.shape[0])

    def bits(self, draw: int) -> np.ndarray:
        """64 random bits per sample for draw number `draw`, as uint64 (n,)."""
        return _absorb(self.values, draw)

    def uniform(self, draw: int, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
        """Uniform float64 in [low, high) per sample for draw number `draw`."""
        unit = (self.bits(draw) >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))
        return torch.from_numpy(low + (high - low) * unit)

    def uniform_table(self, draws: int) -> torch.Tensor:
        """Uniform float64 in [0, 1) for draws 0..draws-1 at once: shape (n, draws)."""
        table = _absorb(self.values[:, None], np.arange(draws, dtype=np.uint64)[None, :])
        return torch.from_numpy((table >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53)))

    def integers(self, draw: int, high: torch.Tensor) -> torch.Tensor:
        """Integers in [0, high) per sample (high >= 1, int64 (n,)) for draw `draw`."""
        return torch.floor(self.uniform(draw) * high.to(torch.float64)).to(torch.int64)
