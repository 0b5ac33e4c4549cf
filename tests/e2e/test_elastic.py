"""Elastic resumption through the real server (Ray pool, shared-memory transport)."""

from __future__ import annotations

import asyncio

from ..clients.test_elastic import hand_over, single_epoch

N = 1797  # scikit-learn's digits
STREAM = {"dataset": "digits", "seed": 9,
          "pipeline": {"ops": [{"randomResizedCrop": {"size": [16, 16], "scale": [0.5, 1]}},
                               {"horizontalFlip": {}, "p": 0.5}]}}


async def test_four_trainers_to_two_then_three_sees_every_sample_once_as_augmented(server):
    target = f"127.0.0.1:{server.port}"
    steps = [(4, 64, True, 2), (2, 64, True, 3), (3, 50, False, None)]
    seen, _, cursors = await asyncio.to_thread(hand_over, target, steps, STREAM)
    assert [len(part) for part in seen[:2]] == [4 * 2 * 64, 2 * 3 * 64]
    assert sum(map(len, seen)) == N  # no sample twice (each part refuses repeats too)
    assert sorted(set().union(*(part.keys() for part in seen))) == list(range(N))
    assert cursors[1]["consumed"][1]["batches"] == [3, 3]
    reference = await asyncio.to_thread(single_epoch, target, STREAM)
    assert {k: v for part in seen for k, v in part.items()} == reference


async def test_drop_last_keeps_the_new_trainers_in_lockstep(server):
    target = f"127.0.0.1:{server.port}"
    seen, sizes, _ = await asyncio.to_thread(
        hand_over, target, [(2, 64, True, 4), (3, 64, True, None)], STREAM)
    assert sizes[1] == [[64] * 6] * 3  # (1797 - 512) // 192 = 6 full batches each
    assert not seen[0].keys() & seen[1].keys()
