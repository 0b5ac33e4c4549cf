"""BatchFormer: which queued requests form a batch, in which order, and how long it waits."""

from __future__ import annotations

import asyncio
import time

import numpy as np

from augserve.server.inference.batch_formation import BatchFormer, QueuedRequest
from augserve.server.inference.model_config import BatchingSettings


def queued(rows: int, width: int = 1, deadline: float | None = None) -> QueuedRequest:
    return QueuedRequest([np.zeros((rows, width), np.float32)], rows,
                         asyncio.get_running_loop().create_future(), time.perf_counter_ns(),
                         deadline)


async def test_a_batch_takes_later_requests_of_the_heads_shape_that_fit():
    former = BatchFormer(4, BatchingSettings())
    head, wide, two, three, one = queued(1), queued(1, 2), queued(2), queued(3), queued(1)
    for request in (head, wide, two, three, one):
        former.add(request)
    assert former.take() == [head, two, one]  # `three` would pass 4 rows, `wide` differs
    assert former.take() == [wide]
    assert former.take() == [three] and not former


async def test_requests_put_back_go_first_in_their_order():
    former = BatchFormer(0, BatchingSettings())
    newcomer, first, second = queued(1), queued(1), queued(1)
    former.add(newcomer)
    former.put_back([first, second])
    assert [former.take(), former.take(), former.take()] == [[first], [second], [newcomer]]


async def test_finished_and_expired_requests_are_dropped_before_batching():
    former = BatchFormer(8, BatchingSettings())
    cancelled, expired, live = queued(1), queued(1, deadline=time.monotonic() - 1), queued(1)
    cancelled.future.cancel()
    for request in (cancelled, expired, live):
        former.add(request)
    former.drop_finished()
    assert len(former) == 1 and "deadline" in str(expired.future.exception())
    assert former.take() == [live]


async def test_the_head_waits_to_fill_only_below_the_preferred_size():
    settings = BatchingSettings(max_queue_delay_microseconds=1_000_000, preferred_batch_size=(3,))
    former = BatchFormer(8, settings)
    former.add(queued(2))
    assert 0.5 < former.fill_wait_s(lambda: True) <= 1.0
    former.add(queued(1))
    assert former.fill_wait_s(lambda: True) == 0.0
    busy_only = BatchFormer(8, BatchingSettings(max_queue_delay_microseconds=1_000_000,
                                                delay_only_while_busy=True))
    busy_only.add(queued(1))
    assert busy_only.fill_wait_s(lambda: False) == 0.0
    assert busy_only.fill_wait_s(lambda: True) > 0.5
