"""The inference benchmark's baseline: the same ResNet-20 behind Ray Serve's gRPC proxy.

One Serve deployment implements `inference.GRPCInferenceService/ModelInfer` and
batches with `@serve.batch(max_batch_size=32, batch_wait_timeout_s=0.002)`, so the
same load generator drives it and augserve. It runs as its own process with a
fresh local Ray (never one that is already running), writes its gRPC port to
`--ready-file` once the application is up, and on SIGTERM or SIGINT shuts Serve
and Ray down and exits 0.

Usage:
    python -m augserve.server.bench.rayserve_baseline --state-dict model.pth \
        --threads 1 --replicas 2 --ready-file port.txt
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import ray
from ray import serve
from ray.serve.config import gRPCOptions

from augserve.clients.proto import inference as stubs
from augserve.clients.proto.inference import grpc_service_pb2 as pb
from augserve.clients.proto.inference import grpc_service_pb2_grpc as pb_grpc
from augserve.server.bench import lifecycle
from augserve.server.inference.model_config import InstanceGroup, default_replica_env
from augserve.server.inference.replica import lower_priority


def alias_stub_modules() -> None:
    """Make the stubs importable as "inference.grpc_service_pb2" in this process.

    Their message classes name that module (the proto's own path), and Serve
    pickles requests and responses between its proxy and the replica; pickle finds
    a class through its module, so both processes call this first.
    """
    sys.modules.setdefault("inference", stubs)
    sys.modules.setdefault("inference.grpc_service_pb2", pb)


alias_stub_modules()
SERVICER_FUNCTION = "augserve.server.bench.rayserve_baseline.add_servicer_to_server"
MAX_BATCH_SIZE = 32
BATCH_WAIT_TIMEOUT_S = 0.002


def add_servicer_to_server(servicer: Any, server: Any) -> None:
    """Register `GRPCInferenceService` on Serve's gRPC proxy (after aliasing the stubs)."""
    alias_stub_modules()
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)


@serve.deployment(ray_actor_options={"num_cpus": 1}, max_ongoing_requests=256)
class ResNetModel:
    """ResNet-20 with KServe v2 `ModelInfer`, batched by `@serve.batch`.

    Args:
        state_dict_path: weights saved with `torch.save(model.state_dict(), path)`.
        threads: torch intra-op threads in the replica.
        model_name: the name reported in responses.

    """

    def __init__(self, state_dict_path: str, threads: int, model_name: str) -> None:
        import torch

        from augserve.server.zoo import resnet20

        alias_stub_modules()
        lower_priority(InstanceGroup().nice)  # as augserve's replicas run by default
        torch.set_num_threads(threads)
        module = resnet20(num_classes=10)
        module.load_state_dict(torch.load(state_dict_path, map_location="cpu", weights_only=True))
        self.module = module.eval()
        self.model_name = model_name
        with torch.inference_mode():
            for size in (1, MAX_BATCH_SIZE):
                self.module(torch.zeros(size, 3, 32, 32))

    @serve.batch(max_batch_size=MAX_BATCH_SIZE, batch_wait_timeout_s=BATCH_WAIT_TIMEOUT_S)
    async def run_batch(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """Run the model once on the concatenated requests; one logits array per request."""
        import torch

        sizes = [len(image) for image in images]
        with torch.inference_mode():
            logits = self.module(torch.from_numpy(np.concatenate(images))).numpy()
        return np.split(logits, np.cumsum(sizes)[:-1])

    async def ModelInfer(self, request: pb.ModelInferRequest) -> pb.ModelInferResponse:
        """One KServe v2 inference with raw fp32 input contents."""
        shape = tuple(request.inputs[0].shape)
        image = np.frombuffer(request.raw_input_contents[0], dtype=np.float32).reshape(shape)
        logits = await self.run_batch(image)
        response = pb.ModelInferResponse(model_name=self.model_name, id=request.id)
        response.outputs.add(name="logits", datatype="FP32", shape=logits.shape)
        response.raw_output_contents.append(logits.astype("<f4").tobytes())
        return response


def start(
    state_dict: Path, threads: int, model_name: str, grpc_port: int, replicas: int = 1
) -> Any:
    """Start a fresh local Ray and the Serve application; returns the deployment handle."""
    os.environ.pop("RAY_ADDRESS", None)
    ray.init(
        address="local",
        num_cpus=max(os.cpu_count() or 1, 4),
        include_dashboard=False,
        log_to_driver=False,
    )
    serve.start(
        http_options={"host": "127.0.0.1", "port": lifecycle.free_port()},
        grpc_options=gRPCOptions(port=grpc_port, grpc_servicer_functions=[SERVICER_FUNCTION]),
    )
    # Imported by name, not taken from `__main__`, so the replica imports this module
    # (and its stub aliases) instead of receiving the class pickled by value.
    from augserve.server.bench.rayserve_baseline import ResNetModel as deployment

    # The same OpenMP wait policy as augserve's replicas of that many threads.
    actor_options = {"num_cpus": 1, "runtime_env": {"env_vars": default_replica_env(threads)}}
    app = deployment.options(num_replicas=replicas, ray_actor_options=actor_options).bind(
        str(state_dict), threads, model_name
    )
    return serve.run(app, name=model_name, route_prefix="/")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: serve until SIGTERM or SIGINT, then shut down; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state-dict", type=Path, required=True, help="resnet20 weights")
    parser.add_argument("--threads", type=int, default=2, help="torch threads in the replica")
    parser.add_argument("--replicas", type=int, default=1, help="replicas of the deployment")
    parser.add_argument("--model-name", default="resnet20", help="name in responses")
    parser.add_argument("--port", type=int, default=0, help="gRPC port (0: a free one)")
    parser.add_argument("--ready-file", type=Path, help="write the gRPC port here when ready")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    port = args.port or lifecycle.free_port()
    start(args.state_dict, args.threads, args.model_name, port, args.replicas)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    if args.ready_file:
        args.ready_file.write_text(f"{port}\n")
    while not stop.wait(0.5):
        pass
    serve.shutdown()
    ray.shutdown()
    print("ray serve baseline stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
