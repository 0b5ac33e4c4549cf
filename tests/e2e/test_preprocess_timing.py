"""A `[preprocess]` model's time: preprocessing counted apart from the model's own compute."""

from __future__ import annotations

import grpc
from prometheus_client import REGISTRY

from augserve.clients.proto.inference import grpc_service_pb2 as pb
from augserve.clients.proto.inference import grpc_service_pb2_grpc as pb_grpc
from tests.e2e.image_models import jpeg, photos
from tests.e2e.test_images_in import encoded_request


def _counter(name: str) -> float:
    return REGISTRY.get_sample_value(name, {"model": "images", "version": "1"}) or 0.0


async def _statistics(stub) -> pb.InferStatistics:
    response = await stub.ModelStatistics(pb.ModelStatisticsRequest(name="images"))
    return response.model_stats[0].inference_stats


async def test_preprocessing_is_counted_apart_from_the_model(server):
    files = [jpeg(image) for image in photos().values()]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        before_stats = await _statistics(stub)
        before = {name: _counter(name) for name in (
            "augserve_preprocess_images_total", "augserve_preprocess_seconds_total",
            "augserve_preprocess_cpu_seconds_total")}
        await stub.ModelInfer(encoded_request(files))
        after_stats = await _statistics(stub)
    gained = {name: _counter(name) - value for name, value in before.items()}
    assert gained["augserve_preprocess_images_total"] == len(files)
    preprocess_ns = gained["augserve_preprocess_seconds_total"] * 1e9
    assert preprocess_ns > 0 and gained["augserve_preprocess_cpu_seconds_total"] > 0
    # compute_infer holds the model's time only; compute_input holds the preprocessing
    infer_ns = after_stats.compute_infer.ns - before_stats.compute_infer.ns
    input_ns = after_stats.compute_input.ns - before_stats.compute_input.ns
    assert infer_ns > 0 and input_ns >= preprocess_ns * 0.99
