"""SIGTERM: stop accepting, finish what is in flight, exit 0."""

from __future__ import annotations

import asyncio
import time

import grpc
import numpy as np

from augserve.clients.infer import build_infer_request
from augserve.clients.proto.inference import grpc_service_pb2_grpc as pb_grpc

from ..waiting import async_wait_until


async def keep_sending(stub, request, outcomes):
    while True:
        try:
            await stub.ModelInfer(request, timeout=30)
            outcomes.append("ok")
        except grpc.aio.AioRpcError as error:
            outcomes.append(error.code())
            return


async def test_sigterm_drains_in_flight_requests_and_exits_zero(
    model_repository, tmp_path, serve_process
):
    serve = serve_process(model_repository, tmp_path, "--load-model", "resnet20")
    request = build_infer_request("resnet20", {"input": np.zeros((8, 3, 32, 32), np.float32)})
    outcomes: list = []
    async with grpc.aio.insecure_channel(serve.url) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        senders = [asyncio.create_task(keep_sending(stub, request, outcomes)) for _ in range(16)]
        await async_wait_until(lambda: outcomes.count("ok") >= 32, 120, interval_s=0.05,
                               what="32 requests served")
        served_before = outcomes.count("ok")
        started = time.monotonic()
        exit_code = await asyncio.to_thread(serve.terminate)
        await asyncio.wait_for(asyncio.gather(*senders), 30)
    assert exit_code == 0, serve.log.read_text()[-3000:]
    assert time.monotonic() - started < 30
    failures = [o for o in outcomes if o != "ok"]
    # Every sender stops on the first refusal; nothing accepted failed any other way.
    assert len(failures) == 16
    assert set(failures) == {grpc.StatusCode.UNAVAILABLE}
    assert outcomes.count("ok") >= served_before
    log = serve.log.read_text()
    assert "draining in-flight requests" in log and "augserve stopped" in log
