"""200 concurrent clients across 3 models for 10 s: no error, no lost or crossed response."""

from __future__ import annotations

import asyncio
import time

import grpc
import numpy as np
import torch

from augserve.clients.infer import build_infer_request, parse_infer_response
from augserve.clients.proto.inference import grpc_service_pb2_grpc as pb_grpc
from augserve.server.inference.loading import load_module
from augserve.server.inference.model_config import read_model_config

CLIENTS = 200
DURATION_S = 10.0
MODELS = {  # name -> (input shape without batch, absolute tolerance against in-process)
    "digits": ((1, 8, 8), 1e-3),
    "digits_torchscript": ((1, 8, 8), 0.25),  # bf16 autocast: a few bf16 ulps of the logits
    "resnet20": ((3, 32, 32), 1e-3),
}


async def client_loop(index, stub, deadline, sent):
    rng = np.random.default_rng(index)
    name = list(MODELS)[index % len(MODELS)]
    shape, _ = MODELS[name]
    count = 0
    while time.monotonic() < deadline:
        batch = int(rng.integers(1, 4))
        images = rng.random((batch, *shape), dtype=np.float32)
        request_id = f"{index}-{count}"
        request = build_infer_request(name, {"input": images}, request_id=request_id)
        response = await stub.ModelInfer(request, timeout=60)
        assert response.id == request_id and response.model_name == name
        sent.append((name, images, parse_infer_response(response)["logits"]))
        count += 1
    return count


def reference_outputs(model_repository, name, inputs):
    settings = read_model_config(model_repository / name)
    module = load_module(settings, model_repository / name / "1", allow_pickle=False)
    enabled = settings.precision == "bf16"
    with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=enabled):
        chunks = torch.from_numpy(inputs).split(settings.max_batch_size)
        return torch.cat([module(chunk).float() for chunk in chunks]).numpy()


async def test_200_clients_3_models_no_error_no_crossing(served, model_repository):
    channels = [grpc.aio.insecure_channel(served.url) for _ in range(8)]
    stubs = [pb_grpc.GRPCInferenceServiceStub(c) for c in channels]
    sent: list = []
    deadline = time.monotonic() + DURATION_S
    try:
        counts = await asyncio.gather(
            *(client_loop(i, stubs[i % len(stubs)], deadline, sent) for i in range(CLIENTS))
        )
    finally:
        for channel in channels:
            await channel.close()
    assert min(counts) >= 1, "a client never got an answer"
    assert len(sent) == sum(counts)

    for name, (_, tolerance) in MODELS.items():
        rows = [(images, logits) for model, images, logits in sent if model == name]
        inputs = np.concatenate([images for images, _ in rows])
        got = np.concatenate([logits for _, logits in rows])
        expected = reference_outputs(model_repository, name, inputs)
        own_error = np.abs(got - expected).max(axis=1)
        # Answers carry their request's id (checked above) and match their own input's
        # in-process result: a crossed or lost answer would fail one of the two.
        assert own_error.max() <= tolerance, f"{name}: max error {own_error.max()}"
