"""Elastic resumption: S trainers' RemoteLoaders checkpoint mid-epoch, S' != S go on."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
import pytest_asyncio

from augserve.clients import RemoteLoader

from ..server.stream.conftest import settings, start

N = 1797
KWARGS = {"dataset": "digits32", "pipeline_id": "small", "seed": 5}
Seen = dict[int, bytes]  # sample index -> its augmented bytes


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def target():
    running = await start(settings())
    yield running.target
    await running.server.stop(None)


def take(loader: RemoteLoader, limit: int | None, seen: Seen) -> list[int]:
    """Read up to `limit` batches into `seen` (refusing a sample seen before); their sizes."""
    sizes = []
    for batch in itertools.islice(loader.batches(), limit):
        for index, image in zip(batch.sample_indices.tolist(), batch.images, strict=True):
            assert index not in seen, f"sample {index} delivered twice"
            seen[index] = image.tobytes()
        sizes.append(len(batch.sample_indices))
    return sizes


def layout(target: str, shards: int, batch_size: int, drop_last: bool,
           state: dict[str, Any] | None, limit: int | None, seen: Seen,
           stream: Mapping[str, Any] = KWARGS) -> tuple[list[dict[str, Any]], list[list[int]]]:
    """`shards` trainers resume from `state` (a cursor) and read `limit` batches each.

    Returns:
        Every rank's state_dict() afterwards, and every rank's batch sizes.
    """
    states, sizes = [], []
    for rank in range(shards):
        with RemoteLoader(target, batch_size=batch_size, num_shards=shards, shard_index=rank,
                          drop_last=drop_last, prefetch=3, **stream) as loader:
            if state is not None:
                loader.load_state_dict(state)
            sizes.append(take(loader, limit, seen))
            states.append(loader.state_dict())
    return states, sizes


def hand_over(target: str, steps: Sequence[tuple[int, int, bool, int | None]],
              stream: Mapping[str, Any] = KWARGS
              ) -> tuple[list[Seen], list[list[list[int]]], list[dict[str, Any]]]:
    """Layouts (shards, batch_size, drop_last, batches each) of `stream` take the epoch.

    Returns:
        What each layout saw, each layout's per-rank batch sizes, and the cursors between.
    """
    seen, sizes, cursors, cursor = [], [], [], None
    for shards, batch_size, drop_last, limit in steps:
        seen.append({})
        states, layout_sizes = layout(target, shards, batch_size, drop_last, cursor, limit,
                                      seen[-1], stream)
        sizes.append(layout_sizes)
        cursor = RemoteLoader.global_cursor(states[::-1])  # any order of ranks
        cursors.append(cursor)
    return seen, sizes, cursors


def single_epoch(target: str, stream: Mapping[str, Any] = KWARGS) -> Seen:
    """One trainer's uninterrupted epoch: the reference bytes of every sample."""
    seen: Seen = {}
    with RemoteLoader(target, batch_size=128, **stream) as loader:
        take(loader, None, seen)
    return seen


async def test_four_trainers_hand_over_to_two_with_drop_last(target):
    seen, sizes, cursors = await asyncio.to_thread(
        hand_over, target, [(4, 50, True, 3), (2, 50, True, None)])
    old, new = seen
    assert len(old) == 4 * 3 * 50 and not old.keys() & new.keys()
    # drop_last: both new ranks step through the same full batches, the remainder's tail cut
    assert sizes[1] == [[50] * 11, [50] * 11]  # (1797 - 600) // 100 = 11
    assert cursors[0]["epoch"] == 0 and cursors[0]["consumed"] == [
        {"num_shards": 4, "batch_size": 50, "drop_last": True, "sharding": "contiguous",
         "batches": [3, 3, 3, 3]}]
    assert cursors[1]["epoch"] == 1 and cursors[1]["consumed"] == []  # the epoch is done
    reference = await asyncio.to_thread(single_epoch, target)
    assert all(reference[i] == image for part in seen for i, image in part.items())


async def test_two_trainers_hand_over_to_three_and_the_union_is_exact(target):
    steps = [(2, 64, False, 5), (3, 40, False, None)]
    first = await asyncio.to_thread(hand_over, target, steps)
    seen, sizes, _ = first
    old, new = seen
    assert len(old) == 2 * 5 * 64 and not old.keys() & new.keys()
    assert sorted(old.keys() | new.keys()) == list(range(N))
    assert sum(map(sum, sizes[1])) == N - 640
    reference = await asyncio.to_thread(single_epoch, target)
    assert {**old, **new} == reference  # each sample augmented as without the hand-over
    again = await asyncio.to_thread(hand_over, target, steps)
    assert again == first  # the same batches, bytes and cursors on every run


async def test_a_chain_of_layouts_in_one_epoch_sees_every_sample_once(target):
    seen, _, cursors = await asyncio.to_thread(
        hand_over, target, [(4, 30, False, 2), (2, 50, True, 3), (3, 64, False, None)])
    assert len(cursors[1]["consumed"]) == 2
    assert sum(map(len, seen)) == N
    assert sorted(set().union(*(part.keys() for part in seen))) == list(range(N))


async def test_a_resumed_loader_restarts_from_its_own_state_dict(target):
    def scenario():
        _, _, cursors = hand_over(target, [(4, 50, False, 2)])
        kwargs = {**KWARGS, "batch_size": 40, "num_shards": 2, "shard_index": 1}
        with RemoteLoader(target, **kwargs) as whole:
            whole.load_state_dict(cursors[0])
            everything = take(whole, None, whole_seen := {})
        with RemoteLoader(target, **kwargs) as first:
            first.load_state_dict(cursors[0])
            head = take(first, 4, head_seen := {})
            state = first.state_dict()
        with RemoteLoader(target, **kwargs) as second:
            second.load_state_dict(state)
            tail = take(second, None, head_seen)
        return everything, whole_seen, head + tail, head_seen, state

    everything, whole_seen, pieces, pieces_seen, state = await asyncio.to_thread(scenario)
    assert state["position"] == 4 and len(state["consumed"]) == 1
    assert pieces == everything and pieces_seen == whole_seen


async def test_the_next_epoch_after_a_resumed_one_is_the_ordinary_epoch(target):
    def scenario():
        _, _, cursors = hand_over(target, [(2, 64, False, 3)])
        epochs = []
        for state in (cursors[0], None):
            with RemoteLoader(target, batch_size=64, epochs=2, **KWARGS) as loader:
                if state is None:
                    loader.set_epoch(1)
                    loader.epochs = 1
                else:
                    loader.load_state_dict(state)
                batches = [(b.epoch, b.sample_indices.tolist()) for b in loader.batches()]
            epochs.append([b for b in batches if b[0] == 1])
        return epochs

    resumed, ordinary = await asyncio.to_thread(scenario)
    assert resumed == ordinary and len(ordinary) == 29


def test_lockstep_cursor_from_one_rank_equals_the_gathered_one():
    states = []
    for rank in range(3):
        loader = RemoteLoader("127.0.0.1:1", batch_size=8, num_shards=3, shard_index=rank,
                              drop_last=True, **KWARGS)
        loader.position = 7
        states.append(loader.state_dict())
        loader.close()
    assert RemoteLoader.global_cursor(states) == RemoteLoader.global_cursor(states[::-1])
    loader = RemoteLoader("127.0.0.1:1", batch_size=8, num_shards=3, shard_index=2,
                          drop_last=True, **KWARGS)
    loader.position = 7
    assert loader.cursor() == RemoteLoader.global_cursor(states)
    loader.close()


def test_bad_states_and_cursors_are_refused():
    loaders = [RemoteLoader("127.0.0.1:1", batch_size=8, num_shards=2, shard_index=rank,
                            **KWARGS) for rank in range(2)]
    states = [loader.state_dict() for loader in loaders]
    with pytest.raises(ValueError, match=r"shards 0\.\.1"):
        RemoteLoader.global_cursor(states[:1])
    with pytest.raises(ValueError, match=r"shards 0\.\.1"):
        RemoteLoader.global_cursor([states[0], states[0]])
    with pytest.raises(ValueError, match="epoch differs"):
        RemoteLoader.global_cursor([states[0], {**states[1], "epoch": 1}])
    with pytest.raises(ValueError, match="lane"):
        RemoteLoader.global_cursor([{**s, "lane": [0, 2]} for s in states])
    with pytest.raises(ValueError, match="give the state_dict"):
        RemoteLoader.global_cursor([])
    cursor = RemoteLoader.global_cursor(states)
    with pytest.raises(ValueError, match="seed"):
        loaders[0].load_state_dict({**cursor, "seed": 6})
    with pytest.raises(ValueError, match="version"):
        loaders[0].load_state_dict({**cursor, "cursor": 2})
    for loader in loaders:
        loader.close()
