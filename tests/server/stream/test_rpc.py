"""StreamBatches over a real in-process server: exactly once, determinism, bad input, cancel."""

from __future__ import annotations

import asyncio

import grpc
import numpy as np
import pytest
from prometheus_client import REGISTRY

from augserve.clients.proto.augserve.v1 import stream_pb2 as pb
from augserve.clients.proto.augserve.v1 import stream_pb2_grpc as pb_grpc
from augserve.server.augment.pipeline import Pipeline
from augserve.server.data.datasets import DatasetSpec, open_dataset

from ...waiting import async_wait_until
from .conftest import DIGITS, OPTIONS, SMALL, by_index, collect, images_of, request

N_DIGITS = 1797


@pytest.mark.parametrize("sharding", ["contiguous", "strided"])
async def test_four_shards_cover_the_epoch_exactly_once(local, sharding):
    shards = await asyncio.gather(*(collect(local.target, num_shards=4, shard_index=i,
                                            sharding=sharding, batch_size=50, epoch=2)
                                    for i in range(4)))
    seen = [i for batches in shards for b in batches for i in b.sample_indices]
    assert len(seen) == len(set(seen)) == N_DIGITS
    assert set(seen) == set(range(N_DIGITS))
    for batches in shards:
        assert [b.position for b in batches] == list(range(len(batches)))
        assert all(b.epoch == 2 and b.batches_in_epoch == len(batches) for b in batches)
        assert all(len(b.labels) == len(b.sample_indices) == b.images.shape[0] for b in batches)


async def test_batches_carry_labels_and_the_pipelines_bytes(local):
    batches = await collect(local.target, batch_size=32, epoch=1, layout="NHWC")
    labels = open_dataset(DatasetSpec(**DIGITS)).labels
    first = batches[0]
    indices = np.asarray(first.sample_indices)
    np.testing.assert_array_equal(first.labels, labels[indices])
    dataset = open_dataset(DatasetSpec(**DIGITS))
    local_run = Pipeline.from_spec({**SMALL, "dtype": "uint8", "layout": "NHWC"}, "fast")(
        [dataset.load(int(i)) for i in indices], seed=3, epoch=1, sample_indices=indices)
    np.testing.assert_array_equal(images_of(first), local_run.images.numpy())
    assert first.images.dtype == "uint8" and list(first.images.shape) == [32, 24, 24, 3]


async def test_same_seed_same_batches_and_epochs_differ(local):
    one, two = await asyncio.gather(collect(local.target, epoch=4), collect(local.target, epoch=4))
    assert [b.SerializeToString() for b in one] == [b.SerializeToString() for b in two]
    other = await collect(local.target, epoch=5)
    assert [b.sample_indices for b in one] != [b.sample_indices for b in other]


async def test_start_position_and_stride(local):
    full = await collect(local.target, batch_size=100)
    tail = await collect(local.target, batch_size=100, start_position=7)
    assert [b.SerializeToString() for b in tail] == [b.SerializeToString() for b in full[7:]]
    lane = await collect(local.target, batch_size=100, start_position=1, position_stride=3)
    assert [b.position for b in lane] == list(range(1, len(full), 3))
    assert await collect(local.target, batch_size=100, start_position=len(full)) == []


async def test_drop_last_gives_equal_full_batches(local):
    shards = await asyncio.gather(*(collect(local.target, num_shards=3, shard_index=i,
                                            batch_size=64, drop_last=True) for i in range(3)))
    counts = {len(s) for s in shards}
    assert counts == {N_DIGITS // (3 * 64)}
    assert all(len(b.sample_indices) == 64 for s in shards for b in s)


async def test_float_output_keeps_normalize_uint8_defers_it(local):
    normalize = {"ops": [*SMALL["ops"], {"normalize": {}}]}
    uint8 = await collect(local.target, pipeline=_pipeline(normalize), batch_size=8,
                          start_position=200)
    assert uint8[0].images.dtype == "uint8"
    assert np.allclose(uint8[0].normalize_mean, [0.485, 0.456, 0.406])
    floats = await collect(local.target, pipeline=_pipeline(normalize), batch_size=8,
                           start_position=200, dtype="float32")
    x = np.frombuffer(floats[0].images.data, np.float32).reshape(tuple(floats[0].images.shape))
    mean = np.asarray(uint8[0].normalize_mean, np.float32)[:, None, None]
    std = np.asarray(uint8[0].normalize_std, np.float32)[:, None, None]
    np.testing.assert_allclose(x, (images_of(uint8[0]) / 255 - mean) / std, atol=2e-2)
    assert not floats[0].normalize_mean


def _pipeline(spec):
    from google.protobuf import json_format

    from augserve.clients.proto import POOL
    from augserve.clients.proto.augserve.v1 import augment_pb2

    return json_format.ParseDict(spec, augment_pb2.Pipeline(), descriptor_pool=POOL)


BAD = [
    ({"dataset": "nope"}, grpc.StatusCode.NOT_FOUND, "dataset 'nope'"),
    ({"pipeline_id": "nope"}, grpc.StatusCode.NOT_FOUND, "pipeline_id 'nope'"),
    ({"pipeline_id": None, "pipeline": _pipeline({"ops": [{"rotate": {"degrees": [9, 1]}}]})},
     grpc.StatusCode.INVALID_ARGUMENT, "rotate"),
    ({"shard_index": 4, "num_shards": 4}, grpc.StatusCode.INVALID_ARGUMENT, "shard_index"),
    ({"batch_size": 0}, grpc.StatusCode.INVALID_ARGUMENT, "batch_size"),
    ({"batch_size": 257}, grpc.StatusCode.RESOURCE_EXHAUSTED,
     "batch_size 257 is over max_batch_size (--stream-max-batch-size) = 256"),
    ({"dtype": "int7"}, grpc.StatusCode.INVALID_ARGUMENT, "dtype"),
    ({"layout": "CHWN"}, grpc.StatusCode.INVALID_ARGUMENT, "layout"),
    ({"sharding": "random"}, grpc.StatusCode.INVALID_ARGUMENT, "sharding"),
    ({"start_position": 99}, grpc.StatusCode.INVALID_ARGUMENT, "start_position"),
]


@pytest.mark.parametrize(("fields", "code", "words"), BAD, ids=[b[2] for b in BAD])
async def test_bad_input_gets_its_status(local, fields, code, words):
    message = request(**{k: v for k, v in fields.items() if v is not None})
    async with grpc.aio.insecure_channel(local.target, options=OPTIONS) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in pb_grpc.StreamServiceStub(channel).StreamBatches(message):
                pass
    assert caught.value.code() == code
    assert words in caught.value.details()


async def test_corrupt_file_is_named_then_skipped_or_fails(local, image_folder):
    counted = REGISTRY.get_sample_value("augserve_stream_skipped_samples_total") or 0
    batches = await collect(local.target, dataset="folder", pipeline=_pipeline(
        {"ops": [{"resize": {"size": [16, 16]}}]}), batch_size=4, shuffle=False)
    skipped = [s for b in batches for s in b.skipped]
    assert len(skipped) == 1 and "9_corrupt.jpg" in skipped[0]
    assert REGISTRY.get_sample_value("augserve_stream_skipped_samples_total") == counted + 1
    assert sum(len(b.sample_indices) for b in batches) == 10
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await collect(local.target, dataset="folder", pipeline=_pipeline(
            {"ops": [{"resize": {"size": [16, 16]}}]}), batch_size=4, on_corrupt="fail")
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "9_corrupt.jpg" in caught.value.details()
    # Other clients are untouched.
    assert len(await collect(local.target, batch_size=256)) == 8


async def test_images_over_max_image_pixels_are_refused_from_their_header(image_folder):
    from .conftest import settings, start

    # the folder's images are (20..24) x 30: 600..720 pixels; 23 and 24 rows are over 660
    running = await start(settings(image_folder, max_image_pixels=660))
    resize = _pipeline({"ops": [{"resize": {"size": [16, 16]}}]})
    try:
        batches = await collect(running.target, dataset="folder", pipeline=resize,
                                batch_size=4, shuffle=False)
        skipped = sorted(s for b in batches for s in b.skipped)
        bombs = [s for s in skipped if "over max_image_pixels = 660" in s]
        assert len(skipped) == 5 and len(bombs) == 4  # and the corrupt file
        assert sorted(s.split(":")[0].rsplit("/", 1)[-1] for s in bombs) == [
            "3.png", "3.png", "4.jpg", "4.jpg"]
        assert sum(len(b.sample_indices) for b in batches) == 6
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await collect(running.target, dataset="folder", pipeline=resize, batch_size=16,
                          shuffle=False, on_corrupt="fail")
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    finally:
        await running.server.stop(None)


async def test_mixed_sizes_without_a_resize_is_invalid(local):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await collect(local.target, dataset="folder", pipeline=_pipeline(
            {"ops": [{"horizontalFlip": {}}]}), batch_size=5, shuffle=False)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "differ in size" in caught.value.details()


async def test_datasets_are_listed(local):
    async with grpc.aio.insecure_channel(local.target) as channel:
        stub = pb_grpc.StreamServiceStub(channel)
        listed = await stub.ListDatasets(pb.ListDatasetsRequest())
        info = await stub.GetDataset(pb.GetDatasetRequest(name="folder"))
    assert {d.name for d in listed.datasets} >= {"digits", "lfw_subset", "photos", "folder"}
    assert info.size == 11 and list(info.classes) == ["a", "b"] and info.kind == "folder"


async def test_cancel_frees_the_streams_resources(local):
    counters, pool = local.servicer.counters, local.pool
    async with grpc.aio.insecure_channel(local.target, options=OPTIONS) as channel:
        call = pb_grpc.StreamServiceStub(channel).StreamBatches(request(batch_size=16))
        await call.read()
        assert counters.active_streams == 1
        call.cancel()
    await async_wait_until(lambda: counters.active_streams == 0 and pool.in_flight == 0,
                           interval_s=0.05, what="the cancelled stream's resources freed")
    assert by_index(await collect(local.target, batch_size=256))


async def test_a_dataset_that_cannot_be_opened_fails_precondition(image_folder, tmp_path):
    from .conftest import settings, start

    running = await start(settings(datasets={"gone": {"kind": "folder",
                                                      "path": str(tmp_path / "gone")}}))
    try:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await collect(running.target, dataset="gone")
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "gone" in caught.value.details()
    finally:
        await running.server.stop(None)


async def test_streams_over_max_streams_are_refused():
    from .conftest import settings, start

    running = await start(settings(max_streams=1))
    try:
        async with grpc.aio.insecure_channel(running.target, options=OPTIONS) as channel:
            stub = pb_grpc.StreamServiceStub(channel)
            first = stub.StreamBatches(request(batch_size=8))
            await first.read()
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                async for _ in stub.StreamBatches(request(batch_size=8)):
                    pass
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            first.cancel()
    finally:
        await running.server.stop(None)
