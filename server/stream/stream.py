"""One stream's production: a bounded in-flight window, ordered delivery, resubmission.

`produce` walks a shard's epoch plan. It keeps up to `window` batches submitted to the
pool, waits for the oldest, and yields it; only then does it submit the next one. A
reader that stops reading stops the generator at its `yield`, so production stops once
`window` batches are made: nothing on the server grows with the reader's delay. If the
actor making a batch dies, the batch is submitted again elsewhere; it comes out the same
because augmentation keys depend only on (seed, epoch, sample index, op). When the
consumer goes away (cancellation), the batches still in flight are dropped.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import AsyncIterator

import numpy as np

from augserve.server.actors import ActorCall
from augserve.server.augment.spec import PipelineSpec
from augserve.server.data.datasets import DatasetSpec
from augserve.server.data.epoch import EpochPlan
from augserve.server.errors import FailedPrecondition, InvalidArgument
from augserve.server.stream.pool import BatchResult, BatchTask, StreamPool
from augserve.server.stream.ring import RingWriter


@dataclasses.dataclass(frozen=True)
class StreamJob:
    """A checked request: what to make and which part of the epoch to send.

    Attributes:
        dataset: the dataset's spec (workers reopen it).
        spec: the pipeline, with the stream's dtype and layout.
        plan: this shard's epoch plan.
        start: the first position to send.
        stride: send positions start, start + stride, ...
        on_corrupt: "skip" or "fail".
    """

    dataset: DatasetSpec
    spec: PipelineSpec
    plan: EpochPlan
    start: int = 0
    stride: int = 1
    on_corrupt: str = "skip"


@dataclasses.dataclass(frozen=True)
class MadeBatch:
    """A batch ready to send.

    Attributes:
        position: its position in the shard's epoch.
        indices: the dataset indices of the samples it holds (corrupt ones left out).
        result: the worker's result (images, dtype, skipped files).
    """

    position: int
    indices: np.ndarray
    result: BatchResult


class StreamCounters:
    """Live streams and batches held, for tests and metrics."""

    def __init__(self) -> None:
        self.active_streams = 0
        self.batches_sent = 0


async def produce(pool: StreamPool, job: StreamJob, window: int, max_retries: int = 3,
                  counters: StreamCounters | None = None, ring: RingWriter | None = None
                  ) -> AsyncIterator[MadeBatch]:
    """Yield the job's batches in position order, at most `window` in flight.

    With `ring` (a same-host stream's shared memory), each batch is submitted with the
    ring slot it goes through, once that slot is free, for the worker to write into.

    Raises:
        FailedPrecondition: a corrupt image under the "fail" policy.
        InvalidArgument: the pipeline's outputs differ in size within a batch.
        Unavailable: a batch lost more than `max_retries` workers.
    """
    counters = counters or StreamCounters()
    positions = range(job.start, job.plan.num_batches(), job.stride)
    batches = job.plan.batches(job.start, job.stride)
    todo = iter(zip(positions, batches, strict=True))
    pending: deque[tuple[int, np.ndarray, ActorCall]] = deque()

    async def submit_next() -> None:
        for position, indices in todo:
            destination = None if ring is None else await ring.reserve()
            task = BatchTask(job.dataset, indices, job.spec, job.plan.seed, job.plan.epoch,
                             job.on_corrupt, destination)
            pending.append((position, indices, pool.submit(task)))
            return

    counters.active_streams += 1
    try:
        for _ in range(window):
            await submit_next()
        while pending:
            position, indices, submission = pending[0]
            result = await pool.result(submission, max_retries, what="batch")
            pending.popleft()
            if result.error:
                error = FailedPrecondition if result.skipped else InvalidArgument
                raise error(f"batch {position} of epoch {job.plan.epoch}: {result.error}")
            await submit_next()
            counters.batches_sent += 1
            yield MadeBatch(position, indices[result.kept], result)
    finally:
        counters.active_streams -= 1
        for _, _, submission in pending:
            submission.result.cancel()
        pending.clear()
