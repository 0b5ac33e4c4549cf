"""The interceptor is the one place errors become statuses, for unary and streaming calls."""

from __future__ import annotations

import pickle

import grpc
import pytest
from grpc import aio

from augserve.server.augment.ops import SpecError
from augserve.server.errors import InvalidArgument, NotFound
from augserve.server.interceptors import ErrorMappingInterceptor
from augserve.server.jobs.specs import JobSpecError


def _identity(payload: bytes) -> bytes:
    return payload


def _raise(name: bytes) -> None:
    errors = {b"spec": SpecError("ops[0].degrees", "expected 0..360, got 400"),
              b"missing": NotFound("model 'x' does not exist"),
              b"bug": ValueError("an internal bug")}
    raise errors[name]


@pytest.fixture
async def stub():
    async def unary(request: bytes, context: aio.ServicerContext) -> bytes:
        _raise(request)
        return request

    async def stream(request: bytes, context: aio.ServicerContext):
        yield b"first"
        _raise(request)

    handler = grpc.method_handlers_generic_handler("test.Errors", {
        "Unary": grpc.unary_unary_rpc_method_handler(unary, _identity, _identity),
        "Stream": grpc.unary_stream_rpc_method_handler(stream, _identity, _identity),
    })
    server = aio.server(interceptors=[ErrorMappingInterceptor()])
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = aio.insecure_channel(f"127.0.0.1:{port}")
    yield channel
    await channel.close()
    await server.stop(None)


CASES = [(b"spec", grpc.StatusCode.INVALID_ARGUMENT, "ops[0].degrees: expected 0..360"),
         (b"missing", grpc.StatusCode.NOT_FOUND, "model 'x'"),
         (b"bug", grpc.StatusCode.INTERNAL, "ValueError: an internal bug")]


@pytest.mark.parametrize("name, code, words", CASES)
async def test_unary_errors_map_to_their_status(stub, name, code, words):
    call = stub.unary_unary("/test.Errors/Unary", _identity, _identity)
    with pytest.raises(aio.AioRpcError) as caught:
        await call(name)
    assert caught.value.code() == code
    assert words in caught.value.details()


@pytest.mark.parametrize("name, code, words", CASES)
async def test_errors_raised_inside_a_stream_map_to_their_status(stub, name, code, words):
    call = stub.unary_stream("/test.Errors/Stream", _identity, _identity)(name)
    assert await call.read() == b"first"
    with pytest.raises(aio.AioRpcError) as caught:
        await call.read()
    assert caught.value.code() == code
    assert words in caught.value.details()


def test_client_errors_are_invalid_arguments_that_survive_pickling():
    # Spec errors cross processes (Ray actors, job tasks) with their field intact.
    error = pickle.loads(pickle.dumps(SpecError("pipeline.dtype", "expected uint8")))
    assert isinstance(error, InvalidArgument) and not isinstance(error, ValueError)
    assert (error.field, error.detail, str(error)) == ("pipeline.dtype", "expected uint8",
                                                       "pipeline.dtype: expected uint8")
    assert issubclass(JobSpecError, InvalidArgument) and not issubclass(JobSpecError, ValueError)
