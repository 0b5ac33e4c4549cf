"""A pool of Ray actors that run pipelines; determinism holds whatever the pool size.

A request is cut into chunks; each chunk travels with its samples' dataset indices
(and replayed params), so an actor draws exactly what one big batch would have
drawn. The pool is an `ActorPool` (`augserve.server.actors`): a chunk whose actor
died is made again on a fresh actor, and gives the same bytes because the RNG
depends only on (seed, epoch, sample, op).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np
import torch

from augserve.server.actors import ActorPool, prepare_worker
from augserve.server.augment.ops import OpParams
from augserve.server.augment.pipeline import AugmentResult, Pipeline
from augserve.server.augment.spec import PipelineSpec
from augserve.server.augment.targets import Targets


class AugmentWorker:
    """Runs pipelines in one process, on one thread of CPU kernels (or on the GPU)."""

    def __init__(self, backend: str = "auto", threads: int = 1) -> None:
        """Set the process up for a pool (`prepare_worker`): `threads` threads, deterministic."""
        prepare_worker(threads)
        self.backend = backend

    def run(self, spec: PipelineSpec, images: list[np.ndarray], seed: int, epoch: int,
            sample_indices: np.ndarray, params: tuple[OpParams, ...] | None,
            return_params: bool, targets: list[Targets] | None) -> AugmentResult:
        """Run `spec` on one chunk; see `Pipeline.__call__`."""
        return Pipeline(spec, self.backend)(images, seed=seed, epoch=epoch,
                                            sample_indices=sample_indices, params=params,
                                            return_params=return_params, targets=targets)


def images_list(images: torch.Tensor | list[torch.Tensor]) -> list[torch.Tensor]:
    """A batch result as a list of per-image tensors."""
    return list(images.unbind(0)) if isinstance(images, torch.Tensor) else list(images)


def merge_results(parts: Sequence[AugmentResult]) -> AugmentResult:
    """Concatenate chunk results in order (stacking images when their shapes agree)."""
    images = [im for part in parts for im in images_list(part.images)]
    merged: torch.Tensor | list[torch.Tensor] = images
    if images and len({tuple(im.shape) for im in images}) == 1:
        merged = torch.stack(images)
    params = None
    if parts and parts[0].params is not None:
        params = tuple(type(ps[0]).cat(list(ps)) for ps in zip(*(p.params for p in parts),
                                                                 strict=True))
    targets = None
    if parts and parts[0].targets is not None:
        targets = [t for part in parts for t in part.targets or []]
    return AugmentResult(merged, params, targets)


class AugmentPool(ActorPool[AugmentWorker]):
    """`size` Ray actors (or, with size 0, a worker in this process on a thread).

    Example:
        >>> pool = AugmentPool(size=2)  # doctest: +SKIP
        >>> result = await pool.augment(IMAGENET_TRAIN, images, seed=1)  # doctest: +SKIP
    """

    def __init__(self, size: int = 2, backend: str = "auto", num_cpus: float = 1.0,
                 chunk_size: int = 64, num_gpus: float = 0.0, max_retries: int = 3,
                 placement: str = "spread") -> None:
        """Describe the pool; the actors start on first use (Ray must be initialised).

        `max_retries`: how many times a chunk is made again after its actor died;
        `placement`: see `actors.placement_options`.
        """
        super().__init__(AugmentWorker, size, (backend, 1), num_cpus, num_gpus, placement)
        self.backend = backend
        self.chunk_size = chunk_size
        self.max_retries = max_retries

    async def augment(
        self, spec: PipelineSpec, images: Sequence[np.ndarray], seed: int, epoch: int = 0,
        sample_indices: Sequence[int] | np.ndarray | None = None,
        params: tuple[OpParams, ...] | None = None, return_params: bool = False,
        targets: Sequence[Targets] | None = None,
    ) -> AugmentResult:
        """Run `spec` on `images`, chunked over the actors; see `Pipeline.__call__`."""
        n = len(images)
        indices = np.arange(n) if sample_indices is None else np.asarray(sample_indices)
        calls = []
        for start in range(0, n, self.chunk_size):
            sl = slice(start, min(start + self.chunk_size, n))
            rows = list(range(sl.start, sl.stop))
            args = (spec, list(images[sl]), seed, epoch, indices[sl],
                    None if params is None else tuple(p.take(rows) for p in params),
                    return_params, None if targets is None else list(targets[sl]))
            calls.append(self.call("run", *args))
        parts = await asyncio.gather(*(self.result(c, self.max_retries, "chunk")
                                       for c in calls))
        return merge_results(parts)
