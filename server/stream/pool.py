"""Stream workers: Ray actors that load, decode and augment one batch of a dataset.

A task names the dataset by its `DatasetSpec` (workers open it lazily, each with its
own byte-bounded cache of decoded images) and carries the sample indices, the pipeline
spec, the seed and the epoch. The augmentation keys depend only on (seed, epoch, sample
index, op), so any worker, or a retry after a worker died, makes the same bytes.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time

import numpy as np

from augserve.server.actors import ActorCall, ActorPool, prepare_worker
from augserve.server.augment.spec import PipelineSpec
from augserve.server.data.datasets import Dataset, DatasetSpec, open_dataset
from augserve.server.images import MAX_IMAGE_PIXELS
from augserve.server.stream import metrics
from augserve.server.stream.ring import Destination, MappedRings

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class BatchTask:
    """One batch to make.

    Attributes:
        dataset: which dataset (reopened in the worker).
        indices: the samples' dataset indices, in batch order.
        spec: the pipeline (its dtype and layout are the stream's).
        seed: the augmentation seed.
        epoch: the epoch (part of every augmentation key).
        on_corrupt: "skip" or "fail".
        destination: a shared-memory ring slot to write the images into instead of
            returning them (same-host streams); a worker that cannot returns them.
    """

    dataset: DatasetSpec
    indices: np.ndarray
    spec: PipelineSpec
    seed: int
    epoch: int
    on_corrupt: str = "skip"
    destination: Destination | None = None


@dataclasses.dataclass
class BatchResult:
    """A made batch.

    Attributes:
        images: [n, ...] array of the kept samples (bfloat16 travels as uint16 bits);
            None when they were written to the task's destination (see `written`).
        dtype: the element type's name ("uint8", "float32", "float16", "bfloat16").
        kept: per task index, whether the sample is in `images`.
        skipped: "path: reason" of each corrupt sample left out.
        error: set when the batch failed (a corrupt file under "fail", or outputs that
            differ in size); the stream ends with it.
        written: the shape of the images written to the task's destination; empty
            when they were not.
    """

    images: np.ndarray | None
    dtype: str
    kept: np.ndarray
    skipped: list[str]
    error: str = ""
    written: tuple[int, ...] = ()

    @property
    def shape(self) -> tuple[int, ...]:
        """The images' shape, wherever they are (empty: no images)."""
        return self.written or (() if self.images is None else self.images.shape)


class StreamWorker:
    """Makes batches in one process, its kernels on `threads` threads."""

    def __init__(self, backend: str = "auto", threads: int = 1, cache_bytes: int = 0,
                 max_pixels: int = MAX_IMAGE_PIXELS) -> None:
        """Set the process up for a pool (`prepare_worker`): `threads` threads, deterministic.

        Folder images over `max_pixels` pixels are refused from their header.
        """
        prepare_worker(threads)
        self.backend = backend
        self.cache_bytes = cache_bytes
        self.max_pixels = max_pixels
        self._datasets: dict[DatasetSpec, Dataset] = {}
        self._rings = MappedRings()
        # The in-process worker makes batches on several threads: a dataset is opened once,
        # by one of them (concurrent opens also raced inside CPython 3.11's parser, via
        # np.load's header parsing: "AST constructor recursion depth mismatch").
        self._opening = threading.Lock()

    def _dataset(self, spec: DatasetSpec) -> Dataset:
        with self._opening:
            if spec not in self._datasets:
                self._datasets[spec] = open_dataset(spec, self.cache_bytes,
                                                      self.max_pixels)
            return self._datasets[spec]

    def ping(self) -> bool:
        """True once the worker is up (used to wait for a fresh pool)."""
        return True

    def cpu_seconds(self) -> float:
        """CPU time this worker's process has used (the benchmark's per-batch cost)."""
        return time.process_time()

    def make_batch(self, task: BatchTask) -> BatchResult:
        """Load (or region-decode), augment and hand over `task`'s samples (`make_samples`)."""
        import torch

        from augserve.server.augment.pipeline import Pipeline
        from augserve.server.stream.samples import make_samples

        made = make_samples(self._dataset(task.dataset), task.indices,
                            Pipeline(task.spec, self.backend), task.seed, task.epoch,
                            task.on_corrupt)
        kept, skipped, out = made.kept, made.skipped, made.out
        if made.error or out is None:
            return BatchResult(None, task.spec.dtype, kept, skipped, made.error)
        if not isinstance(out, torch.Tensor):
            return BatchResult(None, task.spec.dtype, kept, skipped,
                               "the pipeline's outputs differ in size; end it with a resize "
                               "or a crop to one size")
        if out.dtype == torch.bfloat16:
            out = out.view(torch.int16)
        images = out.contiguous().numpy()
        if task.destination is not None and self._rings.write(task.destination, images):
            return BatchResult(None, task.spec.dtype, kept, skipped, written=images.shape)
        return BatchResult(images, task.spec.dtype, kept, skipped)


class StreamPool(ActorPool[StreamWorker]):
    """`size` StreamWorker actors shared by all streams (size 0: one in-process worker).

    An `ActorPool`: `submit` sends a task to the least busy actor, and `result` makes it
    again on a fresh actor if its actor dies.

    Example:
        >>> pool = StreamPool(size=2)  # doctest: +SKIP
        >>> batch = await pool.result(pool.submit(task), max_retries=3)  # doctest: +SKIP
    """

    def __init__(self, size: int = 2, backend: str = "auto", num_cpus: float = 1.0,
                 cache_bytes: int = 0, max_pixels: int = MAX_IMAGE_PIXELS,
                 placement: str = "spread") -> None:
        """Describe the pool; actors start on first use (Ray must be initialised).

        `placement`: see `actors.placement_options`.
        """
        super().__init__(StreamWorker, size, (backend, 1, cache_bytes, max_pixels), num_cpus,
                         placement=placement)
        self.backend = backend
        self.cache_bytes = cache_bytes

    def submit(self, task: BatchTask) -> ActorCall:
        """Send `task` to the least busy actor."""
        return self.call("make_batch", task)

    def on_resubmit(self) -> None:
        """Count the batch made again in the stream metrics."""
        metrics.RESUBMITTED.inc()
