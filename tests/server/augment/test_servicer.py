"""The Augment RPC on a real in-process grpc.aio server (port 0, interceptors on)."""

from __future__ import annotations

import asyncio
import json

import grpc
import numpy as np
import pytest
import pytest_asyncio
import torch

from augserve.clients.augment import AugmentClient
from augserve.clients.proto.augserve.v1 import augment_pb2 as pb
from augserve.clients.proto.augserve.v1 import augment_pb2_grpc as pb_grpc
from augserve.server.augment.pipeline import IMAGENET_TRAIN, Pipeline
from augserve.server.augment.pool import AugmentPool
from augserve.server.augment.servicer import SERVICE_NAME, add_augment_service
from augserve.server.augment.settings import AugmentSettings
from augserve.server.interceptors import ErrorMappingInterceptor

SMALL = {"ops": [{"randomResizedCrop": {"size": [32, 40]}}, {"horizontalFlip": {}, "p": 0.5},
                 {"colorJitter": {"brightness": 0.4, "hue": 0.1}, "p": 0.8}],
         "dtype": "uint8", "layout": "NHWC"}
SETTINGS = AugmentSettings(max_pixels=300 * 300, max_images=16, pool_size=0,
                           pipelines={"small": json.dumps(SMALL)})


async def start(settings: AugmentSettings, pool: AugmentPool | None = None):
    server = grpc.aio.server(interceptors=[ErrorMappingInterceptor()])
    name = add_augment_service(server, settings, pool)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, name, f"127.0.0.1:{port}"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def address():
    server, name, target = await start(SETTINGS)
    assert name == SERVICE_NAME == "augserve.v1.AugmentService"
    yield target
    await server.stop(None)


@pytest_asyncio.fixture(loop_scope="session")
async def stub(address):
    async with grpc.aio.insecure_channel(address) as channel:
        yield pb_grpc.AugmentServiceStub(channel)


def image_message(image: np.ndarray) -> pb.Image:
    return pb.Image(data=image.tobytes(), shape=list(image.shape), dtype="uint8")


def request(images, **kwargs) -> pb.AugmentRequest:
    kwargs.setdefault("pipeline_id", "small")
    return pb.AugmentRequest(images=[image_message(im) for im in images], **kwargs)


async def call_client(address: str, *args, **kwargs):
    def run():
        with AugmentClient(address) as client:
            return client.augment(*args, **kwargs)

    return await asyncio.to_thread(run)


async def test_inline_pipeline_matches_local_run(address, mixed):
    reply = await call_client(address, mixed, pipeline=SMALL, seed=5, sample_indices=[4, 5, 6, 7])
    local = Pipeline.from_spec(SMALL, backend="fast")(mixed, seed=5, sample_indices=[4, 5, 6, 7])
    assert reply.images.shape == (4, 32, 40, 3)
    np.testing.assert_array_equal(reply.images, local.images.numpy())


async def test_mixed_sizes_come_back_as_a_list(address, mixed):
    spec = {"ops": [{"horizontalFlip": {}, "p": 0.5}], "dtype": "uint8", "layout": "NHWC"}
    reply = await call_client(address, mixed, pipeline=spec, seed=3)
    assert isinstance(reply.images, list)
    local = Pipeline.from_spec(spec, backend="fast")(mixed, seed=3).images
    for got, want in zip(reply.images, local, strict=True):
        np.testing.assert_array_equal(got, want.numpy())


async def test_registered_imagenet_pipeline_and_replay(address, photos):
    first = await call_client(address, photos[:3], pipeline_id="imagenet_train", seed=9,
                              return_params=True)
    assert first.images.shape == (3, 3, 224, 224) and first.images.dtype == np.float32
    assert len(first.params) == 3 and len(first.params[0].ops) == len(IMAGENET_TRAIN.ops)
    again = await call_client(address, photos[:3], pipeline_id="imagenet_train", seed=1,
                              params=first.params)
    assert again.images.tobytes() == first.images.tobytes()


async def test_bfloat16_output_is_widened_exactly(address, photos):
    spec = dict(SMALL, dtype="bfloat16", layout="NCHW")
    reply = await call_client(address, photos[:2], pipeline=spec, seed=2)
    local = Pipeline.from_spec(spec, backend="fast")(photos[:2], seed=2).images
    np.testing.assert_array_equal(reply.images, local.to(torch.float32).numpy())


async def test_targets_travel(stub, photos):
    targets = pb.Targets(boxes=[10, 20, 100, 120], keypoints=[50, 60])
    targets.mask.CopyFrom(pb.Image(data=np.ones((256, 256), np.uint8).tobytes(),
                                   shape=[256, 256], dtype="uint8"))
    reply = await stub.Augment(request(photos[:1], targets=[targets], seed=3))
    moved = reply.targets[0]
    assert list(moved.mask.shape) == [32, 40]
    assert len(moved.boxes) in (0, 4) and len(moved.keypoints_visible) == 1


def bad_requests(photo: np.ndarray) -> dict[str, tuple[pb.AugmentRequest, grpc.StatusCode, str]]:
    ok = image_message(photo)
    no_op = pb.Pipeline(ops=[pb.OpSpec()])
    rotate = pb.Pipeline()
    rotate.ops.add().rotate.degrees.extend([30, -30])
    gamma_bad, gamma = pb.Pipeline(), pb.Pipeline()
    for message, limits in ((gamma_bad, [0.001, 2]), (gamma, [0.5, 2])):
        named = message.ops.add().named
        named.name = "random_gamma"
        named.params.update({"gamma": limits})
    inv = grpc.StatusCode.INVALID_ARGUMENT
    return {
        "unknown op": (pb.AugmentRequest(images=[ok], pipeline=no_op), inv, "ops[0]"),
        "param out of range": (pb.AugmentRequest(images=[ok], pipeline=rotate), inv,
                               "(rotate).degrees"),
        "bytes do not match shape": (
            pb.AugmentRequest(images=[pb.Image(data=ok.data[:-1], shape=ok.shape)],
                              pipeline_id="small"), inv, "bytes"),
        "zero-size image": (pb.AugmentRequest(images=[pb.Image(data=b"", shape=[0, 5, 3])],
                                              pipeline_id="small"), inv, "zero-size"),
        "over max_pixels": (pb.AugmentRequest(
            images=[pb.Image(data=bytes(301 * 300 * 3), shape=[301, 300, 3])],
            pipeline_id="small"), grpc.StatusCode.RESOURCE_EXHAUSTED,
            "images[0]: 301x300 is over max_pixels (--augment-max-pixels) = 90000"),
        "wrong dtype": (pb.AugmentRequest(images=[pb.Image(data=ok.data, shape=ok.shape,
                                                           dtype="float32")],
                                          pipeline_id="small"), inv, "uint8"),
        "wrong channels": (pb.AugmentRequest(images=[pb.Image(data=ok.data,
                                                              shape=[256, 768, 1])],
                                             pipeline_id="small"), inv, "shape"),
        "no images": (pb.AugmentRequest(pipeline_id="small"), inv, "images"),
        "too many images": (pb.AugmentRequest(images=[ok] * 17, pipeline_id="small"),
                            grpc.StatusCode.RESOURCE_EXHAUSTED,
                            "images: 17 is over max_images (--augment-max-images) = 16"),
        "no pipeline": (pb.AugmentRequest(images=[ok]), inv, "pipeline"),
        "unknown pipeline id": (pb.AugmentRequest(images=[ok], pipeline_id="nope"),
                                grpc.StatusCode.NOT_FOUND, "nope"),
        "params of the wrong length": (pb.AugmentRequest(
            images=[ok], pipeline_id="small", params=[pb.SampleParams()]), inv, "params"),
        "replayed params out of range": (pb.AugmentRequest(
            images=[ok], pipeline_id="small", params=[pb.SampleParams(ops=[
                pb.OpParams(applied=True, values={"x0": 0, "y0": 0, "w": 0, "h": 5}),
                pb.OpParams(applied=False), pb.OpParams(applied=False, values={
                    "brightness": 1, "contrast": 1, "saturation": 1, "hue": 0})])]),
            inv, "random_resized_crop: w"),
        "named op param out of range": (pb.AugmentRequest(images=[ok], pipeline=gamma_bad), inv,
                                        "ops[0] (random_gamma).gamma: expected 0.01 <= min"),
        "replayed gamma out of range": (pb.AugmentRequest(
            images=[ok], pipeline=gamma, params=[pb.SampleParams(ops=[
                pb.OpParams(applied=True, values={"gamma": 50})])]),
            inv, "random_gamma: gamma must be finite and within [0.01, 10.0]"),
        "normalize with uint8 out": (pb.AugmentRequest(images=[ok], pipeline=pb.Pipeline(
            ops=[pb.OpSpec(normalize=pb.Normalize())], dtype="uint8")), inv, "dtype"),
    }


def resize_to(height: int, width: int, dtype: str = "uint8") -> pb.Pipeline:
    return pb.Pipeline(ops=[pb.OpSpec(resize=pb.Resize(size=[height, width]))], dtype=dtype)


class CountingPool(AugmentPool):
    """The in-process pool, counting the calls that reach it."""

    def __init__(self) -> None:
        super().__init__(size=0, backend="fast", num_cpus=0, chunk_size=64)
        self.calls = 0

    async def augment(self, *args, **kwargs):
        self.calls += 1
        return await super().augment(*args, **kwargs)


OVER_OUTPUT_LIMITS = {
    # the probe's case: 16 tiny images resized to 8000 x 8000 (3 GB of uint8)
    "max_output_pixels": (16, resize_to(8000, 8000),
                          "images[0]: an output of 64000000 pixels is over max_output_pixels "
                          "(--augment-max-output-pixels) = 16777216"),
    "max_output_bytes": (1, resize_to(4096, 2048, "float32"),
                         "images[0]: an output of 100663296 bytes (float32) is over "
                         "max_output_bytes (--augment-max-output-bytes) = 67108864"),
    "max_request_output_pixels": (16, resize_to(4096, 1100),
                                  "images: 72089600 output pixels in all is over "
                                  "max_request_output_pixels"),
    "max_request_output_bytes": (16, resize_to(2048, 2048, "float32"),
                                 "images: 805306368 output bytes in all (float32) is over "
                                 "max_request_output_bytes (--augment-max-request-output-bytes)"
                                 " = 268435456"),
}


@pytest.mark.parametrize("limit", list(OVER_OUTPUT_LIMITS))
async def test_outputs_over_a_limit_are_refused_before_any_work(limit):
    count, pipeline, needle = OVER_OUTPUT_LIMITS[limit]
    pool = CountingPool()
    server, _, target = await start(SETTINGS, pool)
    try:
        async with grpc.aio.insecure_channel(target) as channel:
            stub = pb_grpc.AugmentServiceStub(channel)
            tiny = image_message(np.zeros((4, 4, 3), np.uint8))
            huge = stub.Augment(pb.AugmentRequest(images=[tiny] * count, pipeline=pipeline))
            normal = stub.Augment(request([np.zeros((8, 8, 3), np.uint8)], seed=1))
            refused, reply = await asyncio.gather(huge, normal, return_exceptions=True)
            assert isinstance(refused, grpc.aio.AioRpcError)
            assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert needle in refused.details()
            assert len(reply.images) == 1  # the request beside it is served
            assert pool.calls == 1  # the refused one never reached the pool
    finally:
        await server.stop(None)


async def test_outputs_at_the_limit_are_served():
    settings = AugmentSettings(pool_size=0, max_output_pixels=64 * 64)
    server, _, target = await start(settings)
    try:
        async with grpc.aio.insecure_channel(target) as channel:
            stub = pb_grpc.AugmentServiceStub(channel)
            tiny = image_message(np.zeros((4, 4, 3), np.uint8))
            reply = await stub.Augment(pb.AugmentRequest(images=[tiny],
                                                         pipeline=resize_to(64, 64)))
            assert list(reply.images[0].shape) == [3, 64, 64]
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.Augment(pb.AugmentRequest(images=[tiny], pipeline=resize_to(64, 65)))
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        await server.stop(None)


@pytest.mark.parametrize("case", list(bad_requests(np.zeros((4, 4, 3), np.uint8))))
async def test_bad_input_gets_exact_status(stub, photos, case):
    message, code, needle = bad_requests(photos[0])[case]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Augment(message)
    assert info.value.code() == code
    assert needle in info.value.details()
    # the server is unharmed and keeps serving
    reply = await stub.Augment(request(photos[:1], seed=1))
    assert len(reply.images) == 1


async def test_runs_on_a_ray_pool(ray_session, photos):
    pool = AugmentPool(size=2, backend="fast", num_cpus=0.25, chunk_size=3)
    server, _, target = await start(AugmentSettings(pool_size=2), pool)
    try:
        batch = [photos[i % 6] for i in range(8)]
        reply = await call_client(target, batch, pipeline_id="imagenet_train", seed=4)
        assert reply.images.shape == (8, 3, 224, 224)
        want = Pipeline(IMAGENET_TRAIN, backend="fast")(batch, seed=4).images.numpy()
        assert reply.images.tobytes() == want.tobytes()
    finally:
        await server.stop(None)
        pool.shutdown()


async def test_concurrent_calls_do_not_disturb_each_other(stub, photos):
    good = [request(photos[i : i + 2], seed=i, sample_indices=[i, i + 1]) for i in range(4)]
    bad = pb.AugmentRequest(images=[pb.Image(data=b"xx", shape=[2, 2, 3])], pipeline_id="small")
    calls = [stub.Augment(r) for r in good] + [stub.Augment(bad)] * 3
    results = await asyncio.gather(*calls, return_exceptions=True)
    pipeline = Pipeline.from_spec(SMALL, backend="fast")
    for i, reply in enumerate(results[:4]):
        want = pipeline(photos[i : i + 2], seed=i, sample_indices=[i, i + 1]).images.numpy()
        got = np.stack([np.frombuffer(m.data, np.uint8).reshape(m.shape) for m in reply.images])
        np.testing.assert_array_equal(got, want)
    for error in results[4:]:
        assert isinstance(error, grpc.aio.AioRpcError)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
