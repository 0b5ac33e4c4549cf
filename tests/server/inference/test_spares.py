"""SparePool without Ray: fake replicas whose `actor.node.remote()` answers or fails."""

from __future__ import annotations

import asyncio

import pytest

from augserve.server.inference import spares as spares_module
from augserve.server.inference.spares import SparePool, StartGate

from ...waiting import async_wait_until, let_ready_tasks_run


class FakeActor:
    def __init__(self) -> None:
        self.dead = False
        self.node = self  # `actor.node.remote()`, as on a Ray actor handle

    async def _answer(self) -> str:
        if self.dead:
            raise RuntimeError("the actor died")
        return "node"

    def remote(self):  # as a Ray method handle
        return self._answer()


class FakeReplica:
    def __init__(self, number: int) -> None:
        self.number = number
        self.actor = FakeActor()
        self.stopped = False

    async def stop(self) -> None:
        self.stopped = True


class Starter:
    """Starts numbered fake replicas; the first `failures` starts raise."""

    def __init__(self, failures: int = 0) -> None:
        self.started: list[FakeReplica] = []
        self.failures = failures

    async def __call__(self) -> FakeReplica:
        if self.failures:
            self.failures -= 1
            raise RuntimeError("no room")
        replica = FakeReplica(len(self.started))
        self.started.append(replica)
        return replica


async def test_take_hands_out_a_ready_spare_and_starts_another():
    start = Starter()
    pool = SparePool("m", 1, start, check_every_s=60)
    try:
        await async_wait_until(lambda: pool.ready == 1, what="the spare started")
        spare = await pool.take()
        assert spare is start.started[0]
        await async_wait_until(lambda: pool.ready == 1, what="a new spare started")
        assert len(start.started) == 2
    finally:
        await pool.close()
    assert start.started[1].stopped  # close stops the ready spares
    assert not start.started[0].stopped  # the one handed out is the batcher's now


async def test_a_dead_spare_is_not_handed_out():
    start = Starter()
    pool = SparePool("m", 1, start, check_every_s=60)
    try:
        await async_wait_until(lambda: pool.ready == 1, what="the spare started")
        start.started[0].actor.dead = True
        assert await pool.take() is not start.started[0]  # None, or the one started after
        assert start.started[0].stopped
    finally:
        await pool.close()


async def test_the_watcher_replaces_a_spare_that_died_idle():
    start = Starter()
    pool = SparePool("m", 1, start, check_every_s=0.01)
    try:
        await async_wait_until(lambda: pool.ready == 1, what="the spare started")
        start.started[0].actor.dead = True
        await async_wait_until(lambda: len(start.started) == 2 and pool.ready == 1,
                               what="the dead spare replaced")
        assert start.started[0].stopped
        assert await pool.take() is start.started[1]
    finally:
        await pool.close()


async def test_a_failed_start_is_retried_later(monkeypatch):
    monkeypatch.setattr(spares_module, "RETRY_AFTER_S", 0.01)
    start = Starter(failures=2)
    pool = SparePool("m", 2, start, check_every_s=60)
    try:
        await async_wait_until(lambda: pool.ready == 2, what="both spares started")
        assert len(start.started) == 2
    finally:
        await pool.close()


async def test_no_spares_by_default_and_after_close():
    start = Starter()
    pool = SparePool("m", 0, start)
    await asyncio.sleep(0)
    assert await pool.take() is None and not start.started
    await pool.close()
    sized = SparePool("m", 1, start, check_every_s=60)
    await async_wait_until(lambda: sized.ready == 1, what="the spare started")
    await sized.close()
    assert await sized.take() is None


@pytest.mark.parametrize("size", [1, 3])
async def test_close_cancels_starts_in_progress(size):
    gate = asyncio.Event()
    made: list[FakeReplica] = []

    async def slow_start() -> FakeReplica:
        await gate.wait()
        made.append(FakeReplica(len(made)))
        return made[-1]

    pool = SparePool("m", size, slow_start, check_every_s=60)
    await asyncio.sleep(0)
    await pool.close()
    gate.set()
    await asyncio.sleep(0)
    assert not made and pool.ready == 0


async def test_a_replacement_takes_a_ready_spare_without_starting_one():
    start = Starter()
    pool = SparePool("m", 1, start, check_every_s=60)
    try:
        await async_wait_until(lambda: pool.ready == 1, what="the spare started")
        assert await pool.replacement() is start.started[0]
    finally:
        await pool.close()


async def test_a_replacement_takes_the_first_up_and_the_other_becomes_a_spare():
    gates = [asyncio.Event() for _ in range(3)]
    made: list[FakeReplica] = []

    async def gated_start() -> FakeReplica:
        gate = gates[len(made)]
        made.append(FakeReplica(len(made)))
        replica = made[-1]
        await gate.wait()
        return replica

    pool = SparePool("m", 1, gated_start, check_every_s=60)
    try:
        await asyncio.sleep(0)  # the pool's spare (0) is starting, not ready
        replacement = asyncio.create_task(pool.replacement())
        await async_wait_until(lambda: len(made) == 2, what="a fresh start raced the spare")
        gates[0].set()  # the pool's start comes up first: the replacement gets it
        assert await replacement is made[0]
        gates[1].set()  # the fresh one, later, is kept as the pool's spare
        await async_wait_until(lambda: pool.ready == 1, what="the fresh replica kept")
        assert pool._ready == [made[1]] and not made[1].stopped
        gates[2].set()  # the pool's next start finds it full: stopped, not kept
        await async_wait_until(lambda: made[2].stopped, what="the extra spare stopped")
        assert pool._ready == [made[1]]
    finally:
        await pool.close()


async def test_without_spares_a_replacement_is_one_start():
    start = Starter()
    pool = SparePool("m", 0, start)
    assert await pool.replacement() is not None
    assert len(start.started) == 1
    await pool.close()


async def test_spare_starts_wait_for_replacements_and_go_one_at_a_time():
    gate = StartGate()
    running: list[str] = []
    most = 0

    async def spare(name: str) -> None:
        nonlocal most
        async with gate.spare_start():
            running.append(name)
            most = max(most, len(running))
            await asyncio.sleep(0.01)
            running.remove(name)

    with gate.replacing():
        spares = [asyncio.create_task(spare(n)) for n in "abc"]
        await let_ready_tasks_run()
        assert not any(task.done() for task in spares) and not running  # held back
    await asyncio.gather(*spares)
    assert most == 1
