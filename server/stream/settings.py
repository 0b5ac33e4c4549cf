"""Settings of the stream service (the `[stream]` table of the server config)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from augserve.clients.ring import MAX_SLOTS
from augserve.server.data.datasets import DatasetSpec

BUILTIN_DATASETS: dict[str, DatasetSpec] = {
    "digits": DatasetSpec("builtin", name="digits"),
    "lfw_subset": DatasetSpec("builtin", name="lfw_subset"),
    "photos": DatasetSpec("builtin", name="photos"),
}
"""Registered on every server: scikit-learn's digits, scikit-image's LFW subset and photos."""

CORRUPT_POLICIES = ("skip", "fail")


@dataclasses.dataclass(frozen=True)
class StreamSettings:
    """Limits, pool shape and datasets of the StreamBatches RPC; defaults documented here.

    Attributes:
        window: batches in flight per stream (submitted to the pool, not yet sent): 8.
            It bounds what one stream holds on the server to about `window` batches; a
            reader that stops reading stops production once the window is full.
        max_batch_size: the largest batch a request may ask for: 1024.
        max_streams: streams served at once; one more gets RESOURCE_EXHAUSTED: 64
            (with `window`, it bounds what all streams hold together).
        cache_bytes: each worker's cache of decoded folder images, in bytes: 512 MiB.
        pool_size: Ray actors making batches (shared by all streams): 2; 0 runs them on a
            thread of the server process (tests, tiny deployments).
        actor_num_cpus: CPUs each actor reserves: 1 (its kernels run on one thread).
        backend: augmentation backend of the workers: "auto", "fast" or "kornia".
        on_corrupt: a corrupt image file is logged with its path, then "skip"ped (the
            batch is one sample shorter and lists it in `skipped`) or "fail"s the stream
            with FAILED_PRECONDITION; requests may override it: "skip".
        max_retries: times one batch is resubmitted after its actor died: 3.
        shared_memory_dir: where same-host streams that ask for it get their
            shared-memory rings (a tmpfs); "" turns the transport off: "/dev/shm".
        shared_memory_slots: a ring's slots beyond the window: one for the batch on
            its way, the others for batches the client keeps in place (zero-copy) until
            it drops them: 6; a ring has `window + shared_memory_slots`.
        datasets: extra datasets, name -> `DatasetSpec` or its table, e.g.
            `{"train": {"kind": "folder", "path": "/data/train"}}`; "digits",
            "lfw_subset" and "photos" are always registered.
    """

    window: int = 8
    max_batch_size: int = 1024
    max_streams: int = 64
    cache_bytes: int = 512 << 20
    pool_size: int = 2
    actor_num_cpus: float = 1.0
    backend: str = "auto"
    on_corrupt: str = "skip"
    max_retries: int = 3
    shared_memory_dir: str = "/dev/shm"
    shared_memory_slots: int = 6
    datasets: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("window", "max_batch_size", "max_streams"):
            if getattr(self, name) < 1:
                raise ValueError(f"stream settings: {name} must be >= 1")
        if not 1 <= self.window + self.shared_memory_slots <= MAX_SLOTS or (
                self.shared_memory_slots < 1):
            raise ValueError(f"stream settings: shared_memory_slots must be >= 1, and "
                             f"window + shared_memory_slots at most {MAX_SLOTS}")
        for name in ("cache_bytes", "pool_size", "max_retries"):
            if getattr(self, name) < 0:
                raise ValueError(f"stream settings: {name} must be >= 0")
        if self.backend not in ("auto", "fast", "kornia"):
            raise ValueError("stream settings: backend must be auto, fast or kornia")
        if self.on_corrupt not in CORRUPT_POLICIES:
            raise ValueError(f"stream settings: on_corrupt must be one of {CORRUPT_POLICIES}")
        specs = dict(BUILTIN_DATASETS)
        for name, value in self.datasets.items():
            specs[name] = value if isinstance(value, DatasetSpec) else DatasetSpec.from_mapping(
                value)
        object.__setattr__(self, "datasets", specs)
