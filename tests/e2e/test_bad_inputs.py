"""Every bad input gets its exact status code, and none of them harms another request."""

from __future__ import annotations

import asyncio

import grpc
import numpy as np
import pytest

from augserve.clients.infer import build_infer_request
from augserve.clients.proto.inference import grpc_service_pb2 as pb
from augserve.clients.proto.inference import grpc_service_pb2_grpc as pb_grpc

POISON = -1234.0  # the value the test repository's "raiser" model refuses


@pytest.fixture(scope="module")
async def stub(server):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


def digits_request(batch: int = 1, **overrides) -> pb.ModelInferRequest:
    images = np.random.default_rng(0).random((batch, 1, 8, 8), dtype=np.float32)
    request = build_infer_request("digits", {"input": images})
    for key, value in overrides.items():
        setattr(request, key, value)
    return request


async def expect_status(call, code: grpc.StatusCode, *fragments: str) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call
    assert error.value.code() == code, error.value.details()
    for fragment in fragments:
        assert fragment in error.value.details()
    return error.value.details()


async def test_valid_request_works(stub):
    response = await stub.ModelInfer(digits_request(2))
    assert list(response.outputs[0].shape) == [2, 10]


async def test_unknown_model(stub):
    await expect_status(
        stub.ModelInfer(digits_request(model_name="nope")), grpc.StatusCode.NOT_FOUND, "'nope'"
    )


async def test_unknown_version(stub):
    await expect_status(
        stub.ModelInfer(digits_request(model_version="7")), grpc.StatusCode.NOT_FOUND, "'7'"
    )


async def test_wrong_datatype_names_the_input(stub):
    request = digits_request()
    request.inputs[0].datatype = "FP64"
    await expect_status(
        stub.ModelInfer(request), grpc.StatusCode.INVALID_ARGUMENT, "'input'", "FP64"
    )


@pytest.mark.parametrize("shape", [[1, 1, 8], [1, 1, 8, 9], [65, 1, 8, 8], [0, 1, 8, 8]])
async def test_wrong_shape_names_the_input(stub, shape):
    request = digits_request()
    del request.inputs[0].shape[:]
    request.inputs[0].shape.extend(shape)
    await expect_status(stub.ModelInfer(request), grpc.StatusCode.INVALID_ARGUMENT, "'input'")


def declared(shape: list[int], datatype: str = "FP32") -> pb.ModelInferRequest:
    """A digits request that declares `shape` and carries no contents at all."""
    request = pb.ModelInferRequest(model_name="digits")
    request.inputs.add(name="input", datatype=datatype, shape=shape)
    return request


@pytest.mark.parametrize("datatype", ["FP32", "BYTES"])
async def test_a_declared_shape_over_the_element_limit_is_refused_before_allocation(
        stub, datatype):
    # 2^28 elements against the default 2^27; the request is a few bytes
    await expect_status(
        stub.ModelInfer(declared([1, 1, 8, 1 << 25], datatype)),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "'input'", "max_tensor_elements (--inference-max-tensor-elements) = 134217728",
    )


async def test_a_declared_batch_over_the_row_limit_is_resource_exhausted(stub):
    await expect_status(
        stub.ModelInfer(declared([(1 << 20) + 1, 1, 8, 8])), grpc.StatusCode.RESOURCE_EXHAUSTED,
        "'input'", "max_request_rows (--inference-max-request-rows) = 1048576",
    )


@pytest.mark.parametrize("shape, words", [
    ([-1, 1, 8, 8], "negative dimension"),
    ([1, -8, 8, 8], "negative dimension"),
    ([1 << 62, 1 << 62, 8, 8], "overflows int64"),
])
async def test_negative_or_overflowing_declared_shapes_are_invalid(stub, shape, words):
    await expect_status(stub.ModelInfer(declared(shape)), grpc.StatusCode.INVALID_ARGUMENT,
                        "'input'", words)


async def test_wrong_byte_length_names_the_input(stub):
    request = digits_request()
    request.raw_input_contents[0] = request.raw_input_contents[0][:-4]
    await expect_status(
        stub.ModelInfer(request), grpc.StatusCode.INVALID_ARGUMENT, "'input'", "252 bytes"
    )


async def test_missing_input(stub):
    request = pb.ModelInferRequest(model_name="digits")
    await expect_status(
        stub.ModelInfer(request), grpc.StatusCode.INVALID_ARGUMENT, "'input'", "missing"
    )


async def test_unknown_input_and_output(stub):
    request = digits_request()
    request.inputs[0].name = "image"
    await expect_status(stub.ModelInfer(request), grpc.StatusCode.INVALID_ARGUMENT, "'image'")
    request = digits_request()
    request.outputs.add(name="probabilities")
    await expect_status(
        stub.ModelInfer(request), grpc.StatusCode.INVALID_ARGUMENT, "'probabilities'"
    )


async def test_raw_and_typed_contents_mixed(stub):
    request = digits_request()
    request.inputs[0].contents.fp32_contents.extend([0.0] * 64)
    await expect_status(
        stub.ModelInfer(request), grpc.StatusCode.INVALID_ARGUMENT, "'input'", "mixed"
    )


async def test_typed_contents_are_accepted_and_answered_typed(stub):
    request = pb.ModelInferRequest(model_name="digits")
    tensor = request.inputs.add(name="input", datatype="FP32", shape=[1, 1, 8, 8])
    tensor.contents.fp32_contents.extend([0.5] * 64)
    response = await stub.ModelInfer(request)
    assert not response.raw_output_contents
    assert len(response.outputs[0].contents.fp32_contents) == 10


async def test_typed_contents_with_wrong_count(stub):
    request = pb.ModelInferRequest(model_name="digits")
    tensor = request.inputs.add(name="input", datatype="FP32", shape=[1, 1, 8, 8])
    tensor.contents.fp32_contents.extend([0.5] * 63)
    await expect_status(stub.ModelInfer(request), grpc.StatusCode.INVALID_ARGUMENT, "63 values")


async def test_payload_over_the_message_limit(stub):
    # The test server allows 1 MiB messages; 64 x 3 x 32 x 32 fp32 is 768 KiB, 128 would be 1.5.
    images = np.zeros((64, 3, 32, 32), np.float32)
    request = build_infer_request("resnet20", {"input": np.concatenate([images, images])})
    await expect_status(stub.ModelInfer(request), grpc.StatusCode.RESOURCE_EXHAUSTED)


async def test_model_that_raises_fails_only_that_request(stub):
    def request(value: float) -> pb.ModelInferRequest:
        return build_infer_request("raiser", {"x": np.full((1, 4), value, np.float32)})

    # Fire good and poisoned requests together so they share batches.
    calls = [stub.ModelInfer(request(POISON if i % 5 == 0 else float(i))) for i in range(20)]
    results = await asyncio.gather(*calls, return_exceptions=True)
    for i, result in enumerate(results):
        if i % 5 == 0:
            assert isinstance(result, grpc.aio.AioRpcError)
            assert result.code() == grpc.StatusCode.INTERNAL
            assert "poisoned input" in result.details()
        else:
            np.testing.assert_array_equal(
                np.frombuffer(result.raw_output_contents[0], np.float32), [2.0 * i] * 4
            )


async def test_full_queue_gives_resource_exhausted_and_the_rest_succeed(stub):
    images = np.random.default_rng(1).random((1, 3, 32, 32), dtype=np.float32)
    request = build_infer_request("resnet20_tiny_queue", {"input": images})
    results = await asyncio.gather(
        *(stub.ModelInfer(request) for _ in range(40)), return_exceptions=True
    )
    rejected = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    served = [r for r in results if not isinstance(r, Exception)]
    assert rejected and served
    assert {r.code() for r in rejected} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert "queue is full" in rejected[0].details()
    # The queue is not stalled: a later request is served.
    assert (await stub.ModelInfer(request)).outputs[0].shape == [1, 10]


async def test_configured_timeout_gives_deadline_exceeded(stub):
    request = digits_request()
    request.model_name = "digits_timeout"
    await expect_status(stub.ModelInfer(request), grpc.StatusCode.DEADLINE_EXCEEDED)


async def test_client_deadline_gives_deadline_exceeded(stub):
    images = np.zeros((1, 3, 32, 32), np.float32)
    request = build_infer_request("resnet20", {"input": images})
    await expect_status(stub.ModelInfer(request, timeout=1e-4), grpc.StatusCode.DEADLINE_EXCEEDED)
    assert (await stub.ModelInfer(request)).outputs[0].shape == [1, 10]


async def test_pickled_model_is_refused_without_opt_in(stub):
    details = await expect_status(
        stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="pickled")),
        grpc.StatusCode.FAILED_PRECONDITION,
        "--allow-pickle",
    )
    assert "arbitrary code" in details
    index = await stub.RepositoryIndex(pb.RepositoryIndexRequest())
    state = {m.name: (m.state, m.reason) for m in index.models}["pickled"]
    assert state[0] == "UNAVAILABLE" and "--allow-pickle" in state[1]


async def test_load_of_unknown_model(stub):
    await expect_status(
        stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="ghost")),
        grpc.StatusCode.NOT_FOUND,
        "'ghost'",
    )
    await expect_status(
        stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="../etc")),
        grpc.StatusCode.INVALID_ARGUMENT,
    )


async def test_server_still_healthy_after_all_of_the_above(stub, server):
    assert (await stub.ServerReady(pb.ServerReadyRequest())).ready
    response = await stub.ModelInfer(digits_request(3))
    assert list(response.outputs[0].shape) == [3, 10]


GARBAGE = b"\xff\xff\xff\xff"  # field 31 with wire type 7: no protobuf message parses it


def every_method() -> list[tuple[str, bool, bool]]:
    """(path, client streaming, server streaming) of every RPC the server registers."""
    from grpc_health.v1 import health_pb2
    from grpc_reflection.v1alpha import reflection_pb2

    from augserve.clients.proto.augserve.v1 import augment_pb2, jobs_pb2, stream_pb2

    files = (pb, augment_pb2, stream_pb2, jobs_pb2, health_pb2, reflection_pb2)
    return [(f"/{service.full_name}/{m.name}", m.client_streaming, m.server_streaming)
            for file in files for service in file.DESCRIPTOR.services_by_name.values()
            for m in service.methods]


async def call_with_garbage(channel: grpc.aio.Channel, path: str, client_streaming: bool,
                            server_streaming: bool) -> None:
    if client_streaming:
        call = (channel.stream_stream if server_streaming else channel.stream_unary)(path)
        requests = call(iter([GARBAGE]), timeout=30)
    else:
        requests = (channel.unary_stream if server_streaming else channel.unary_unary)(path)(
            GARBAGE, timeout=30)
    if server_streaming:
        async for _ in requests:
            pass
    else:
        await requests


@pytest.mark.parametrize(("path", "client_streaming", "server_streaming"), every_method(),
                         ids=lambda value: value if isinstance(value, str) else "")
async def test_undecodable_request_bytes_are_invalid_arguments(server, path, client_streaming,
                                                               server_streaming):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        details = await expect_status(
            call_with_garbage(channel, path, client_streaming, server_streaming),
            grpc.StatusCode.INVALID_ARGUMENT, "request: the bytes do not parse")
        assert path.split("/")[-1] in details
        # the server keeps serving on the same connection
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        assert (await stub.ServerLive(pb.ServerLiveRequest())).live
