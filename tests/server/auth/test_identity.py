"""Handlers read the caller's identity: the token's name, else the peer address."""

from __future__ import annotations

import grpc
import pytest
from grpc import aio

from augserve.clients.auth import bearer_metadata
from augserve.server.auth.identity import current_identity
from augserve.server.auth.interceptor import AuthInterceptor
from augserve.server.auth.scopes import METHOD_ACCESS, Scope
from augserve.server.auth.tokens import TokenEntry, TokenStore, hash_token
from augserve.server.interceptors import ErrorMappingInterceptor

METHOD = "/test.Who/Am"


def _identity(payload: bytes) -> bytes:
    return payload


async def who(request: bytes, context: aio.ServicerContext) -> bytes:
    return current_identity().key.encode()


@pytest.fixture(params=["tokens", "no tokens"])
async def channel(request, monkeypatch):
    monkeypatch.setitem(METHOD_ACCESS, METHOD, Scope.INFER)
    store = (TokenStore([TokenEntry("trainer-1", hash_token("t1"), frozenset({Scope.INFER}))])
             if request.param == "tokens" else None)
    handler = grpc.method_handlers_generic_handler("test.Who", {
        "Am": grpc.unary_unary_rpc_method_handler(who, _identity, _identity)})
    server = aio.server(interceptors=[ErrorMappingInterceptor(), AuthInterceptor(store)])
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield request.param, channel
    await server.stop(None)


async def test_the_identity_is_the_token_name_else_the_peer(channel):
    mode, channel = channel
    call = channel.unary_unary(METHOD, _identity, _identity)
    named = await call(b"", metadata=bearer_metadata("t1"))
    if mode == "tokens":
        assert named == b"trainer-1"
    else:
        assert named.decode().startswith("ipv4:127.0.0.1:")
        assert (await call(b"")).decode().startswith("ipv4:127.0.0.1:")
