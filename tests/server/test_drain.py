"""The drain gate: admitted calls finish, new calls get UNAVAILABLE, probes still answer."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from augserve.server.drain import DrainGate
from augserve.server.interceptors import ErrorMappingInterceptor

from ..waiting import async_wait_until

SLOW_METHOD = "/test.Slow/Wait"


def _identity(payload: bytes) -> bytes:
    return payload


@pytest.fixture
async def gated_server():
    gate = DrainGate()
    release = asyncio.Event()

    async def wait(request: bytes, context: aio.ServicerContext) -> bytes:
        await release.wait()
        return request

    handler = grpc.method_handlers_generic_handler(
        "test.Slow",
        {"Wait": grpc.unary_unary_rpc_method_handler(wait, _identity, _identity)},
    )
    server = aio.server(interceptors=[ErrorMappingInterceptor(gate)])
    server.add_generic_rpc_handlers((handler,))
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = aio.insecure_channel(f"127.0.0.1:{port}")
    yield gate, release, channel
    await channel.close()
    await server.stop(0)


async def _admitted_call(gate, channel, payload):
    """Start a slow call and return (its future, the call) once the gate has admitted it."""
    call = channel.unary_unary(SLOW_METHOD, _identity, _identity)
    future = asyncio.ensure_future(call(payload, timeout=10))
    await async_wait_until(lambda: gate.in_flight > 0, interval_s=0.01,
                           what="the gate admitting the call")
    return future, call


async def test_admitted_calls_finish_and_new_calls_are_refused_unavailable(gated_server):
    gate, release, channel = gated_server
    admitted, call = await _admitted_call(gate, channel, b"first")

    drain = asyncio.create_task(gate.close_and_drain(10))
    with pytest.raises(aio.AioRpcError) as refused:
        await call(b"second", timeout=10)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "shutting down" in refused.value.details()
    assert not drain.done()

    release.set()
    assert await admitted == b"first"
    time_left = await asyncio.wait_for(drain, 5)
    assert 0 < time_left < 10
    assert gate.in_flight == 0


async def test_health_probes_pass_a_closed_gate(gated_server):
    gate, _, channel = gated_server
    await gate.close_and_drain(0.1)
    stub = health_pb2_grpc.HealthStub(channel)
    response = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
    assert response.status == health_pb2.HealthCheckResponse.SERVING


async def test_drain_gives_up_after_the_grace_period(gated_server):
    gate, release, channel = gated_server
    stuck, _ = await _admitted_call(gate, channel, b"stuck")
    assert await gate.close_and_drain(0.2) == 0.0
    assert gate.in_flight == 1
    release.set()
    assert await stuck == b"stuck"
