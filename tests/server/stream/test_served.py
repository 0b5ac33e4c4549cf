"""The Stream service in the real server: the [stream] config table, health, a RemoteLoader."""

from __future__ import annotations

import asyncio

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from augserve.clients import RemoteLoader
from augserve.server.cli import build_parser
from augserve.server.config import config_from_args

TOML = """
[stream]
pool_size = 0
window = 2

[stream.datasets.faces]
kind = "builtin"
name = "lfw_subset"
size = 16
"""


async def test_server_streams_a_configured_dataset(ray_session, tmp_path):
    from augserve.server.app import start_server

    (tmp_path / "server.toml").write_text(TOML)
    (tmp_path / "models").mkdir()
    args = build_parser().parse_args(
        ["serve", "--config", str(tmp_path / "server.toml"), "--port", "0", "--metrics-port",
         "0", "--model-repository", str(tmp_path / "models")])
    config = config_from_args(args)
    assert config.stream.window == 2 and config.stream.datasets["faces"].size == 16
    assert {"digits", "lfw_subset", "photos", "faces"} <= set(config.stream.datasets)
    running = await start_server(config)
    try:
        target = f"127.0.0.1:{running.port}"
        async with grpc.aio.insecure_channel(target) as channel:
            health = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="augserve.v1.StreamService"))
        assert health.status == health_pb2.HealthCheckResponse.SERVING

        def read():
            with RemoteLoader(target, "faces", 64, pipeline={"ops": []}, shuffle=False) as loader:
                return list(loader)

        batches = await asyncio.to_thread(read)
        assert [len(labels) for _, labels in batches] == [64, 64, 64, 8]
        assert batches[0][0].shape == (64, 3, 16, 16) and batches[0][1][:3].tolist() == [1, 1, 1]
    finally:
        await running.stop()
