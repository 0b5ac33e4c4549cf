"""Elastic resumption in the epoch plan: S trainers hand an epoch over to S' != S."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from augserve.server.data.epoch import Consumed, EpochPlan, permutation, remaining, split

SHARDING = st.sampled_from(["contiguous", "strided"])


def reference_consumed(order: np.ndarray, layout: Consumed) -> set[int]:
    """The samples `layout` consumed, shard by shard with plain slicing (the reference)."""
    out: set[int] = set()
    b = layout.batch_size
    for i, count in enumerate(layout.batches):
        shard = split(order, layout.num_shards, i, b, layout.drop_last, layout.sharding)
        out.update(shard[: count * b].tolist())
    return out


@st.composite
def layouts(draw, size: int) -> Consumed:
    shards = draw(st.integers(1, 5))
    batch = draw(st.integers(1, 12))
    top = size // batch + 2
    counts = tuple(draw(st.integers(0, top)) for _ in range(shards))
    return Consumed(shards, batch, counts, draw(st.booleans()), draw(SHARDING))


@settings(max_examples=80, deadline=None)
@given(data=st.data(), size=st.integers(0, 200), seed=st.integers(0, 2**32))
def test_mask_matches_the_reference_and_remaining_keeps_the_order(data, size, seed):
    order = permutation(size, seed, 1)
    layout = data.draw(layouts(size))
    expected = reference_consumed(order, layout)
    assert set(order[layout.mask(size)].tolist()) == expected
    left = remaining(order, (layout,))
    assert left.tolist() == [i for i in order.tolist() if i not in expected]


@settings(max_examples=80, deadline=None)
@given(data=st.data(), size=st.integers(0, 200), seed=st.integers(0, 2**32),
       shards=st.integers(1, 5), batch=st.integers(1, 12), sharding=SHARDING,
       drop_last=st.booleans(), chain=st.integers(1, 3))
def test_new_shards_split_exactly_what_earlier_layouts_left(data, size, seed, shards, batch,
                                                           sharding, drop_last, chain):
    order = permutation(size, seed, 0)
    consumed = tuple(data.draw(layouts(size)) for _ in range(chain))
    taken: set[int] = set()
    left = order
    for layout in consumed:  # each layout split what the ones before it left
        taken |= reference_consumed(left, layout)
        left = np.array([i for i in left.tolist() if i not in taken], np.int64)
    plans = [EpochPlan(size, batch, seed, 0, True, shards, r, drop_last, sharding, consumed)
             for r in range(shards)]
    seen = [i for p in plans for b in p.batches() for i in b.tolist()]
    assert len(seen) == len(set(seen))
    assert not set(seen) & taken
    if drop_last:  # DDP: every new shard steps through the same number of full batches
        assert {p.num_batches() for p in plans} == {len(left) // (shards * batch)}
        assert all(len(b) == batch for p in plans for b in p.batches())
        assert set(seen) <= set(left.tolist())
    else:
        assert sorted(seen + sorted(taken)) == list(range(size))


def test_four_trainers_hand_over_to_two_mid_epoch():
    size, seed = 1000, 7
    old = [EpochPlan(size, 10, seed, 3, num_shards=4, shard_index=r) for r in range(4)]
    first = [b for p in old for b in p.batches()[:6]]  # every old trainer took 6 batches
    layout = Consumed(4, 10, (6, 6, 6, 6))
    new = [EpochPlan(size, 16, seed, 3, num_shards=2, shard_index=r, consumed=(layout,))
           for r in range(2)]
    rest = [b for p in new for b in p.batches()]
    everything = np.concatenate(first + rest)
    assert sorted(everything.tolist()) == list(range(size))


def test_strided_sharding_consumes_the_epoch_in_its_global_order_for_any_shard_count():
    """Step t of S strided trainers takes samples t*S*b .. (t+1)*S*b - 1 of the order."""
    size, batch, seed, epoch = 230, 5, 11, 2
    order = permutation(size, seed, epoch)
    for shards in (1, 2, 3, 4):
        plans = [EpochPlan(size, batch, seed, epoch, True, shards, r, sharding="strided")
                 for r in range(shards)]
        steps = max(p.num_batches() for p in plans)
        walked = []
        for t in range(steps):
            step = [b for p in plans for b in p.batches()[t : t + 1]]
            walked.append(sorted(np.concatenate(step).tolist()))
        cut = [sorted(order[t * shards * batch : (t + 1) * shards * batch].tolist())
               for t in range(steps)]
        assert walked == cut


def test_bad_layouts_are_refused():
    with pytest.raises(ValueError, match="batches"):
        Consumed(2, 4, (1,))
    with pytest.raises(ValueError, match="batches"):
        Consumed(1, 4, (-1,))
    with pytest.raises(ValueError, match="sharding"):
        Consumed(1, 4, (1,), sharding="random")
    with pytest.raises(ValueError, match="batch_size"):
        Consumed(1, 0, (1,))
