"""Global cursors: where S trainers are in an epoch, so that S' != S trainers can go on.

An epoch's order is a permutation seeded by (seed, epoch) alone. A cursor names the
epoch and what each earlier layout of trainers consumed of it (its shard count,
sharding, drop_last, batch size, and how many batches each of its shards had taken),
oldest first. A server given it splits what they left, in the epoch's order, over the
new trainers (see `augserve.server.data.epoch`): together they see exactly the samples
not seen yet, each once, augmented as they would have been (keys (seed, epoch, sample)).

A cursor is a small JSON-ready dict:

    {"cursor": 1, "dataset": "digits", "seed": 5, "shuffle": True, "epoch": 3,
     "consumed": [{"num_shards": 4, "batch_size": 64, "drop_last": True,
                   "sharding": "contiguous", "batches": [12, 12, 12, 12]}]}

Example:
    >>> states = [{"dataset": "d", "seed": 1, "shuffle": True, "epoch": 0, "position": 2,
    ...            "lane": [0, 1], "batch_size": 8, "num_shards": 2, "shard_index": i,
    ...            "drop_last": True, "sharding": "contiguous", "consumed": []}
    ...           for i in range(2)]
    >>> global_cursor(states)["consumed"][0]["batches"]
    [2, 2]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from augserve.clients.proto.augserve.v1 import stream_pb2 as pb

VERSION = 1
IDENTITY = ("dataset", "seed", "shuffle")
_SHARED = (*IDENTITY, "epoch", "batch_size", "num_shards", "drop_last", "sharding")


def is_cursor(state: Mapping[str, Any]) -> bool:
    """Whether `state` is a global cursor (not one loader's `state_dict()`)."""
    return "cursor" in state


def global_cursor(states: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The cursor of S trainers from the `state_dict()` of each (any order).

    Args:
        states: one state per shard 0..S-1, all of one stream and epoch, read with
            lane (0, 1) (not from a DataLoader worker's lane).

    Returns:
        The cursor: the epoch and every layout's consumed batches, this one's last.

    Raises:
        ValueError: states missing, repeated, of different streams or epochs, or of a lane.
    """
    if not states:
        raise ValueError("global_cursor: give the state_dict() of every rank")
    first = states[0]
    for state in states:
        for key in _SHARED:
            if state[key] != first[key]:
                raise ValueError(f"global_cursor: {key} differs between ranks "
                                 f"({state[key]!r} and {first[key]!r})")
        if state.get("consumed", []) != first.get("consumed", []):
            raise ValueError("global_cursor: consumed (the earlier layouts) differs between "
                             "ranks")
        if list(state["lane"]) != [0, 1]:
            raise ValueError(f"global_cursor: a state of lane {list(state['lane'])}; "
                             f"give each rank's loader state (lane [0, 1])")
    shards = first["num_shards"] or 1
    ranks = sorted(state["shard_index"] for state in states)
    if ranks != list(range(shards)):
        raise ValueError(f"global_cursor: expected the states of shards 0..{shards - 1} "
                         f"once each, got shards {ranks}")
    counts = [0] * shards
    for state in states:
        counts[state["shard_index"]] = int(state["position"])
    consumed = [dict(layout) for layout in first.get("consumed", [])]  # older states: none
    if any(counts):
        consumed.append({"num_shards": shards, "batch_size": first["batch_size"],
                         "drop_last": first["drop_last"],
                         "sharding": first["sharding"] or "contiguous", "batches": counts})
    cursor: dict[str, Any] = {"cursor": VERSION}
    cursor.update({key: first[key] for key in IDENTITY})
    cursor.update(epoch=int(first["epoch"]), consumed=consumed)
    return cursor


def lockstep_cursor(state: Mapping[str, Any]) -> dict[str, Any]:
    """The cursor from one rank's state, every rank having taken as many batches.

    That holds for data-parallel trainers, which step together (DDP), at any step of
    the epoch: a rank can save it alone, with no all-gather.
    """
    shards = state["num_shards"] or 1
    return global_cursor([{**state, "shard_index": i} for i in range(shards)])


def check_cursor(cursor: Mapping[str, Any], request: pb.StreamRequest) -> None:
    """Raise ValueError unless `cursor` is a global cursor of `request`'s stream."""
    if cursor.get("cursor") != VERSION:
        raise ValueError(f"cursor: version {cursor.get('cursor')!r} is not {VERSION}")
    for key in IDENTITY:
        if cursor[key] != getattr(request, key):
            raise ValueError(f"cursor: {key} is {cursor[key]!r}, this loader has "
                             f"{getattr(request, key)!r}")


def consumed_messages(layouts: Sequence[Mapping[str, Any]]) -> list[pb.ConsumedBatches]:
    """A cursor's layouts as the `StreamRequest.consumed` messages."""
    return [pb.ConsumedBatches(num_shards=layout["num_shards"], batch_size=layout["batch_size"],
                               drop_last=layout["drop_last"], sharding=layout["sharding"],
                               batches=[int(c) for c in layout["batches"]])
            for layout in layouts]
