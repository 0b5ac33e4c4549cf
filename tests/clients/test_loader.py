"""RemoteLoader against in-process servers: epochs, resume, several servers, reconnect, torch."""

from __future__ import annotations

import asyncio
import itertools
import platform

import numpy as np
import pytest
import pytest_asyncio

from augserve.clients import RemoteLoader
from augserve.clients.stream_batch import reuse_large_buffers
from augserve.server.errors import Unavailable
from augserve.server.stream.servicer import StreamServicer

from ..server.stream.conftest import PIPELINES, settings, start

N = 1797
KWARGS = {"dataset": "digits32", "pipeline_id": "small", "batch_size": 100, "seed": 5}


class FlakyServicer(StreamServicer):
    """Fails its first two streams with UNAVAILABLE after two batches (a restarting server)."""

    failures = 2

    async def StreamBatches(self, request, context):
        sent = 0
        async for batch in super().StreamBatches(request, context):
            if FlakyServicer.failures and sent == 2:
                FlakyServicer.failures -= 1
                raise Unavailable("server restarting")
            sent += 1
            yield batch


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def targets():
    servers = [await start(settings()), await start(settings()),
               await start(settings(), servicer_class=FlakyServicer)]
    assert PIPELINES
    yield [s.target for s in servers]
    for s in servers:
        await s.server.stop(None)


def run(loader, limit=None):
    return [(b.epoch, b.position, b.sample_indices.tolist(), b.images.tobytes(), b.labels.tolist())
            for b in itertools.islice(loader.batches(), limit)]


async def test_numpy_batches_over_two_epochs(targets):
    loader = RemoteLoader(targets[0], epochs=2, **KWARGS)
    pairs = await asyncio.to_thread(lambda: list(loader))
    assert len(pairs) == 2 * 18
    images, labels = pairs[0]
    assert isinstance(images, np.ndarray) and images.shape == (100, 3, 24, 24)
    assert images.dtype == np.uint8 and labels.dtype == np.int64 and labels.shape == (100,)
    assert loader.state_dict()["epoch"] == 2 and loader.state_dict()["position"] == 0
    loader.close()


async def test_resume_from_a_mid_epoch_state_gives_identical_batches(targets):
    def scenario():
        with RemoteLoader(targets[0], epochs=2, prefetch=6, **KWARGS) as full:
            everything = run(full)
        with RemoteLoader(targets[0], epochs=2, prefetch=6, **KWARGS) as first:
            head = run(first, 23)  # into the second epoch, with batches prefetched
            state = first.state_dict()
        with RemoteLoader(targets[0], epochs=2, prefetch=6, **KWARGS) as second:
            second.load_state_dict(state)
            second.epochs = 2 - state["epoch"]
            tail = run(second)
        return everything, head, state, tail

    everything, head, state, tail = await asyncio.to_thread(scenario)
    assert state["epoch"] == 1 and state["position"] == 5
    assert head + tail == everything
    assert len({i for e, _, idx, _, _ in everything if e == 1 for i in idx}) == N


async def test_state_of_another_stream_is_refused(targets):
    loader = RemoteLoader(targets[0], **KWARGS)
    state = {**loader.state_dict(), "seed": 6}
    with pytest.raises(ValueError, match="seed"):
        loader.load_state_dict(state)


async def test_spread_over_two_servers_gives_the_same_batches(targets):
    def scenario():
        with RemoteLoader(targets[0], **KWARGS) as one, \
                RemoteLoader(targets[:2], prefetch=3, **KWARGS) as two:
            return run(one), run(two)

    one, two = await asyncio.to_thread(scenario)
    assert one == two


async def test_unavailable_reconnects_and_loses_nothing(targets):
    def scenario():
        with RemoteLoader(targets[0], **KWARGS) as good, \
                RemoteLoader(targets[2], backoff_s=0.05, **KWARGS) as flaky:
            return run(good), run(flaky), flaky.reconnects

    good, flaky, reconnects = await asyncio.to_thread(scenario)
    assert reconnects == 2 and flaky == good


async def test_lanes_split_positions(targets):
    def scenario():
        lanes = [RemoteLoader(targets[0], lane=(w, 2), **KWARGS) for w in range(2)]
        return [run(lane) for lane in lanes], run(RemoteLoader(targets[0], **KWARGS))

    (even, odd), full = await asyncio.to_thread(scenario)
    merged = [b for pair in itertools.zip_longest(even, odd) for b in pair if b is not None]
    assert merged == full


async def test_torch_output_and_iterable_dataset_adapter(targets):
    import torch

    from augserve.clients.loader import TorchRemoteDataset

    def scenario():
        dataset = TorchRemoteDataset(targets=targets[0], **KWARGS)
        batches = list(torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=0))
        with RemoteLoader(targets[0], **KWARGS) as loader:
            return batches, list(loader), dataset.state_dict()

    batches, plain, state = await asyncio.to_thread(scenario)
    assert isinstance(batches[0][0], torch.Tensor) and batches[0][0].dtype == torch.uint8
    assert len(batches) == len(plain) == 18 and state["epoch"] == 1
    for (x, y), (a, b) in zip(batches, plain, strict=True):
        assert np.array_equal(x.numpy(), a) and np.array_equal(y.numpy(), b)


@pytest.mark.parametrize("dtype", ["uint8", "float32", "float16", "bfloat16", "empty"])
def test_parse_batch_matches_protobuf(dtype):
    import torch

    from augserve.clients.proto.augserve.v1 import augment_pb2
    from augserve.clients.proto.augserve.v1 import stream_pb2 as pb
    from augserve.clients.stream_batch import parse_batch
    from augserve.server.stream.pool import BatchResult
    from augserve.server.stream.servicer import encode_batch
    from augserve.server.stream.stream import MadeBatch

    x = torch.linspace(-2, 2, 2 * 3 * 4 * 5).reshape(2, 3, 4, 5)
    if dtype == "empty":
        images, kept = None, np.array([False, False])
    else:
        t = x.to(getattr(torch, dtype)) if dtype != "uint8" else (x * 50 + 100).to(torch.uint8)
        images = (t.view(torch.int16) if dtype == "bfloat16" else t).numpy()
        kept = np.array([True, True])
    result = BatchResult(images, "uint8" if dtype == "empty" else dtype, kept, ["a.jpg: bad"])
    raw = encode_batch(MadeBatch(7, np.array([5, 9]), result), np.arange(10) * 2, 3, 8,
                       (0.5,), (0.25,))
    ours, theirs = parse_batch(raw), pb.Batch.FromString(raw)
    assert ours.labels.tolist() == [10, 18] == list(theirs.labels)
    assert ours.sample_indices.tolist() == [5, 9] and ours.position == 7 and ours.epoch == 3
    assert ours.batches_in_epoch == 8 and ours.skipped == ("a.jpg: bad",)
    assert ours.normalize_mean == (0.5,) and ours.normalize_std == (0.25,)
    if dtype == "empty":
        assert ours.images.size == 0 and not theirs.images.shape
        return
    from augserve.clients.augment import decode_image

    expected = decode_image(theirs.images)
    assert ours.images.dtype == expected.dtype and ours.images.shape == (2, 3, 4, 5)
    np.testing.assert_array_equal(ours.images, expected)
    assert isinstance(theirs.images, augment_pb2.Image)


async def test_dataloader_workers_read_lanes_in_position_order(targets):
    import torch

    from augserve.clients.loader import TorchRemoteDataset

    def scenario():
        dataset = TorchRemoteDataset(targets=targets[0], **KWARGS)
        workers = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=2,
                                              multiprocessing_context="spawn")
        with RemoteLoader(targets[0], **KWARGS) as loader:
            return list(workers), list(loader)

    workers, plain = await asyncio.to_thread(scenario)
    assert len(workers) == len(plain) == 18
    for (x, y), (a, b) in zip(workers, plain, strict=True):
        assert np.array_equal(x.numpy(), a) and np.array_equal(y.numpy(), b)


def test_bad_arguments_fail_at_construction():
    with pytest.raises(ValueError, match="exactly one"):
        RemoteLoader("x:1", "digits", 8)
    with pytest.raises(ValueError, match="pipeline"):
        RemoteLoader("x:1", "digits", 8, pipeline={"ops": [{"spin": {}}]})
    with pytest.raises(ValueError, match="output"):
        RemoteLoader("x:1", "digits", 8, pipeline_id="p", output="jax")


def test_reuse_large_buffers_applies_on_glibc_once_and_is_a_no_op_elsewhere():
    on_glibc = platform.libc_ver()[0] == "glibc"
    assert reuse_large_buffers() is on_glibc
    hits = reuse_large_buffers.cache_info().hits
    assert reuse_large_buffers() is on_glibc
    assert reuse_large_buffers.cache_info().hits == hits + 1  # applied once per process
