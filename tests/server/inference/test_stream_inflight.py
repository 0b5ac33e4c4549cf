"""ModelStreamInfer requests share the per-client in-flight bound with unary calls."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import grpc
import numpy as np
import pytest
from grpc import aio

from augserve.clients.auth import bearer_metadata
from augserve.clients.infer import build_infer_request
from augserve.clients.proto.inference import grpc_service_pb2_grpc as pb_grpc
from augserve.server.auth.interceptor import AuthInterceptor
from augserve.server.auth.scopes import Scope
from augserve.server.auth.tokens import TokenEntry, TokenStore, hash_token
from augserve.server.config import ServerConfig
from augserve.server.inference.model_config import parse_model_config
from augserve.server.inference.servicer import InferenceServicer
from augserve.server.inflight import InflightInterceptor, inflight_slots
from augserve.server.interceptors import ErrorMappingInterceptor

SETTINGS = parse_model_config({
    "platform": "torchscript", "max_batch_size": 4,
    "input": [{"name": "x", "datatype": "FP32", "dims": [2]}],
    "output": [{"name": "y", "datatype": "FP32", "dims": [2]}]}, "m")


class HeldQueue:
    """A model queue whose answers wait on `release`; `entered` gets each request's inputs."""

    def __init__(self) -> None:
        self.release, self.entered = asyncio.Event(), asyncio.Queue()

    async def submit(self, inputs, deadline_s):
        await self.entered.put(inputs)
        await self.release.wait()
        return [inputs[0] * 2]


@pytest.fixture
async def served():
    queue = HeldQueue()
    loaded = SimpleNamespace(settings=SETTINGS, queue=queue, version=1)
    repository = SimpleNamespace(get=lambda name, version: loaded)
    slots = inflight_slots(ServerConfig(max_inflight_per_client=2))
    servicer = InferenceServicer(repository, inflight=slots)
    servicer.ready.set()
    store = TokenStore([TokenEntry(name, hash_token(name), frozenset({Scope.INFER}))
                        for name in ("alice", "bob")])
    server = aio.server(interceptors=[ErrorMappingInterceptor(), AuthInterceptor(store),
                                      InflightInterceptor(slots)])
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel), queue, slots
    queue.release.set()
    await server.stop(None)


def _request(value: float, id: str):
    request = build_infer_request("m", {"x": np.full((1, 2), value, np.float32)})
    request.id = id
    return request


async def test_stream_requests_over_the_bound_are_answered_with_the_error(served):
    stub, queue, slots = served
    stream = stub.ModelStreamInfer(metadata=bearer_metadata("alice"))
    for i in range(2):
        await stream.write(_request(i, f"held{i}"))
        await queue.entered.get()
    # a unary call of the same client is over the bound; another client's is not
    with pytest.raises(aio.AioRpcError) as caught:
        await stub.ModelInfer(_request(9, "unary"), metadata=bearer_metadata("alice"))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    bob = asyncio.ensure_future(stub.ModelInfer(_request(5, "bob"),
                                                metadata=bearer_metadata("bob")))
    await queue.entered.get()

    await stream.write(_request(3, "over"))
    refused = await stream.read()
    assert refused.infer_response.id == "over"
    assert "in-flight request 3 of client 'alice' is over max_inflight_per_client " \
           "(--max-inflight-per-client) = 2" in refused.error_message

    queue.release.set()
    answered = {(await stream.read()).infer_response.id for _ in range(2)}
    assert answered == {"held0", "held1"}
    assert (await bob).id == "bob"
    await stream.done_writing()
    assert not slots.held
