"""In-flight requests per client identity: a call over the bound is refused, others go on."""

from __future__ import annotations

import asyncio
import dataclasses

import grpc
import pytest
from grpc import aio

from augserve.clients.auth import bearer_metadata
from augserve.server.auth.interceptor import AuthInterceptor
from augserve.server.auth.scopes import Scope
from augserve.server.auth.tokens import TokenEntry, TokenStore, hash_token
from augserve.server.config import ServerConfig
from augserve.server.inflight import InflightInterceptor, inflight_slots
from augserve.server.interceptors import ErrorMappingInterceptor

SERVICE = "inference.GRPCInferenceService"
INFER = f"/{SERVICE}/ModelInfer"
LIVE = f"/{SERVICE}/ServerLive"


def _identity(payload: bytes) -> bytes:
    return payload


@dataclasses.dataclass
class Held:
    """Calls that wait on `release`; `entered` counts those that reached the handler."""

    release: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    entered: asyncio.Queue = dataclasses.field(default_factory=asyncio.Queue)


@pytest.fixture
async def served():
    held = Held()

    async def infer(request: bytes, context: aio.ServicerContext) -> bytes:
        await held.entered.put(request)
        await held.release.wait()
        return request

    async def live(request: bytes, context: aio.ServicerContext) -> bytes:
        return b"live"

    store = TokenStore([TokenEntry(name, hash_token(name), frozenset({Scope.INFER}))
                        for name in ("alice", "bob")])
    slots = inflight_slots(ServerConfig(max_inflight_per_client=2))
    handler = grpc.method_handlers_generic_handler(SERVICE, {
        "ModelInfer": grpc.unary_unary_rpc_method_handler(infer, _identity, _identity),
        "ServerLive": grpc.unary_unary_rpc_method_handler(live, _identity, _identity)})
    server = aio.server(interceptors=[ErrorMappingInterceptor(), AuthInterceptor(store),
                                      InflightInterceptor(slots)])
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield channel, held, slots
    held.release.set()
    await server.stop(None)


async def test_a_third_call_of_one_client_is_refused_and_another_client_goes_on(served):
    channel, held, slots = served
    infer = channel.unary_unary(INFER, _identity, _identity)
    alice = [infer(b"a%d" % i, metadata=bearer_metadata("alice")) for i in range(2)]
    for _ in alice:
        await held.entered.get()
    assert slots.held["alice"] == 2

    with pytest.raises(aio.AioRpcError) as caught:
        await infer(b"a2", metadata=bearer_metadata("alice"))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "max_inflight_per_client (--max-inflight-per-client) = 2" in caught.value.details()
    assert "'alice'" in caught.value.details()

    bob = infer(b"b0", metadata=bearer_metadata("bob"))
    assert await held.entered.get() == b"b0"
    # probes are exempt: they answer while alice is at her bound
    assert await channel.unary_unary(LIVE, _identity, _identity)(b"") == b"live"

    held.release.set()
    assert [await call for call in alice] == [b"a0", b"a1"]
    assert await bob == b"b0"
    assert not slots.held
    # her slots came back: she may call again
    assert await infer(b"a3", metadata=bearer_metadata("alice")) == b"a3"
