"""BatchQueue: merging and splitting, back-pressure, deadlines, failure isolation."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from augserve.server.errors import (
    DeadlineExceeded,
    Internal,
    ReplicaDied,
    ResourceExhausted,
    Unavailable,
)
from augserve.server.inference.batcher import BatchQueue
from augserve.server.inference.model_config import BatchingSettings
from augserve.server.inference.statistics import ModelStats
from augserve.server.inference.timing import BatchTiming

from ...waiting import async_wait_until, let_ready_tasks_run


class GatedReplica:
    """Doubles its input; each call waits until the test opens the gate."""

    def __init__(self, fail_on: float | None = None) -> None:
        self.calls: list[int] = []
        self.gate = asyncio.Event()
        self.started = asyncio.Event()
        self.fail_on = fail_on

    async def __call__(self, parts):
        inputs = [np.concatenate(arrays) for arrays in parts]
        self.calls.append(inputs[0].shape[0])
        self.started.set()
        await self.gate.wait()
        if self.fail_on is not None and (inputs[0] == self.fail_on).any():
            raise ValueError("poisoned row")
        return [inputs[0] * 2], BatchTiming(1000)


def make_queue(replica, max_batch_size=8, **batching):
    stats = ModelStats("m", "1")
    queue = BatchQueue([replica], max_batch_size, BatchingSettings(**batching), stats)
    return queue, stats


def rows(*values):
    return [np.array(values, dtype=np.float32).reshape(-1, 1)]


async def test_idle_replica_runs_a_request_at_once():
    replica = GatedReplica()
    replica.gate.set()
    queue, stats = make_queue(replica)
    result = await queue.submit(rows(1.0), client_deadline_s=5)
    np.testing.assert_array_equal(result[0], [[2.0]])
    assert replica.calls == [1]
    assert stats.batches[1].compute_infer.count == 1


async def test_requests_merge_while_busy_and_each_caller_gets_its_own_rows():
    replica = GatedReplica()
    queue, stats = make_queue(replica)
    first = asyncio.create_task(queue.submit(rows(0.0), 5))
    await replica.started.wait()  # the replica is now busy with the first request
    others = [asyncio.create_task(queue.submit(rows(i, i + 0.5), 5)) for i in range(1, 4)]
    await async_wait_until(lambda: queue.queued >= 3)
    replica.gate.set()
    await first
    results = await asyncio.gather(*others)
    assert replica.calls == [1, 6]
    for i, result in zip(range(1, 4), results, strict=True):
        np.testing.assert_array_equal(result[0], [[2 * i], [2 * i + 1]])
    assert set(stats.batches) == {1, 6}
    assert stats.inference_count == 7 and stats.execution_count == 2


async def test_batches_never_exceed_max_batch_size():
    replica = GatedReplica()
    queue, _ = make_queue(replica, max_batch_size=4)
    first = asyncio.create_task(queue.submit(rows(0.0), 5))
    await replica.started.wait()
    waiting = [asyncio.create_task(queue.submit(rows(float(i), float(i)), 5)) for i in range(5)]
    await async_wait_until(lambda: queue.queued >= 5)
    replica.gate.set()
    await asyncio.gather(first, *waiting)
    assert replica.calls[0] == 1 and max(replica.calls) <= 4 and sum(replica.calls) == 11


async def test_full_queue_answers_resource_exhausted_at_once():
    replica = GatedReplica()
    queue, _ = make_queue(replica, max_queue_size=2)
    running = asyncio.create_task(queue.submit(rows(0.0), 5))
    await replica.started.wait()
    queued = [asyncio.create_task(queue.submit(rows(1.0), 5)) for _ in range(2)]
    await async_wait_until(lambda: queue.queued >= 2)
    with pytest.raises(ResourceExhausted, match="queue is full"):
        await queue.submit(rows(2.0), 5)
    replica.gate.set()
    await asyncio.gather(running, *queued)


async def test_deadline_while_queued_is_dropped_before_running():
    replica = GatedReplica()
    queue, _ = make_queue(replica)
    running = asyncio.create_task(queue.submit(rows(0.0), 5))
    await replica.started.wait()
    expiring = asyncio.create_task(queue.submit(rows(9.0), client_deadline_s=0.001))
    await async_wait_until(lambda: queue.queued >= 1)
    deadline = time.monotonic() + 0.001
    await async_wait_until(lambda: time.monotonic() > deadline)  # the queued one's passes
    replica.gate.set()
    await running
    with pytest.raises(DeadlineExceeded, match="while queued"):
        await expiring
    after = await queue.submit(rows(3.0), 5)
    np.testing.assert_array_equal(after[0], [[6.0]])
    assert replica.calls == [1, 1]  # the expired request never reached the replica


async def test_model_timeout_gives_deadline_exceeded():
    replica = GatedReplica()
    queue, _ = make_queue(replica, default_timeout_microseconds=1000)
    with pytest.raises(DeadlineExceeded, match="timeout"):
        await queue.submit(rows(1.0), None)
    replica.gate.set()


async def test_a_request_that_makes_the_model_raise_fails_alone():
    replica = GatedReplica(fail_on=13.0)
    queue, stats = make_queue(replica)
    first = asyncio.create_task(queue.submit(rows(0.0), 5))
    await replica.started.wait()
    good = [asyncio.create_task(queue.submit(rows(float(i)), 5)) for i in (1, 2)]
    bad = asyncio.create_task(queue.submit(rows(13.0), 5))
    await async_wait_until(lambda: queue.queued >= 3)
    replica.gate.set()
    await first
    with pytest.raises(Internal, match="poisoned row"):
        await bad
    for value, task in zip((1, 2), good, strict=True):
        np.testing.assert_array_equal((await task)[0], [[2.0 * value]])
    assert stats.fail.count == 1
    # The queue still serves afterwards.
    np.testing.assert_array_equal((await queue.submit(rows(5.0), 5))[0], [[10.0]])


async def test_wrong_row_count_from_the_model_is_an_error_not_a_mixup():
    async def broken(parts):
        return [parts[0][0][:1]], BatchTiming(10)

    queue, _ = make_queue(broken)
    with pytest.raises(Internal, match="returned 1 rows for a batch of 2"):
        await queue.submit(rows(1.0, 2.0), 5)


async def test_cancelled_caller_is_skipped():
    replica = GatedReplica()
    queue, _ = make_queue(replica)
    running = asyncio.create_task(queue.submit(rows(0.0), 5))
    await replica.started.wait()
    abandoned = asyncio.create_task(queue.submit(rows(7.0), 5))
    kept = asyncio.create_task(queue.submit(rows(4.0), 5))
    await async_wait_until(lambda: queue.queued >= 2)
    abandoned.cancel()
    with pytest.raises(asyncio.CancelledError):
        await abandoned
    replica.gate.set()
    await running
    np.testing.assert_array_equal((await kept)[0], [[8.0]])
    assert replica.calls == [1, 1]


async def test_close_drains_then_refuses():
    replica = GatedReplica()
    queue, _ = make_queue(replica, max_batch_size=1)
    pending = [asyncio.create_task(queue.submit(rows(float(i)), 5)) for i in range(4)]
    await replica.started.wait()
    await async_wait_until(lambda: queue.queued >= 3)
    closing = asyncio.create_task(queue.close())
    replica.gate.set()
    await closing
    assert [(await task)[0].item() for task in pending] == [0.0, 2.0, 4.0, 6.0]
    with pytest.raises(Exception, match="being unloaded"):
        await queue.submit(rows(1.0), 5)


async def test_close_returns_once_the_last_batch_is_answered_without_polling():
    replica = GatedReplica()
    queue, _ = make_queue(replica)
    running = asyncio.create_task(queue.submit(rows(1.0), 5))
    await replica.started.wait()
    closing = asyncio.create_task(queue.close())
    await let_ready_tasks_run()
    assert not closing.done()  # the batch still runs
    replica.gate.set()
    # A few turns of the loop, no timer: a close that polled the queue would still wait.
    await let_ready_tasks_run(10)
    assert closing.done() and running.done()
    np.testing.assert_array_equal((await running)[0], [[2.0]])


async def test_queue_delay_lets_a_batch_fill_to_the_preferred_size():
    replica = GatedReplica()
    replica.gate.set()
    queue, _ = make_queue(
        replica, max_queue_delay_microseconds=2_000_000, preferred_batch_size=(4,)
    )
    tasks = []
    for i in range(4):
        tasks.append(asyncio.create_task(queue.submit(rows(float(i)), 5)))
        await let_ready_tasks_run()  # each request is queued before the next is made
    await asyncio.gather(*tasks)
    assert replica.calls == [4]


async def test_delay_only_while_busy_waits_to_fill_only_beside_a_busy_replica():
    busy, free = GatedReplica(), GatedReplica()
    free.gate.set()
    settings = BatchingSettings(
        max_queue_delay_microseconds=2_000_000, preferred_batch_size=(3,),
        delay_only_while_busy=True,
    )  # fmt: skip
    queue = BatchQueue([busy, free], 8, settings, ModelStats("m", "1"))
    # Idle server: the first request goes at once, in spite of the 2 s delay.
    first = asyncio.create_task(queue.submit(rows(1.0), 5))
    await busy.started.wait()
    # One replica busy: the free one waits for 3 rows instead of taking 1.
    fill = [asyncio.create_task(queue.submit(rows(float(i)), 5)) for i in (2, 3)]
    await let_ready_tasks_run()  # both submitted: queued, or (wrongly) sent to `free`
    assert queue.queued == 2 and free.calls == []
    fill.append(asyncio.create_task(queue.submit(rows(4.0), 5)))
    await asyncio.gather(*fill)
    assert free.calls == [3]
    # A lone request beside the busy replica goes when that replica frees up.
    late = asyncio.create_task(queue.submit(rows(5.0), 5))
    await let_ready_tasks_run()
    assert queue.queued == 1 and not late.done()
    busy.gate.set()
    await asyncio.gather(first, late)
    assert sorted(busy.calls + free.calls) == [1, 1, 3]


class DyingReplica:
    """Answers like GatedReplica (gate open) until it dies, then raises ReplicaDied.

    It dies when told to, or on a batch holding `poison`.
    """

    def __init__(self, poison: float | None = None) -> None:
        self.dead = False
        self.poison = poison
        self.calls: list[int] = []

    async def __call__(self, parts):
        batch = np.concatenate(parts[0])
        self.calls.append(batch.shape[0])
        if self.dead or (self.poison is not None and (batch == self.poison).any()):
            self.dead = True
            raise ReplicaDied("a replica of model 'm' died: gone")
        return [batch * 2], BatchTiming(1000)


async def test_a_dead_replicas_batch_reruns_on_its_restarted_replica():
    dying = DyingReplica()
    fresh = GatedReplica()
    fresh.gate.set()
    restarting, restarted = asyncio.Event(), asyncio.Event()

    async def restart(index):
        assert index == 0
        restarting.set()
        await restarted.wait()  # the batch and requests that arrive meanwhile wait
        return fresh

    stats = ModelStats("m", "1")
    queue = BatchQueue([dying], 8, BatchingSettings(), stats, restart=restart)
    dying.dead = True
    first = asyncio.create_task(queue.submit(rows(1.0), 5))
    await asyncio.wait_for(restarting.wait(), 10)  # the replica died on the first request
    waiting = asyncio.create_task(queue.submit(rows(2.0), 5))
    await async_wait_until(lambda: queue.queued == 2)  # requeued, and the newcomer
    assert dying.calls == [1] and not first.done() and not waiting.done()
    restarted.set()
    np.testing.assert_array_equal((await first)[0], [[2.0]])
    np.testing.assert_array_equal((await waiting)[0], [[4.0]])
    assert fresh.calls == [2]  # the requeued request went first, with the newcomer


async def test_a_dead_replicas_batch_reruns_on_another_replica_at_once():
    dying, other = DyingReplica(), GatedReplica()
    other.gate.set()
    queue = BatchQueue([dying, other], 8, BatchingSettings(), ModelStats("m", "1"))
    dying.dead = True
    results = await asyncio.gather(*(queue.submit(rows(float(v)), 5) for v in range(4)))
    assert [float(r[0][0, 0]) for r in results] == [0.0, 2.0, 4.0, 6.0]
    assert dying.calls and sum(other.calls) == 4


async def test_an_input_that_kills_replicas_fails_after_two_deaths_and_others_go_on():
    replicas = [DyingReplica(poison=-1.0) for _ in range(3)]

    async def restart(index):
        replicas.append(DyingReplica(poison=-1.0))
        return replicas[-1]

    queue = BatchQueue(replicas[:3], 8, BatchingSettings(), ModelStats("m", "1"),
                       restart=restart)
    with pytest.raises(ReplicaDied, match="this request's batch lost 2 replicas"):
        await queue.submit(rows(-1.0), 5)
    assert sum(r.dead for r in replicas) == 2
    np.testing.assert_array_equal((await queue.submit(rows(3.0), 5))[0], [[6.0]])


async def test_queued_requests_get_unavailable_when_no_replica_can_restart():
    dying = DyingReplica()
    dying.dead = True
    restarting, gate = asyncio.Event(), asyncio.Event()

    async def restart(index):
        restarting.set()
        await gate.wait()
        raise RuntimeError("the model file is gone")

    queue = BatchQueue([dying], 8, BatchingSettings(), ModelStats("m", "1"), restart=restart)
    first = asyncio.create_task(queue.submit(rows(1.0), 5))
    await asyncio.wait_for(restarting.wait(), 10)
    waiting = asyncio.create_task(queue.submit(rows(2.0), 5))
    await async_wait_until(lambda: queue.queued == 2)
    gate.set()
    for task in (first, waiting):
        with pytest.raises(Unavailable, match="could not be restarted: the model file is gone"):
            await task
    with pytest.raises(Unavailable, match="could not be restarted"):
        await queue.submit(rows(3.0), 5)


class ManualReplica:
    """Takes a batch when called (before any await) and answers when the test says."""

    def __init__(self) -> None:
        self.answers: list[tuple[asyncio.Future, np.ndarray]] = []
        self.on_send = lambda: None

    def __call__(self, parts):
        self.on_send()
        answer = asyncio.get_running_loop().create_future()
        self.answers.append((answer, np.concatenate(parts[0])))
        return answer

    def answer(self, index: int) -> None:
        answer, batch = self.answers[index]
        answer.set_result(([batch * 2], 1000))


async def test_a_freed_replica_takes_its_next_batch_before_the_last_one_is_answered():
    replica = ManualReplica()
    queue, _ = make_queue(replica)
    first = asyncio.create_task(queue.submit(rows(1.0), 5))
    await async_wait_until(lambda: replica.answers)
    second = asyncio.create_task(queue.submit(rows(2.0), 5))
    await async_wait_until(lambda: queue.queued >= 1)
    first_answered_at_second_send = []
    replica.on_send = lambda: first_answered_at_second_send.append(first.done())
    replica.answer(0)
    np.testing.assert_array_equal((await first)[0], [[2.0]])
    assert first_answered_at_second_send == [False]
    replica.answer(1)
    np.testing.assert_array_equal((await second)[0], [[4.0]])


async def test_with_every_replica_down_past_the_wait_requests_get_unavailable_at_once():
    replicas = [DyingReplica(), DyingReplica()]
    fresh = GatedReplica()
    fresh.gate.set()
    restarted = asyncio.Event()

    async def restart(index):
        await restarted.wait()  # a restart that a loaded host stretches past the wait
        return fresh

    queue = BatchQueue(replicas, 8, BatchingSettings(), ModelStats("m", "1"), restart=restart,
                       max_replica_deaths=3, no_replica_wait_s=0.2)
    for replica in replicas:
        replica.dead = True
    started = time.monotonic()
    with pytest.raises(Unavailable, match="model 'm' version 1 has no live replica: "
                                          "it lost 2 of its 2 replicas"):
        await queue.submit(rows(1.0), 30)  # its batch killed both, then waited 0.2 s
    assert time.monotonic() - started < 5
    with pytest.raises(Unavailable, match="no live replica"):  # at once, not queued
        await asyncio.wait_for(queue.submit(rows(2.0), 30), 0.05)
    restarted.set()
    await async_wait_until(lambda: queue._down is None)
    np.testing.assert_array_equal((await queue.submit(rows(3.0), 5))[0], [[6.0]])


async def test_a_replacement_that_dies_while_starting_is_started_again():
    dying = DyingReplica()
    dying.dead = True
    fresh = GatedReplica()
    fresh.gate.set()
    attempts = []

    async def restart(index):
        attempts.append(index)
        if len(attempts) == 1:  # the first replacement's process is killed as it starts
            raise ReplicaDied("a replica of model 'm' died: killed while starting")
        return fresh

    queue = BatchQueue([dying], 8, BatchingSettings(), ModelStats("m", "1"), restart=restart)
    np.testing.assert_array_equal((await queue.submit(rows(1.0), 5))[0], [[2.0]])
    assert attempts == [0, 0]


async def test_a_swapped_replica_finishes_its_batch_and_the_next_go_to_the_new_one():
    old, new = GatedReplica(), GatedReplica()
    new.gate.set()
    queue, _ = make_queue(old, max_batch_size=1)
    first = asyncio.create_task(queue.submit(rows(1.0), 5))
    await old.started.wait()
    assert queue.swap(0, new)
    second = asyncio.create_task(queue.submit(rows(2.0), 5))
    await let_ready_tasks_run()
    assert not first.done() and new.calls == []  # the slot's one batch in flight is the old's
    old.gate.set()
    np.testing.assert_array_equal((await first)[0], [[2.0]])  # answered where it was sent
    np.testing.assert_array_equal((await second)[0], [[4.0]])
    assert old.calls == [1] and new.calls == [1]
    await queue.close()
    assert not queue.swap(0, old)  # a closed queue keeps what it has
