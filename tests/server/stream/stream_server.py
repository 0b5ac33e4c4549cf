"""A stream-only server process for tests that measure it from outside (`python stream_server.py`).

It joins the test session's Ray (`--ray-address`), serves StreamBatches on a free port,
writes the port to `--port-file`, and runs until killed.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import grpc
import ray

from augserve.server.interceptors import ErrorMappingInterceptor
from augserve.server.stream.servicer import add_stream_service
from augserve.server.stream.settings import StreamSettings


async def serve(args: argparse.Namespace) -> None:
    server = grpc.aio.server(interceptors=[ErrorMappingInterceptor()],
                             options=[("grpc.max_send_message_length", 64 << 20)])
    settings = StreamSettings(window=args.window, pool_size=args.pool_size, actor_num_cpus=0.5,
                              backend="fast")
    add_stream_service(server, settings)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    Path(args.port_file).write_text(f"{port}\n")
    await server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ray-address", required=True)
    parser.add_argument("--port-file", required=True)
    parser.add_argument("--window", type=int, default=4)
    parser.add_argument("--pool-size", type=int, default=2)
    args = parser.parse_args()
    ray.init(address=args.ray_address, log_to_driver=False)
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
