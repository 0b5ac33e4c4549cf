"""ActorPool: the restart policy both services' pools share, and their workers' set-up."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import pytest
import torch
from ray.exceptions import RayTaskError

from augserve.server.actors import (
    ActorPool,
    check_placement,
    placement_options,
    rebalance_move,
    spread_targets,
)
from augserve.server.augment.pool import AugmentPool
from augserve.server.augment.settings import AugmentSettings
from augserve.server.errors import Unavailable
from augserve.server.stream.pool import StreamPool

from ..waiting import async_wait_until, let_ready_tasks_run


def flaky_worker_class() -> type:
    """A worker whose calls kill their actor's process the first `deaths` times, in all.

    Defined in a function so that Ray ships the class itself to its workers.
    """

    class Flaky:
        def __init__(self, folder: str) -> None:
            self.folder = Path(folder)

        def echo(self, value: int, deaths: int) -> int:
            died = len(list(self.folder.iterdir()))
            if died < deaths:
                (self.folder / f"death-{died}").touch()
                os._exit(1)
            return value

        def oom(self, value: int) -> int:
            """Fail like a worker the memory monitor killed, the first time only."""
            from ray.exceptions import OutOfMemoryError

            if not any(self.folder.iterdir()):
                (self.folder / "oom").touch()
                raise OutOfMemoryError("1 worker(s) were killed due to memory pressure")
            return value

        def fail(self) -> None:
            raise ValueError("the call itself is wrong")

        def slow(self, value: int, seconds: float) -> int:
            import time

            time.sleep(seconds)
            return value

    return Flaky


@pytest.fixture
def flaky_pool(ray_session, tmp_path):
    pool = ActorPool(flaky_worker_class(), 2, (str(tmp_path),), num_cpus=0.25)
    yield pool
    pool.shutdown()


async def test_a_call_whose_actor_dies_is_made_again_and_its_actor_replaced(flaky_pool):
    call = flaky_pool.call("echo", 7, 1)
    assert await flaky_pool.result(call, max_retries=3) == 7
    assert flaky_pool.resubmitted == 1
    assert flaky_pool.actors[call.slot] is not call.actor  # the dead one was replaced
    assert len(flaky_pool.actors) == 2 and flaky_pool.in_flight == 0


async def test_the_pool_sends_its_class_to_the_gcs_once_not_per_actor(flaky_pool, monkeypatch):
    # an export waits on the GCS: with the head gone, one per new actor would hang the loop
    import ray

    manager = ray._private.worker.global_worker.function_actor_manager
    exports = []
    export = manager.export_actor_class
    monkeypatch.setattr(manager, "export_actor_class",
                        lambda *args: exports.append(args) or export(*args))
    call = flaky_pool.call("echo", 3, 1)  # the pool's two actors, then a replacement
    assert await flaky_pool.result(call, max_retries=3) == 3
    assert flaky_pool.resubmitted == 1 and len(exports) == 1


async def test_a_call_that_loses_more_actors_than_its_retries_is_unavailable(flaky_pool):
    call = flaky_pool.call("echo", 7, 10)
    with pytest.raises(Unavailable, match="call lost 3 workers"):
        await flaky_pool.result(call, max_retries=2)
    assert flaky_pool.resubmitted == 2
    # The pool still serves: its dead actors were replaced.
    assert await flaky_pool.result(flaky_pool.call("echo", 5, 0), max_retries=0) == 5


async def test_a_call_whose_worker_is_killed_for_memory_is_made_again(flaky_pool):
    call = flaky_pool.call("oom", 9)
    assert await flaky_pool.result(call, max_retries=3) == 9
    assert flaky_pool.resubmitted == 1
    assert flaky_pool.actors[call.slot] is not call.actor


async def test_an_error_of_the_call_itself_is_not_retried(flaky_pool):
    with pytest.raises(RayTaskError, match="the call itself is wrong"):
        await flaky_pool.result(flaky_pool.call("fail"), max_retries=3)
    assert flaky_pool.resubmitted == 0


async def test_a_call_made_again_goes_to_a_started_actor_not_the_starting_replacement(
        flaky_pool):
    flaky_pool.start()
    await async_wait_until(lambda: all(flaky_pool.started), 120)
    made, call_once = [], flaky_pool.call

    def recorded(*args):
        made.append(call_once(*args))
        return made[-1]

    flaky_pool.call = recorded
    assert await flaky_pool.result(recorded("echo", 7, 1), max_retries=3) == 7
    first, again = made
    # the replacement of the first's actor was still starting: the survivor took the call
    assert again.slot != first.slot and again.actor is flaky_pool.actors[again.slot]
    await async_wait_until(lambda: all(flaky_pool.started), 120)  # the replacement came up


async def test_a_started_actor_is_preferred_even_when_busier(flaky_pool):
    flaky_pool.start()
    await async_wait_until(lambda: all(flaky_pool.started), 120)
    flaky_pool.started[0] = False  # as if slot 0 held a replacement still starting
    calls = [flaky_pool.call("echo", v, 0) for v in range(3)]
    assert [c.slot for c in calls] == [1, 1, 1]
    assert [await flaky_pool.result(c, 0) for c in calls] == [0, 1, 2]


async def test_calls_go_to_the_least_busy_actor(flaky_pool):
    calls = [flaky_pool.call("echo", v, 0) for v in range(4)]
    assert [c.slot for c in calls] == [0, 1, 0, 1]
    assert [await flaky_pool.result(c, max_retries=0) for c in calls] == [0, 1, 2, 3]
    # A call's slot is given back by its future's done callback, which the loop runs on its
    # next turn: awaiting a future that is already done does not yield to it.
    await let_ready_tasks_run()
    assert flaky_pool.busy == [0, 0]


@pytest.fixture
def cpu_settings(monkeypatch):
    """Say CUDA is there, with cuDNN's flags at their defaults; restore both afterwards."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", False)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    threads, cv2_threads = torch.get_num_threads(), cv2.getNumThreads()
    yield
    torch.set_num_threads(threads)
    cv2.setNumThreads(cv2_threads)


@pytest.mark.parametrize("pool_class", [AugmentPool, StreamPool])
def test_both_pools_workers_pin_threads_and_make_cudnn_deterministic(pool_class, cpu_settings):
    torch.set_num_threads(2)
    pool = pool_class(size=0, backend="fast")  # its worker in this process, to look at
    pool.start()
    assert torch.backends.cudnn.deterministic is True
    assert torch.backends.cudnn.benchmark is False
    assert torch.get_num_threads() == 1
    pool.shutdown()


@pytest.mark.parametrize(("placement", "options"), [
    ("spread", {"scheduling_strategy": "SPREAD"}),
    ("pack", {}),
    ("augserve_worker", {"resources": {"augserve_worker": 0.001}}),
])
def test_placement_options(placement, options):
    assert placement_options(check_placement(placement, "p")) == options


@pytest.mark.parametrize("placement", ["", "1node", "a b", "node:x"])
def test_bad_placement_is_named(placement):
    with pytest.raises(ValueError, match="augment settings: actor_placement must be one of"):
        AugmentSettings(actor_placement=placement)


@pytest.mark.parametrize(("nodes", "alive", "move"), [
    (["a", "a"], {"a", "b"}, (1, "b")),  # the last worker of the crowded node moves
    (["a", "b", "a", "a"], {"a", "b", "c"}, (3, "c")),
    (["a", "b"], {"a", "b", "c"}, None),  # no node holds two
    (["a", "a"], {"a"}, None),  # no live node is empty
    (["a", None], {"a", "b"}, None),  # one still starting: nowhere yet
    ([None, None], {"a"}, None),
])
def test_rebalance_move_takes_one_worker_off_a_crowded_node_onto_an_empty_one(
        nodes, alive, move):
    assert rebalance_move(nodes, alive) == move


def _node(name: str, alive: bool = True, **resources: float) -> dict:
    return {"NodeID": name, "Alive": alive, "Resources": resources}


CPU_HALF = {"CPU": 0.5, "GPU": 0.0}


@pytest.mark.parametrize(("count", "nodes", "needs", "targets"), [
    (2, [_node("b", CPU=1), _node("a", CPU=1)], CPU_HALF, ["a", "b"]),  # in id order
    (3, [_node("a", CPU=1), _node("b", CPU=1)], CPU_HALF, ["a", "b", "a"]),
    (2, [_node("a", CPU=0), _node("b", CPU=1), _node("c", CPU=1)], CPU_HALF, ["b", "c"]),
    (2, [_node("a", CPU=1), _node("b", False, CPU=1), _node("c", CPU=1)], CPU_HALF,
     ["a", "c"]),
    (2, [_node("a", CPU=1), _node("b", CPU=1, GPU=1), _node("c", CPU=1, GPU=1)],
     {"CPU": 0.5, "GPU": 1.0}, ["b", "c"]),
    (2, [_node("a", CPU=1), _node("b", CPU=1, GPU=1)], {"CPU": 0.5, "GPU": 1.0},
     [None, None]),  # one node can hold one: Ray's choice
    (2, [_node("a", CPU=1)], CPU_HALF, [None, None]),
])
def test_spread_targets_put_replicas_one_per_node_that_can_hold_one(count, nodes, needs,
                                                                    targets):
    assert spread_targets(count, nodes, needs) == targets


async def test_a_moved_actor_finishes_its_calls_and_its_slot_goes_to_the_new_one(flaky_pool):
    flaky_pool.start()
    await async_wait_until(lambda: all(flaky_pool.nodes), 60, "the actors' nodes known")
    here = flaky_pool.nodes[0]
    old = flaky_pool.actors[1]
    running = flaky_pool.call("slow", 7, 1.5)
    while flaky_pool.busy[1] == 0:  # the slow call went to slot 0: give slot 1 one too
        running = flaky_pool.call("slow", 7, 1.5)
    # as if both actors sat on a node that is gone and this one had joined empty
    flaky_pool.nodes = ["elsewhere", "elsewhere"]
    assert await flaky_pool.rebalance({here}) == 1
    assert flaky_pool.actors[1] is not old and flaky_pool.nodes[1] == here
    assert await flaky_pool.result(running, 0) == 7  # finished on the old actor, once
    assert flaky_pool.resubmitted == 0
    await async_wait_until(lambda: _dead(old), 30, "the moved actor's exit by itself")
    assert await flaky_pool.result(flaky_pool.call("echo", 3, 0), 0) == 3


def _dead(actor) -> bool:
    import ray

    try:
        ray.get(actor.__ray_ready__.remote(), timeout=5)
    except ray.exceptions.RayActorError:
        return True
    return False


async def test_a_new_actor_that_lands_off_its_target_is_dropped(flaky_pool):
    flaky_pool.start()
    await async_wait_until(lambda: all(flaky_pool.nodes), 60, "the actors' nodes known")
    before = list(flaky_pool.actors)
    # a node that does not exist: the soft affinity puts the new actor here instead
    assert not await flaky_pool._move(1, "ab" * 28)
    assert flaky_pool.actors == before and flaky_pool.moved == 0


async def test_a_new_actor_that_does_not_come_up_in_time_is_given_up(flaky_pool, monkeypatch):
    import augserve.server.actors as actors

    flaky_pool.start()
    await async_wait_until(lambda: all(flaky_pool.nodes), 60, "the actors' nodes known")
    before, here = list(flaky_pool.actors), flaky_pool.nodes[0]
    monkeypatch.setattr(actors, "MOVE_START_TIMEOUT_S", 0.0)  # no new process is up at once
    assert not await flaky_pool._move(1, here)
    assert flaky_pool.actors == before and flaky_pool.moved == 0
    assert await flaky_pool.result(flaky_pool.call("echo", 5, 0), 0) == 5
