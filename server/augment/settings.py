"""Settings of the augment service (to be folded into the central config)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping


@dataclasses.dataclass(frozen=True)
class AugmentSettings:
    """Limits and pool shape of the Augment RPC; every default is documented here.

    Attributes:
        max_pixels: the most pixels (H * W) one image may have: 16.7M (4096 x 4096).
        max_images: the most images one request may carry: 1024.
        max_request_pixels: the most pixels over all images of a request: 64M.
        pool_size: Ray actors in the augment pool: 2. 0 runs in-process (a thread),
            which tests and tiny deployments may want.
        actor_num_cpus: CPUs each actor reserves: 1 (each runs its kernels on one thread).
        actor_num_gpus: GPUs (or a fraction) each actor reserves: 0. Ray hides GPUs from
            actors that reserve none, so set it (e.g. 0.25) for kornia on CUDA.
        chunk_size: images per actor task; a request is cut into chunks that run in
            parallel: 64.
        backend: "auto" (kornia on CUDA when present, else the CPU fast path), "fast" or
            "kornia".
        pipelines: registered pipelines, id -> JSON spec; "imagenet_train" is built in.
    """

    max_pixels: int = 4096 * 4096
    max_images: int = 1024
    max_request_pixels: int = 64 * 1024 * 1024
    pool_size: int = 2
    actor_num_cpus: float = 1.0
    actor_num_gpus: float = 0.0
    chunk_size: int = 64
    backend: str = "auto"
    pipelines: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("max_pixels", "max_images", "max_request_pixels", "chunk_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"augment settings: {name} must be >= 1")
        if self.actor_num_gpus < 0 or self.actor_num_cpus < 0:
            raise ValueError("augment settings: actor_num_cpus and actor_num_gpus must be >= 0")
        if self.pool_size < 0:
            raise ValueError("augment settings: pool_size must be >= 0")
        if self.backend not in ("auto", "fast", "kornia"):
            raise ValueError("augment settings: backend must be auto, fast or kornia")
