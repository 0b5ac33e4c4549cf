"""A least-recently-used cache of decoded images, bounded in bytes (not in entries).

Example:
    >>> cache = ByteLRU(max_bytes=1000)
    >>> cache.put("a", np.zeros(600, np.uint8))
    >>> cache.put("b", np.zeros(600, np.uint8))  # evicts "a": 1200 > 1000
    >>> cache.get("a") is None, cache.nbytes
    (True, 600)
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable

import numpy as np


class ByteLRU:
    """Maps keys to arrays; evicts the least recently used until the bytes fit.

    An array larger than the whole budget is not cached. Not thread-safe: each stream
    worker (a Ray actor, one task at a time) owns one.
    """

    def __init__(self, max_bytes: int) -> None:
        """`max_bytes` >= 0; 0 disables caching."""
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = max_bytes
        self.nbytes = 0
        self.hits = 0
        self.misses = 0
        self._items: OrderedDict[Hashable, np.ndarray] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: Hashable) -> np.ndarray | None:
        """The cached array (now most recently used), or None."""
        value = self._items.get(key)
        if value is None:
            self.misses += 1
            return None
        self._items.move_to_end(key)
        self.hits += 1
        return value

    def put(self, key: Hashable, value: np.ndarray) -> None:
        """Cache `value` under `key`, evicting old entries to stay within `max_bytes`."""
        size = int(value.nbytes)
        old = self._items.pop(key, None)
        if old is not None:
            self.nbytes -= int(old.nbytes)
        if size > self.max_bytes:
            return
        self._items[key] = value
        self.nbytes += size
        while self.nbytes > self.max_bytes:
            _, evicted = self._items.popitem(last=False)
            self.nbytes -= int(evicted.nbytes)
