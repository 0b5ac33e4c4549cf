"""The Jobs service over gRPC on a real in-process server: progress, cancel, errors, serving."""

import json

import grpc
import numpy as np
import pytest
from grpc import aio

from augserve.clients.infer import AsyncInferClient
from augserve.clients.proto.augserve.v1 import jobs_pb2 as pb
from augserve.clients.proto.augserve.v1 import jobs_pb2_grpc as pb_grpc
from augserve.server.config import ServerConfig
from augserve.server.jobs.data import load_dataset
from augserve.server.jobs.settings import JobSettings

from .conftest import train_base, tree


@pytest.fixture(scope="module")
async def job_server(ray_session, tmp_path_factory):
    from augserve.server.app import start_server

    root = tmp_path_factory.mktemp("served-repository")
    train_base(root)
    jobs = JobSettings(state_dir=str(tmp_path_factory.mktemp("job-journal")))
    running = await start_server(ServerConfig(port=0, metrics_port=0, model_repository=root,
                                              shutdown_grace_s=1.0, jobs=jobs))
    yield running
    await running.stop()


@pytest.fixture
async def stub(job_server):
    async with aio.insecure_channel(f"127.0.0.1:{job_server.port}") as channel:
        yield pb_grpc.JobServiceStub(channel)


def _spec(root, steps, name, **extra):
    return json.dumps({"source": {"repository": str(root), "name": "base"}, "steps": steps,
                       "dataset": "digits", "output_repository": str(root), "output_name": name,
                       "measure_latency": False, "max_accuracy_drop": 1.0, **extra})


async def test_a_job_streams_progress_and_its_version_is_served_at_the_claimed_accuracy(
    job_server, stub
):
    root = job_server.repository.root
    # prune -> static int8 (PT2E, compiled): the served replica rebuilds the int8 model.
    steps = [{"prune": {"sparsity": 0.5, "finetune_epochs": 2}}, {"quantize": {}}]
    job = (await stub.Submit(pb.SubmitJobRequest(spec_json=_spec(root, steps, "small")))).job_id
    events = [e async for e in stub.Watch(pb.WatchJobRequest(job_id=job))]
    assert events[-1].state == pb.JobEvent.DONE, events[-1].message
    assert [e.seq for e in events] == list(range(len(events)))
    assert any(e.epoch == 2 and e.accuracy >= 0 for e in events)
    result = await stub.Result(pb.JobRef(job_id=job))
    card = json.loads(result.model_card_json)
    assert result.version == 1 and card["params"]["after"] < card["params"]["before"]
    assert card["method"] == "prune -> quantize" and card["int8_package_bytes"] > 0

    await job_server.repository.load("small")  # what the service's reload does, awaited
    data = load_dataset("digits")
    async with AsyncInferClient(f"127.0.0.1:{job_server.port}") as client:
        logits = np.concatenate([
            (await client.infer("small", {"input": data.test_x[i : i + 64]}))["logits"]
            for i in range(0, len(data.test_y), 64)
        ])
    served = float((logits.argmax(1) == data.test_y).mean())
    assert served == pytest.approx(card["accuracy"]["after"], abs=1 / len(data.test_y))


async def test_cancel_mid_job_leaves_the_repository_unchanged(job_server, stub):
    root = job_server.repository.root
    before = tree(root)
    spec = _spec(root, [{"finetune": {"epochs": 200}}], "never")
    job = (await stub.Submit(pb.SubmitJobRequest(spec_json=spec))).job_id
    states = []
    async for event in stub.Watch(pb.WatchJobRequest(job_id=job)):
        states.append(event.state)
        if event.epoch >= 1 and len(states) < 1000:
            await stub.Cancel(pb.JobRef(job_id=job))
    assert states[-1] == pb.JobEvent.CANCELLED
    with pytest.raises(aio.AioRpcError) as error:
        await stub.Result(pb.JobRef(job_id=job))
    assert error.value.code() == grpc.StatusCode.CANCELLED
    assert tree(root) == before


@pytest.mark.parametrize("change, words", [
    ({"dataset": "imagenet"}, "dataset 'imagenet' does not exist"),
    ({"source": {"name": "ghost"}}, "source model 'ghost'"),
])
async def test_missing_dataset_or_model_is_not_found_at_submit(job_server, stub, change, words):
    spec = json.loads(_spec(job_server.repository.root, [{"finetune": {}}], "x"))
    for key, value in change.items():
        spec[key] = {**spec[key], **value} if isinstance(value, dict) else value
    with pytest.raises(aio.AioRpcError) as error:
        await stub.Submit(pb.SubmitJobRequest(spec_json=json.dumps(spec)))
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    assert words in error.value.details()


async def test_job_client_submits_watches_and_fetches(job_server):
    import asyncio

    from augserve.clients.jobs import JobClient

    root = job_server.repository.root
    spec = json.loads(_spec(root, [{"finetune": {"epochs": 1}}], "via_client"))

    def run():  # the blocking client, off the server's event loop
        with JobClient(f"127.0.0.1:{job_server.port}") as client:
            job = client.submit(spec)
            events = list(client.watch(job))
            return events, client.result(job)

    events, result = await asyncio.to_thread(run)
    assert events[-1].state == "done" and result.version == 1
    assert result.card["method"] == "finetune"


async def test_bad_spec_and_unknown_job(stub):
    with pytest.raises(aio.AioRpcError) as error:
        await stub.Submit(pb.SubmitJobRequest(spec_json='{"steps": [{"prune": {"sparsity": 2}}]}'))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "prune.sparsity must be in [0, 1), got 2" in error.value.details()
    outside = '{"source": {"architecture": "os:system"}, "steps": [{"finetune": {}}]}'
    with pytest.raises(aio.AioRpcError) as error:
        await stub.Submit(pb.SubmitJobRequest(spec_json=outside))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.value.details() == ("source.architecture: 'os:system' is outside the allowed "
                                     "modules (augserve, torchvision.models)")
    with pytest.raises(aio.AioRpcError) as error:
        await stub.Result(pb.JobRef(job_id="nope"))
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
