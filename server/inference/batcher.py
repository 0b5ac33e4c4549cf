"""The dynamic batcher: dispatch and failure policy for one model version's replicas.

Which requests form a batch, and when it may go, is `batch_formation`'s; this module
sends the batches and handles their failures. Each request is one `QueuedRequest`
with its own future. The dispatcher is work-conserving: when a replica is free it
takes what is queued at once (no added wait when the server is idle), so batches
grow only while every replica is busy, or while a configured fill delay holds them
(see `BatchFormer.fill_wait_s`). A replica that frees takes its next batch before
the callers of the batch it finished are answered, and a request that finds a
replica idle is sent from `submit` itself: answering callers and reading requests
queue work on the event loop, and a replica should not idle behind it.

Failure policy. A batch that fails is split into single requests, so only the
request that makes the model raise fails; the queue keeps going. A replica whose
process died (`ReplicaDied`) leaves the rotation and is restarted, and its batch
goes back to the head of the queue for another replica (inference is idempotent).
A request whose batch loses `max_replica_deaths` replicas fails with UNAVAILABLE,
so an input that crashes the model process costs at most that many restarts.
While no replica is left the queue holds its requests for at most
`no_replica_wait_s` (the time a restart usually takes); past it, the queued requests
and those that arrive until a replica is back get UNAVAILABLE at once, naming the model
and the replicas it lost, so that a caller learns it in seconds and may retry
elsewhere rather than wait out its deadline behind a restart that a loaded host
stretches to a minute. If a restart fails they get UNAVAILABLE too (a replacement that
itself dies while it starts, killed or on a lost node, is tried again, up to
`RESTART_ATTEMPTS` times). Errors that are
not augserve's reach the caller as INTERNAL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import numpy as np

from augserve.server.errors import (
    AugserveError,
    DeadlineExceeded,
    Internal,
    ReplicaDied,
    ResourceExhausted,
    Unavailable,
)
from augserve.server.inference.batch_formation import BatchFormer, QueuedRequest
from augserve.server.inference.model_config import BatchingSettings
from augserve.server.inference.settings import InferenceSettings
from augserve.server.inference.statistics import ModelStats
from augserve.server.inference.timing import BatchTiming

log = logging.getLogger(__name__)

# What a replica call gives once awaited: the outputs and the replica's timing.
BatchAnswer = Awaitable[tuple[list[np.ndarray], BatchTiming]]
# A replica call: for each model input, the requests' arrays to stack on dim 0 (one
# array per input when unbatched) in. It should send the batch before it returns (an
# async function also works, but its batch leaves only when the event loop runs it).
RunBatch = Callable[[list[list[np.ndarray]]], BatchAnswer]
# Replaces the dead replica at an index with a fresh one; returns its RunBatch.
RestartReplica = Callable[[int], Awaitable[RunBatch]]
# Replacements tried for one dead replica when each dies while starting (killed, or its node
# lost): a fault of the host, not of the model, so the model is not given up at the first.
RESTART_ATTEMPTS = 3

@dataclass
class _Replica:
    run: RunBatch
    in_flight: int = 0
    alive: bool = True


class BatchQueue:
    """Queue, batch and run requests of one model version on its replicas.

    Args:
        replicas: one callable per replica that runs a batch (a Ray actor method).
        max_batch_size: most rows per batch; 0 runs every request alone, unbatched.
        batching: queue size, delay, preferred sizes, default timeout.
        stats: where queue and compute times are recorded.
        max_in_flight: batches sent to one replica before it is considered busy.
        restart: starts a replacement for a replica that died; without it a dead
            replica simply leaves the rotation.
        max_replica_deaths: replica deaths a request may ride through before it fails
            (`InferenceSettings.max_replica_deaths`).
        no_replica_wait_s: how long requests wait while every replica is down
            (`InferenceSettings.no_replica_wait_s`).

    """

    def __init__(
        self,
        replicas: Sequence[RunBatch],
        max_batch_size: int,
        batching: BatchingSettings,
        stats: ModelStats,
        max_in_flight: int = 1,
        restart: RestartReplica | None = None,
        max_replica_deaths: int = InferenceSettings.max_replica_deaths,
        no_replica_wait_s: float = InferenceSettings.no_replica_wait_s,
    ) -> None:
        self._replicas = [_Replica(run) for run in replicas]
        self._restart = restart
        self._broken: Unavailable | None = None
        self._no_replica_wait_s = no_replica_wait_s
        self._down: Unavailable | None = None  # set once every replica has been down too long
        self._down_timer: asyncio.Task[None] | None = None
        self._max_batch_size = max_batch_size
        self._batching = batching
        self._stats = stats
        self._max_in_flight = max_in_flight
        self._former = BatchFormer(max_batch_size, batching)
        self._max_replica_deaths = max_replica_deaths
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()  # set, once closed, when nothing is queued or running
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self._dispatcher = asyncio.create_task(self._dispatch_forever())

    @property
    def queued(self) -> int:
        """Requests waiting for a replica."""
        return len(self._former)

    async def submit(
        self, inputs: list[np.ndarray], client_deadline_s: float | None
    ) -> list[np.ndarray]:
        """Queue one request and wait for its outputs.

        Args:
            inputs: one array per model input; with batching, dim 0 is the batch.
            client_deadline_s: seconds left before the caller's own deadline. gRPC enforces
                it (it cancels this call, and the dispatcher then skips the request); here it
                only drops the request if it is still queued when the deadline passes.

        Raises:
            ResourceExhausted: the queue is full.
            DeadlineExceeded: the model's `default_timeout_microseconds` passed, or the
                caller's deadline passed while the request was queued.
            Unavailable: the model is being unloaded, or every replica has been down
                for `no_replica_wait_s`.

        """
        if self._closed:
            raise Unavailable("the model is being unloaded")
        if self._broken is not None:
            raise self._broken
        if self._down is not None:
            raise self._down
        if len(self._former) >= self._batching.max_queue_size:
            raise ResourceExhausted(
                f"the model's queue is full ({self._batching.max_queue_size} requests); retry later"
            )
        model_timeout = self._batching.default_timeout_microseconds / 1e6 or None
        limits = [t for t in (client_deadline_s, model_timeout) if t is not None]
        rows = inputs[0].shape[0] if self._max_batch_size else 1
        item = QueuedRequest(
            inputs=inputs,
            rows=rows,
            future=asyncio.get_running_loop().create_future(),
            enqueued_ns=time.perf_counter_ns(),
            deadline=time.monotonic() + min(limits) if limits else None,
        )
        self._former.add(item)
        self._dispatch_now()  # an idle replica takes it now, not on the loop's next turn
        try:
            if model_timeout is None:
                # No timer per request on the hot path: cancelling this call cancels the item.
                return await item.future
            return await asyncio.wait_for(asyncio.shield(item.future), model_timeout)
        except TimeoutError:
            raise DeadlineExceeded(f"no result within the {model_timeout:.3f}s timeout") from None
        finally:
            if not item.future.done():
                item.future.cancel()  # the dispatcher skips it

    def swap(self, index: int, run: RunBatch) -> bool:
        """Send replica `index`'s next batches to `run` (batches already sent finish there).

        Returns:
            False, changing nothing, if the replica is down (its restart owns the slot) or
            the queue is closed.
        """
        replica = self._replicas[index]
        if self._closed or not replica.alive:
            return False
        replica.run = run
        return True

    async def close(self) -> None:
        """Stop taking requests, let queued and running batches finish, stop the dispatcher."""
        self._closed = True
        if self._down_timer is not None:
            self._down_timer.cancel()
        self._dispatch_now()
        self._note_if_drained()
        await self._drained.wait()
        self._dispatcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._dispatcher

    def _busy(self) -> bool:
        return any(r.in_flight for r in self._replicas)

    def _note_if_drained(self) -> None:
        """Once closed, wake `close` when nothing is queued or running any more."""
        if self._closed and not self._former and not self._busy():
            self._drained.set()

    def _free_replica(self) -> _Replica | None:
        free = [r for r in self._replicas if r.alive and r.in_flight < self._max_in_flight]
        return min(free, key=lambda r: r.in_flight) if free else None

    def _dispatch_ready(self) -> float | None:
        """Launch every batch that may start now.

        Returns:
            seconds until the head batch may go without filling further, or None when
            nothing can go until a request arrives or a replica frees.
        """
        former = self._former
        while True:
            former.drop_finished()
            replica = self._free_replica()
            if not former or replica is None:
                return None
            wait = former.fill_wait_s(self._busy)
            if wait > 0:
                return wait
            self._launch(replica, former.take())

    def _dispatch_now(self) -> None:
        """Launch what may go now; wake the dispatcher only to time a batch's fill delay."""
        if self._dispatch_ready() is not None:
            self._wake.set()

    async def _dispatch_forever(self) -> None:
        while True:
            wait = self._dispatch_ready()
            self._note_if_drained()
            self._wake.clear()
            if wait is None:
                await self._wake.wait()
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait)

    def _launch(self, replica: _Replica, batch: list[QueuedRequest]) -> None:
        """Send `batch` to `replica` now, and finish it in a task."""
        replica.in_flight += 1
        task = asyncio.create_task(self._run(replica, batch, *self._send(replica, batch)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    def _send(replica: _Replica, batch: list[QueuedRequest]) -> tuple[int, BatchAnswer]:
        """Hand `batch` to `replica`; (the time it left, in ns, and its answer)."""
        started_ns = time.perf_counter_ns()
        parts = [list(arrays) for arrays in zip(*(item.inputs for item in batch), strict=True)]
        try:
            return started_ns, replica.run(parts)
        except Exception as error:  # a replica that cannot even take the batch
            return started_ns, BatchQueue._failed(error)

    @staticmethod
    async def _failed(error: Exception) -> tuple[list[np.ndarray], BatchTiming]:
        raise error

    async def _run(
        self, replica: _Replica, batch: list[QueuedRequest], started_ns: int, answer: BatchAnswer
    ) -> None:
        held = True

        def release() -> None:
            # The replica takes its next batch before this one's callers are answered:
            # answering them queues work on the event loop that the replica need not wait for.
            nonlocal held
            if held:
                held = False
                replica.in_flight -= 1
                self._dispatch_now()
                if self._closed:
                    self._note_if_drained()

        try:
            try:
                await self._finish(batch, started_ns, answer, release)
            except ReplicaDied as error:  # the process is gone: nothing to isolate
                self._requeue_or_fail(batch, error)
                self._replace(replica, error)
            except Unavailable as error:
                self._fail(batch, error)
            except Exception as error:
                if len(batch) == 1:
                    self._fail(batch, error)
                    return
                # One request that makes the model raise must not fail its batch-mates:
                # rerun each alone, so only the culprit sees the error.
                log.warning("batch of %d requests failed (%s); isolating", len(batch), error)
                for item in batch:
                    if item.future.done():
                        continue
                    try:
                        await self._finish([item], *self._send(replica, [item]), lambda: None)
                    except Exception as item_error:
                        self._fail([item], item_error)
        finally:
            release()

    async def _finish(
        self, batch: list[QueuedRequest], started_ns: int, answer: BatchAnswer,
        on_return: Callable[[], None],
    ) -> None:  # fmt: skip
        """Await the batch's answer, call `on_return`, then answer each request."""
        rows = sum(item.rows for item in batch)
        outputs, timing = await answer
        returned_ns = time.perf_counter_ns()
        on_return()
        self._deliver(batch, outputs, rows)
        done_ns = time.perf_counter_ns()
        # compute_input: the round trip and the preprocessing, all but the model's own time
        infer_ns = timing.compute_ns
        self._stats.record_batch(
            rows, returned_ns - started_ns - infer_ns, infer_ns, done_ns - returned_ns
        )
        if timing.images:
            self._stats.record_preprocess(timing)
        for item in batch:
            self._stats.record_request(
                True, done_ns - item.enqueued_ns, started_ns - item.enqueued_ns, item.rows
            )

    def _requeue_or_fail(self, batch: list[QueuedRequest], error: ReplicaDied) -> None:
        """Put the batch's live requests back at the head of the queue, in order."""
        retry = []
        for item in batch:
            item.replica_deaths += 1
            if item.future.done():
                continue
            if item.replica_deaths >= self._max_replica_deaths:
                self._fail([item], ReplicaDied(
                    f"{error}; this request's batch lost {item.replica_deaths} replicas"
                ))
            else:
                retry.append(item)
        self._former.put_back(retry)
        self._wake.set()

    def _replace(self, replica: _Replica, error: ReplicaDied) -> None:
        if not replica.alive:
            return
        replica.alive = False
        log.error("%s", error)
        if self._restart is None or self._closed:
            self._give_up_if_none_alive(error)
            return
        if not any(r.alive for r in self._replicas) and self._down_timer is None:
            self._down_timer = asyncio.create_task(self._fail_while_down())
        task = asyncio.create_task(self._revive(replica))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _revive(self, replica: _Replica) -> None:
        assert self._restart is not None
        for attempt in range(1, RESTART_ATTEMPTS + 1):
            try:
                replica.run = await self._restart(self._replicas.index(replica))
                break
            except ReplicaDied as error:  # the replacement's own process died (killed, its
                # node lost) while it started: the model itself may be fine, start another
                if attempt == RESTART_ATTEMPTS or self._closed:
                    self._give_up_if_none_alive(Unavailable(
                        f"a replica died and {attempt} replacements died while starting: {error}"))
                    return
                log.warning("a replacement replica died while starting (%s); starting another",
                            error)
            except Exception as error:  # the model no longer starts: say so to every caller
                log.exception("a replica could not be restarted")
                self._give_up_if_none_alive(
                    Unavailable(f"a replica died and could not be restarted: {error}")
                )
                return
        replica.alive = True
        self._down = None
        if self._down_timer is not None:
            self._down_timer.cancel()
            self._down_timer = None
        self._wake.set()

    async def _fail_while_down(self) -> None:
        """Every replica is down: past the wait, fail queued and new requests until one is back."""
        await asyncio.sleep(self._no_replica_wait_s)
        self._down_timer = None
        if any(r.alive for r in self._replicas):
            return
        total = len(self._replicas)
        self._down = Unavailable(
            f"model {self._stats.name!r} version {self._stats.version} has no live replica: "
            f"it lost {total} of its {total} replicas and none has restarted within "
            f"{self._no_replica_wait_s:g}s; retry later"
        )
        self._former.fail_all(self._down)
        self._note_if_drained()

    def _give_up_if_none_alive(self, error: Unavailable) -> None:
        if any(r.alive for r in self._replicas):
            return
        self._broken = error
        self._former.fail_all(error)
        self._note_if_drained()

    def _fail(self, batch: list[QueuedRequest], error: Exception) -> None:
        failure = (
            error
            if isinstance(error, AugserveError)
            else Internal(f"the model failed: {type(error).__name__}: {error}")
        )
        now_ns = time.perf_counter_ns()
        for item in batch:
            self._stats.record_request(False, now_ns - item.enqueued_ns, 0, item.rows)
            if not item.future.done():
                item.future.set_exception(failure)

    def _deliver(self, batch: list[QueuedRequest], outputs: list[np.ndarray], rows: int) -> None:
        if not self._max_batch_size:
            if not batch[0].future.done():
                batch[0].future.set_result(outputs)
            return
        for output in outputs:
            if output.shape[0] != rows:
                raise Internal(f"the model returned {output.shape[0]} rows for a batch of {rows}")
        offset = 0
        for item in batch:
            part = [output[offset : offset + item.rows] for output in outputs]
            offset += item.rows
            if not item.future.done():
                item.future.set_result(part)
