"""Jobs beyond `max_running` wait in a bounded FIFO; beyond `max_queued` Submit is refused."""

from __future__ import annotations

import pytest

from augserve.server.errors import Cancelled, ResourceExhausted
from augserve.server.jobs.progress import CANCELLED, DONE
from augserve.server.jobs.runner import JobManager
from augserve.server.jobs.settings import JobSettings
from augserve.server.jobs.specs import Finetune, JobSpec, ModelRef

from ...waiting import async_wait_until


def _spec(root, name: str, epochs: int) -> JobSpec:
    return JobSpec(ModelRef(repository=str(root), name="base"), (Finetune(epochs, 1e-2),),
                   "digits", str(root), name, measure_latency=False)


async def _events_until(manager: JobManager, job_id: str, stop) -> list[dict]:
    events = []
    async for event in manager.watch(job_id):
        events.append(event)
        if stop(event):
            break
    return events


@pytest.fixture
def manager(ray_session, tmp_path):
    return JobManager(JobSettings(max_running=1, max_queued=1, state_dir=str(tmp_path)))


async def test_jobs_queue_in_order_and_a_full_queue_refuses(manager, base_repository):
    root = base_repository
    running = manager.submit(_spec(root, "long", 500))
    await _events_until(manager, running, lambda e: e["epoch"] >= 1)

    queued = manager.submit(_spec(root, "cancelled", 1))
    [first] = await _events_until(manager, queued, lambda e: True)
    assert (first["stage"], first["message"]) == ("queued", "queued behind 0 job(s); 1 run at once")
    with pytest.raises(ResourceExhausted) as caught:
        manager.submit(_spec(root, "refused", 1))
    assert "job 2 queued (1 running)" in str(caught.value)
    assert "max_queued (--jobs-max-queued) = 1" in str(caught.value)

    # a queued job cancels without waiting for its turn, and gives its place back
    await manager.cancel(queued)
    events = await _events_until(manager, queued, lambda e: e["state"] == CANCELLED)
    assert [e["stage"] for e in events] == ["queued", "cancelled"]
    with pytest.raises(Cancelled):
        await manager.result(queued)
    assert manager.slots.running == {running}

    waiting = manager.submit(_spec(root, "after", 1))
    # the running job goes on for two more epochs while the queued one has not started
    await _events_until(manager, running, lambda e: e["epoch"] >= 3)
    assert [e["stage"] for e in manager.events_sync(waiting, -1, 0.0)] == ["queued"]

    await manager.cancel(running)
    await _events_until(manager, running, lambda e: e["state"] == CANCELLED)
    events = await _events_until(manager, waiting, lambda e: e["state"] == DONE)
    assert events[0]["stage"] == "queued" and events[-1]["state"] == DONE
    assert (await manager.result(waiting))["version"] == 1
    await async_wait_until(lambda: not manager.slots.running, what="the slot freed")


def test_without_a_queue_a_submit_beyond_max_running_is_refused(ray_session, tmp_path,
                                                                 base_repository):
    manager = JobManager(JobSettings(max_running=1, max_queued=0, state_dir=str(tmp_path)))
    running = manager.submit(_spec(base_repository, "long", 500))
    try:
        with pytest.raises(ResourceExhausted, match=r"max_queued \(--jobs-max-queued\) = 0"):
            manager.submit(_spec(base_repository, "refused", 1))
    finally:
        manager.cancel_sync(running)
    with pytest.raises(Cancelled):
        manager.result_sync(running)
