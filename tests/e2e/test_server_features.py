"""Health, reflection, metrics, version policies and the pickle opt-in."""

from __future__ import annotations

import asyncio
import json
import shutil

import grpc
import numpy as np
import prometheus_client
import pytest
import ray
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from ray.exceptions import RayActorError

from augserve.clients.infer import AsyncInferClient
from augserve.server.errors import Internal, NotFound
from augserve.server.inference.repository import ModelRepository

from ..waiting import async_wait_until


@pytest.fixture(scope="module")
async def channel(server):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield channel


async def test_health_reports_serving(channel):
    stub = health_pb2_grpc.HealthStub(channel)
    for service in ("", "inference.GRPCInferenceService"):
        response = await stub.Check(health_pb2.HealthCheckRequest(service=service))
        assert response.status == health_pb2.HealthCheckResponse.SERVING


async def test_reflection_lists_and_describes_the_inference_service(channel):
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)

    async def ask(**query):
        responses = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(**query)])
        )
        async for response in responses:
            return response
        raise AssertionError("reflection sent no response")

    listed = await ask(list_services="")
    names = {s.name for s in listed.list_services_response.service}
    assert {"inference.GRPCInferenceService", "grpc.health.v1.Health"} <= names
    described = await ask(file_containing_symbol="inference.GRPCInferenceService")
    assert described.file_descriptor_response.file_descriptor_proto


async def test_prometheus_metrics_count_requests(server):
    async with AsyncInferClient(f"127.0.0.1:{server.port}") as client:
        await client.infer("digits", {"input": np.zeros((2, 1, 8, 8), np.float32)})
    text = prometheus_client.generate_latest().decode()
    assert 'augserve_inference_requests_total{model="digits",status="ok",version="1"}' in text
    assert 'augserve_inference_batch_size_count{model="digits",version="1"}' in text
    assert "augserve_inference_queue_seconds_bucket" in text


async def kill_first_replica_until_replaced(
    loaded: object, images: np.ndarray, expected: np.ndarray, timeout_s: float,
    interval_s: float,
) -> object:
    """Kill a loaded version's first replica, resubmitting `images` until another holds its slot.

    Every answer meanwhile must equal `expected` (a batch that meets the dead replica is
    requeued, never failed). Returns the killed actor.
    """
    killed = loaded.replicas[0].actor
    ray.kill(killed)  # asynchronous: calls may succeed until the process is gone

    async def served_and_replaced() -> bool:
        again = await loaded.queue.submit([images], client_deadline_s=timeout_s)
        np.testing.assert_allclose(again[0], expected, atol=1e-5)
        return loaded.replicas[0].actor != killed

    await async_wait_until(served_and_replaced, timeout_s, interval_s=interval_s,
                           what="the killed replica replaced")
    return killed


def versioned_repository(root, source, policy):
    model = root / "multi"
    for version in (1, 2, 3):
        shutil.copytree(source / "1", model / str(version))
    for extra in source.iterdir():  # the label file beside the config
        if extra.is_file() and extra.name != "config.json":
            shutil.copy(extra, model / extra.name)
    config = json.loads((source / "config.json").read_text())
    config["version_policy"] = policy
    config["warmup"] = {"batch_sizes": [1]}
    (model / "config.json").write_text(json.dumps(config))
    return root


@pytest.mark.parametrize(
    ("policy", "served"),
    [({"latest": 2}, [2, 3]), ({"all": True}, [1, 2, 3]), ({"specific": [1, 3]}, [1, 3])],
)
async def test_version_policies(ray_session, model_repository, tmp_path, policy, served):
    root = versioned_repository(tmp_path, model_repository / "digits", policy)
    repository = ModelRepository(root)
    await repository.load("multi")
    try:
        assert sorted(v.version for v in repository.loaded()) == served
        assert repository.get("multi").version == max(served)
        for version in {1, 2, 3} - set(served):
            with pytest.raises(NotFound):
                repository.get("multi", str(version))
        index = {(r.version, r.state) for r in repository.index()}
        assert index == {(str(v), "READY") for v in served}
    finally:
        await repository.unload("multi")


async def test_versions_load_together_and_one_that_fails_stops_the_others(
        ray_session, model_repository, tmp_path, monkeypatch):
    root = versioned_repository(tmp_path, model_repository / "digits", {"all": True})
    (root / "multi" / "2" / "model.pt2").write_bytes(b"not an exported program")
    repository = ModelRepository(root)
    stopped = []
    stop = repository._stop_version

    async def recorded_stop(loaded):
        stopped.append(loaded)
        await stop(loaded)

    monkeypatch.setattr(repository, "_stop_version", recorded_stop)
    with pytest.raises(Internal, match="model 'multi' raised BadZipFile: File is not a zip"):
        await repository.load("multi")
    assert sorted(loaded.version for loaded in stopped) == [1, 3]
    for replica in (r for loaded in stopped for r in loaded.replicas):
        with pytest.raises(RayActorError):  # stopped, not left running
            await asyncio.wait_for(replica.actor.node.remote(), 30)
    assert {(r.version, r.state) for r in repository.index()} == {
        (v, "UNAVAILABLE") for v in ("1", "2", "3")}


async def test_pickle_loads_with_the_opt_in(ray_session, model_repository):
    repository = ModelRepository(model_repository, allow_pickle=True)
    await repository.load("pickled")
    try:
        loaded = repository.get("pickled")
        outputs = await loaded.queue.submit([np.ones(4, np.float32)], client_deadline_s=30)
        np.testing.assert_array_equal(outputs[0], np.full(4, 2.0, np.float32))
    finally:
        await repository.unload("pickled")


@pytest.mark.parametrize("transport", ["auto", "ray"])
async def test_both_transports_agree_and_a_killed_replica_costs_no_request(
    ray_session, model_repository, tmp_path, transport
):
    root = versioned_repository(tmp_path, model_repository / "digits", {"latest": 1})
    config_file = root / "multi" / "config.json"
    config = json.loads(config_file.read_text())
    config["instance_group"] = {"count": 1, "transport": transport}
    config_file.write_text(json.dumps(config))
    repository = ModelRepository(root)
    await repository.load("multi")
    try:
        loaded = repository.get("multi")
        assert (loaded.replicas[0].channel is not None) == (transport == "auto")
        images = np.random.default_rng(0).random((3, 1, 8, 8), dtype=np.float32)
        together = await loaded.queue.submit([images], client_deadline_s=30)
        alone = [await loaded.queue.submit([images[i : i + 1]], 30) for i in range(3)]
        np.testing.assert_allclose(together[0], np.concatenate([a[0] for a in alone]), atol=1e-5)

        # The batch that meets the dead replica waits for its restart and reruns there:
        # no request fails.
        await kill_first_replica_until_replaced(loaded, images, together[0], 60, 0.05)
    finally:
        await repository.unload("multi")
