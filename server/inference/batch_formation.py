"""Batch formation: which queued requests of one model version go together, and when.

`BatchFormer` holds the queue and knows nothing of replicas or failures. It forms a
batch from the head request and every later live one that has the head's shapes and
fits in `max_batch_size` (0: each request alone); it says how long the head batch
should still wait to fill (`max_queue_delay_microseconds` with a preferred size);
and requests put back after a replica died go to the head, ahead of newcomers.
Requests whose caller went away (cancelled, deadline passed) are dropped here,
before they can join a batch.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from augserve.server.errors import DeadlineExceeded
from augserve.server.inference.model_config import BatchingSettings


@dataclass
class QueuedRequest:
    """One request: its inputs, its caller's future, and when it must be answered by."""

    inputs: list[np.ndarray]
    rows: int
    future: asyncio.Future[list[np.ndarray]]
    enqueued_ns: int
    deadline: float | None  # time.monotonic() seconds
    replica_deaths: int = 0
    signature: tuple[tuple[int, ...], ...] = field(init=False)

    def __post_init__(self) -> None:
        self.signature = tuple(a.shape[1:] for a in self.inputs)

    def expired(self, now: float) -> bool:
        """Whether the request's deadline has passed at `now` (monotonic seconds)."""
        return self.deadline is not None and now >= self.deadline


def _drop(request: QueuedRequest) -> None:
    if not request.future.done():
        request.future.set_exception(DeadlineExceeded("the deadline passed while queued"))


class BatchFormer:
    """The queue of one model version and the rules that cut it into batches.

    Args:
        max_batch_size: most rows per batch; 0 runs every request alone, unbatched.
        batching: the fill delay and preferred sizes.

    """

    def __init__(self, max_batch_size: int, batching: BatchingSettings) -> None:
        self._max_batch_size = max_batch_size
        self._delay_s = batching.max_queue_delay_microseconds / 1e6
        self._fill_target = max(batching.preferred_batch_size, default=max_batch_size)
        self._delay_only_while_busy = batching.delay_only_while_busy
        self._queue: deque[QueuedRequest] = deque()

    def __len__(self) -> int:
        return len(self._queue)

    def add(self, request: QueuedRequest) -> None:
        """Queue `request` behind the others."""
        self._queue.append(request)

    def put_back(self, requests: list[QueuedRequest]) -> None:
        """Queue `requests` at the head, in their order (they were taken before the rest)."""
        self._queue.extendleft(reversed(requests))

    def drop_finished(self) -> None:
        """Drop the head requests that were answered, cancelled or are past their deadline."""
        queue, now = self._queue, time.monotonic()
        while queue and (queue[0].future.done() or queue[0].expired(now)):
            _drop(queue.popleft())

    def fill_wait_s(self, any_busy: Callable[[], bool]) -> float:
        """Seconds the head batch should still wait to fill (0: it goes now).

        With a delay configured, a batch waits for a preferred size (else
        `max_batch_size`) until its oldest request has waited the delay; with
        `delay_only_while_busy`, only while another replica is busy (`any_busy`).
        """
        if not self._delay_s or not self._max_batch_size:
            return 0.0
        if sum(r.rows for r in self._queue) >= self._fill_target:
            return 0.0
        if self._delay_only_while_busy and not any_busy():
            return 0.0
        waited_s = (time.perf_counter_ns() - self._queue[0].enqueued_ns) / 1e9
        return max(0.0, self._delay_s - waited_s)

    def take(self) -> list[QueuedRequest]:
        """Pop the head request and every later live request that fits and has its shapes."""
        head = self._queue.popleft()
        batch, rows = [head], head.rows
        if not self._max_batch_size:
            return batch
        kept: deque[QueuedRequest] = deque()
        now = time.monotonic()
        while self._queue:
            request = self._queue.popleft()
            if request.future.done() or request.expired(now):
                _drop(request)
                continue
            if request.signature == head.signature and rows + request.rows <= self._max_batch_size:
                batch.append(request)
                rows += request.rows
            else:
                kept.append(request)
            if rows == self._max_batch_size:
                break
        kept.extend(self._queue)
        self._queue = kept
        return batch

    def fail_all(self, error: Exception) -> None:
        """Empty the queue, failing every request still waiting with `error`."""
        while self._queue:
            request = self._queue.popleft()
            if not request.future.done():
                request.future.set_exception(error)
