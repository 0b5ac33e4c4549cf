"""Warm spares: started, warmed-up replicas of one model version, kept out of rotation.

A replacement replica is a new Ray worker process that imports torch and loads the
model: seconds on a quiet host, 15-50 s on a loaded one, while the model serves on the
replicas it has left (or on none). A `SparePool` keeps `size` such replicas ready, so
that the batcher's restart of a dead replica promotes one at once and a new spare
starts in the background. A spare is a whole replica of its model (its own process,
model copy and Ray resources), built by the same `start_replica`; promoting it changes
nothing in how batches are sent, requeued or answered.

A spare can die while idle (killed, its node lost): every `check_every_s` the pool asks
each spare its node, drops those that do not answer within `answer_within_s` and
starts others; `take` asks again before it hands one out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

from augserve.server.inference.replicas import ReplicaHandle

log = logging.getLogger(__name__)

# A start that failed (the model no longer loads, no node has room) is retried after this
# wait, not at once: the pool must not spin on a model that cannot start.
RETRY_AFTER_S = 5.0


class StartGate:
    """Orders the replica starts of one server: replacements first, spares one at a time.

    Starting a process that imports torch is mostly CPU; after a node loss every model
    replaces replicas and refills spares at once, and on a small host each start then
    takes as long as all of them. A spare start waits until no replacement is under way
    (one for a model that is short of a replica) and runs alone among spare starts.
    """

    def __init__(self) -> None:
        self._replacing = 0
        self._calm = asyncio.Event()
        self._calm.set()
        self._one_spare = asyncio.Lock()

    @contextlib.contextmanager
    def replacing(self) -> Iterator[None]:
        """Marks a replacement under way for the duration of the block."""
        self._replacing += 1
        self._calm.clear()
        try:
            yield
        finally:
            self._replacing -= 1
            if not self._replacing:
                self._calm.set()

    @contextlib.asynccontextmanager
    async def spare_start(self) -> AsyncIterator[None]:
        """Holds a spare start until no replacement is under way and no other spare starts."""
        while True:
            await self._calm.wait()
            await self._one_spare.acquire()
            if self._calm.is_set():
                break
            self._one_spare.release()  # a replacement began meanwhile: it goes first
        try:
            yield
        finally:
            self._one_spare.release()


class SparePool:
    """Up to `size` ready replicas of one model version for the batcher's restarts.

    Args:
        name: the model, for the log.
        size: spares kept ready (0: none, `take` always answers None).
        start: starts, warms up and connects one replica (`replicas.start_replica`): the
            replacement's own start.
        start_spare: the same for a spare (default `start`); the repository's puts spares
            on the server's node, which no node loss takes without taking the server.
        check_every_s: seconds between liveness checks of the idle spares.
        answer_within_s: a spare that does not answer a call within it counts as dead.
        gate: orders the starts among the server's pools (default: this pool's own).

    """

    def __init__(self, name: str, size: int, start: Callable[[], Awaitable[ReplicaHandle]],
                 start_spare: Callable[[], Awaitable[ReplicaHandle]] | None = None,
                 check_every_s: float = 2.0, answer_within_s: float = 2.0,
                 gate: StartGate | None = None) -> None:
        self._name = name
        self._start_spare = start_spare or start
        self._gate = gate or StartGate()
        self._size = size
        self._start = start
        self._check_every_s = check_every_s
        self._answer_within_s = answer_within_s
        self._ready: list[ReplicaHandle] = []
        self._starting: set[asyncio.Task[None]] = set()
        self._waiters: list[asyncio.Future[ReplicaHandle]] = []  # replacements awaiting a spare
        self._background: set[asyncio.Task[None]] = set()
        self._closed = False
        self._watcher: asyncio.Task[None] | None = None
        if size:
            self._fill()
            self._watcher = asyncio.create_task(self._watch())

    @property
    def ready(self) -> int:
        """Spares started and warmed up, not yet handed out."""
        return len(self._ready)

    async def take(self) -> ReplicaHandle | None:
        """A live spare, out of the pool (a new one starts in its place); None if none is ready."""
        while self._ready and not self._closed:
            spare = self._ready.pop(0)
            self._fill()
            if await self._alive(spare):
                log.warning("model %s: a warm spare replica takes over", self._name)
                return spare
            await _stop(spare)
        return None

    async def replacement(self) -> ReplicaHandle:
        """A replica to take a dead one's place: a ready spare, else the first one up.

        With no spare ready, a new replica starts and races the pool's own starts in
        progress: the first up is returned, and a replica started for the other joins
        the pool. Without spares (size 0) this is one plain start.

        Raises:
            AugserveError: the new replica failed to start (as `start_replica` raises).
        """
        with self._gate.replacing():
            spare = await self.take()
            if spare is not None:
                return spare
            log.warning("model %s: no warm spare ready; starting a replica", self._name)
            if not self._size or self._closed:
                return await self._start()
            return await self._first_up()

    async def _first_up(self) -> ReplicaHandle:
        """A fresh start against the pool's starts in progress: the first replica up."""
        waiter: asyncio.Future[ReplicaHandle] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        fresh = asyncio.create_task(self._start())
        await asyncio.wait({fresh, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if waiter.done() and not waiter.cancelled():
            fresh.add_done_callback(self._adopt)
            return waiter.result()
        if waiter in self._waiters:
            self._waiters.remove(waiter)
        waiter.cancel()
        return await fresh

    def _adopt(self, fresh: asyncio.Task[ReplicaHandle]) -> None:
        """A replica started for a replacement that a spare served first: a spare now."""
        if fresh.cancelled() or fresh.exception() is not None:
            return
        if self._closed or len(self._ready) >= self._size:
            task = asyncio.create_task(_stop(fresh.result()))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        else:
            self._ready.append(fresh.result())

    async def close(self) -> None:
        """Stop the watcher and the starts in progress, and the ready spares."""
        self._closed = True
        for waiter in self._waiters:
            waiter.cancel()
        tasks = [*self._starting, *([self._watcher] if self._watcher else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        spares, self._ready = self._ready, []
        await asyncio.gather(*(_stop(spare) for spare in spares))

    def _fill(self) -> None:
        """Start spares until ready and starting ones make `size`."""
        while not self._closed and len(self._ready) + len(self._starting) < self._size:
            task = asyncio.create_task(self._start_one())
            self._starting.add(task)
            task.add_done_callback(self._starting.discard)

    async def _start_one(self) -> None:
        while True:
            try:
                async with self._gate.spare_start():
                    spare = await self._start_spare()
                break
            except Exception as error:  # any failure: log it, try again later
                log.warning("model %s: a warm spare did not start (%s); retrying in %gs",
                            self._name, error, RETRY_AFTER_S)
                await asyncio.sleep(RETRY_AFTER_S)
        # Counted as ready from here, not as starting: a `take` before this task's end
        # must see the pool short of one and start its replacement.
        self._starting.discard(asyncio.current_task())  # type: ignore[arg-type]
        if self._closed or (len(self._ready) >= self._size and not self._waiters):
            await _stop(spare)  # closed, or a replacement's own start filled the pool
            return
        while self._waiters:  # a replacement waits: it gets this spare now
            waiter = self._waiters.pop(0)
            if not waiter.done():
                log.warning("model %s: a warm spare replica takes over", self._name)
                waiter.set_result(spare)
                self._fill()
                return
        self._ready.append(spare)

    async def _alive(self, spare: ReplicaHandle) -> bool:
        """Whether `spare`'s actor answers a call in time (its process and node are up)."""
        try:
            await asyncio.wait_for(spare.actor.node.remote(), self._answer_within_s)
        except Exception:  # dead, unreachable or slow: no spare to rely on
            return False
        return True

    async def _watch(self) -> None:
        """Drop spares that died while idle, and start others in their place."""
        while True:
            await asyncio.sleep(self._check_every_s)
            for spare in list(self._ready):
                if not await self._alive(spare) and spare in self._ready:
                    log.warning("model %s: a warm spare replica died; starting another",
                                self._name)
                    self._ready.remove(spare)
                    await _stop(spare)
            self._fill()


async def _stop(spare: ReplicaHandle) -> None:
    """Stop `spare`, dead or alive (closing a dead one's channel may fail: nothing is lost)."""
    with contextlib.suppress(Exception):
        await spare.stop()
