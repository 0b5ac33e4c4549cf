"""A 2-worker Ray Train fine-tune over the Jobs RPCs: served at its accuracy, cancelled, refused.

The server is an in-process one on an empty repository (the jobs write into it), sharing the
session Ray, which has 32 logical CPUs; each Ray Train worker takes 1.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path

import grpc
import numpy as np
import pytest
import ray
from grpc import aio

from augserve.clients.infer import AsyncInferClient
from augserve.clients.proto.augserve.v1 import jobs_pb2 as pb
from augserve.clients.proto.augserve.v1 import jobs_pb2_grpc as pb_grpc
from augserve.server.config import ServerConfig
from augserve.server.jobs.data import load_dataset
from augserve.server.jobs.execute import execute
from augserve.server.jobs.journal import state_dir
from augserve.server.jobs.progress import Context
from augserve.server.jobs.settings import JobSettings
from augserve.server.jobs.specs import JobSpec

from ...waiting import async_wait_until

EPOCHS = 6
#: The 2-worker model's held-out top-1 is within this of the 1-worker run's, and above FLOOR.
BAND, FLOOR = 0.03, 0.9


def _spec(root: Path, name: str, epochs: int, workers: int) -> dict:
    return {"source": {"architecture_kwargs": {"width": 8}},
            "steps": [{"finetune": {"epochs": epochs, "lr": 1e-2}}], "dataset": "digits",
            "output_repository": str(root), "output_name": name, "measure_latency": False,
            "workers": workers}


@pytest.fixture(scope="module")
async def server(ray_session, tmp_path_factory):
    from augserve.server.app import start_server

    jobs = JobSettings(state_dir=str(tmp_path_factory.mktemp("ddp-journal")))
    running = await start_server(ServerConfig(
        port=0, metrics_port=0, model_repository=tmp_path_factory.mktemp("ddp-repository"),
        shutdown_grace_s=1.0, jobs=jobs))
    yield running
    await running.stop()


@pytest.fixture
async def stub(server):
    async with aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield pb_grpc.JobServiceStub(channel)


def _free_cpus() -> float:
    return ray.available_resources().get("CPU", 0.0)


def _live_groups() -> list[dict]:
    # Ray Train places its workers in a placement group and removes it (killing anything
    # left in it) when the run ends; nothing else of the server uses placement groups.
    return [g for g in ray.util.placement_group_table().values() if g["state"] != "REMOVED"]


def _train_dirs() -> set[Path]:
    return set(Path(tempfile.gettempdir()).glob("augserve-train-*"))


async def _left_nothing(dirs: set[Path]) -> None:
    """Ray Train's workers are gone (their placement group removed); no storage folder."""
    await async_wait_until(lambda: not _live_groups(), 30.0, "the workers' group removed",
                           interval_s=0.05)
    assert _train_dirs() == dirs


async def test_two_workers_fine_tune_a_served_version_within_the_band(server, stub):
    root = server.repository.root
    dirs = _train_dirs()
    spec = _spec(root, "digits_ddp", EPOCHS, workers=2)
    job = (await stub.Submit(pb.SubmitJobRequest(spec_json=json.dumps(spec)))).job_id
    one = JobSpec.from_dict({**spec, "workers": 1, "output_repository": "", "output_name": ""})
    single = (await asyncio.to_thread(execute, one, Context())).card["accuracy"]["after"]

    events = [e async for e in stub.Watch(pb.WatchJobRequest(job_id=job))]
    assert events[-1].state == pb.JobEvent.DONE, events[-1].message
    training = [e for e in events if e.stage == "finetune" and e.steps]
    # rank 0 reports: 1437 training digits in 2 shards of 32-image batches, tail dropped
    assert {(e.epochs, e.steps) for e in training} == {(EPOCHS, 1437 // 64)}
    ends = [e for e in training if e.step == e.steps]
    assert sorted({e.epoch for e in ends}) == list(range(1, EPOCHS + 1))
    last = {e.epoch: e for e in training}  # each epoch's last event: its forced end
    assert all(e.step == e.steps and e.accuracy >= 0 and e.loss > 0 for e in last.values())
    result = await stub.Result(pb.JobRef(job_id=job))
    card = json.loads(result.model_card_json)
    accuracy = card["accuracy"]["after"]
    assert card["settings"]["workers"] == 2 and ends[-1].accuracy == pytest.approx(accuracy)
    assert accuracy > FLOOR and abs(accuracy - single) <= BAND, (accuracy, single)

    # the journal, read as a restarted server would read it
    record = state_dir(server.config.jobs.state_dir) / f"{job}.json"
    await async_wait_until(lambda: record.is_file() and json.loads(record.read_text())[
        "state"] == "done", 10.0, "the journal's final record", interval_s=0.05)
    assert json.loads(record.read_text())["result"]["version"] == result.version

    await _left_nothing(dirs)
    await server.repository.load("digits_ddp")
    data = load_dataset("digits")
    async with AsyncInferClient(f"127.0.0.1:{server.port}") as client:
        logits = np.concatenate([
            (await client.infer("digits_ddp", {"input": data.test_x[i : i + 64]}))["logits"]
            for i in range(0, len(data.test_y), 64)
        ])
    served = float((logits.argmax(1) == data.test_y).mean())
    assert served == pytest.approx(accuracy, abs=1 / len(data.test_y))


async def test_cancel_stops_both_workers_and_writes_nothing(server, stub):
    root = server.repository.root
    dirs = _train_dirs()
    spec = _spec(root, "digits_ddp_cancelled", 500, workers=2)
    job = (await stub.Submit(pb.SubmitJobRequest(spec_json=json.dumps(spec)))).job_id
    events, asked = [], False
    async for event in stub.Watch(pb.WatchJobRequest(job_id=job)):
        events.append(event)
        if event.step and not asked:  # rank 0 is training: both workers are up
            await stub.Cancel(pb.JobRef(job_id=job))
            asked = True
    assert events[-1].state == pb.JobEvent.CANCELLED, events[-1].message
    assert max(e.epoch for e in events) < 500
    with pytest.raises(aio.AioRpcError) as error:
        await stub.Result(pb.JobRef(job_id=job))
    assert error.value.code() == grpc.StatusCode.CANCELLED
    assert not (root / "digits_ddp_cancelled").exists()
    await _left_nothing(dirs)  # both workers ended with their placement group


async def test_more_workers_than_free_cpus_is_refused_before_it_starts(server, stub):
    groups = len(ray.util.placement_group_table())
    spec = _spec(server.repository.root, "digits_ddp_refused", 1, workers=64)
    with pytest.raises(aio.AioRpcError) as error:
        await stub.Submit(pb.SubmitJobRequest(spec_json=json.dumps(spec)))
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    head, _, free = error.value.details().rpartition(" = ")
    assert head == "workers: 64 (1 CPU each) is over free_cpus" and 0 <= float(free) <= 32
    assert len(ray.util.placement_group_table()) == groups  # no worker group was asked for


def test_shards_split_an_epoch_plan_and_keep_each_samples_augmentation():
    from augserve.server.jobs.data import augmented_batches, epoch_plan

    data = load_dataset("digits")
    x, y, n = data.train_x, data.train_y, len(data.train_y)
    whole = {}
    for index, (images, _) in zip(epoch_plan(n, 64, 3, 1).batches(),
                                  augmented_batches(x, y, 64, 3, 1), strict=True):
        whole.update(zip(index.tolist(), images.numpy(), strict=True))
    shards = [epoch_plan(n, 32, 3, 1, rank, 2).batches() for rank in range(2)]
    assert [len(s) for s in shards] == [n // 64] * 2  # lockstep: full batches only
    seen = [i for shard in shards for batch in shard for i in batch.tolist()]
    assert len(seen) == len(set(seen)) == n // 64 * 64
    for rank, shard in enumerate(shards):
        for index, (images, labels) in zip(shard, augmented_batches(x, y, 32, 3, 1, rank, 2),
                                           strict=True):
            assert labels.tolist() == y[index].tolist()
            assert all(np.array_equal(whole[i], image)  # the (seed, epoch, index) draws
                       for i, image in zip(index.tolist(), images.numpy(), strict=True))


def test_workers_field_and_flag():
    from augserve.server.cli import build_parser, main
    from augserve.server.jobs.cli import build_spec
    from augserve.server.jobs.specs import JobSpecError

    spec = _spec(Path("/r"), "m", 1, workers=2)
    assert JobSpec.from_dict(spec).to_dict()["workers"] == 2
    with pytest.raises(JobSpecError, match="workers must be an integer >= 1, got 0"):
        JobSpec.from_dict({**spec, "workers": 0})
    argv = ["compress", "train", "--repository", "/r", "--name", "m", "--workers", "3"]
    assert build_spec(build_parser().parse_args(argv)).workers == 3
    assert main([*argv, "--local"]) == 2  # Ray Train reports through a Ray job's channel
