"""No name a client sends reaches outside the model repository: not to read, not to write.

Every row of issue 17's path table against a real in-process server: `../x`, `/etc/passwd`,
`a/../../b`, NUL bytes, a 10,000-character name, and symlinks inside the repository that
point outside. A Python audit hook records every file the server's process opens or lists
while a row runs; none may lie outside the repository, and a sentinel folder outside it
stays byte-for-byte as it was.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import numpy as np
import pytest

from augserve.clients.infer import build_infer_request
from augserve.clients.proto.augserve.v1 import jobs_pb2, jobs_pb2_grpc
from augserve.clients.proto.inference import grpc_service_pb2 as pb
from augserve.clients.proto.inference import grpc_service_pb2_grpc as pb_grpc

BAD_NAMES = ["../x", "/etc/passwd", "a/../../b", "digits\x00", "nul\x00/../../etc", "x" * 10_000,
             ".hidden", ""]
_TOUCHED: list[str] | None = None  # paths opened or listed while a row runs


def _audit(event: str, args: tuple) -> None:
    if _TOUCHED is not None and event in ("open", "os.listdir", "os.scandir") and args:
        path = args[0]
        if isinstance(path, str | bytes | os.PathLike):
            _TOUCHED.append(os.fsdecode(path))


sys.addaudithook(_audit)  # audit hooks cannot be removed; it records only inside `watched`


@contextmanager
def watched(outside: Path) -> Iterator[None]:
    """Fail if the server's process opens or lists anything under `outside` meanwhile."""
    global _TOUCHED
    before = {str(p): p.read_bytes() for p in outside.rglob("*") if p.is_file()}
    _TOUCHED = []
    try:
        yield
    finally:
        touched, _TOUCHED = _TOUCHED, None
    real = str(outside.resolve())
    assert [p for p in touched if os.path.realpath(p).startswith(real)] == []
    assert {str(p): p.read_bytes() for p in outside.rglob("*") if p.is_file()} == before


@pytest.fixture(scope="module")
async def stubs(server):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel), jobs_pb2_grpc.JobServiceStub(channel)


@pytest.fixture(scope="module")
def outside(tmp_path_factory, model_repository) -> Path:
    """A folder outside the repository holding a loadable model copy and a sentinel."""
    folder = tmp_path_factory.mktemp("outside")
    shutil.copytree(model_repository / "digits", folder / "digits")
    (folder / "sentinel.txt").write_text("must never be read or changed\n")
    return folder


@pytest.fixture
def links(model_repository, outside) -> Iterator[dict[str, str]]:
    """Models in the repository that escape through a symlink: the folder, the config, the file."""
    made = {
        "linked_folder": "its folder is a link",
        "linked_config": "its config.json is a link",
        "linked_file": "its model file is a link",
    }
    (model_repository / "linked_folder").symlink_to(outside / "digits")
    config = model_repository / "linked_config"
    shutil.copytree(model_repository / "digits", config)
    (config / "config.json").unlink()
    (config / "config.json").symlink_to(outside / "digits" / "config.json")
    model_file = model_repository / "linked_file"
    shutil.copytree(model_repository / "digits", model_file)
    for file in (model_file / "1").iterdir():
        file.unlink()
        file.symlink_to(outside / "digits" / "1" / file.name)
    try:
        yield made
    finally:
        for name in made:
            path = model_repository / name
            path.unlink() if path.is_symlink() else shutil.rmtree(path)


async def expect(call, *codes: grpc.StatusCode) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call
    assert error.value.code() in codes, (error.value.code(), error.value.details())
    return error.value.details()


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
async def test_bad_model_names_are_invalid_argument_on_every_rpc(stubs, outside, name):
    inference, _ = stubs
    bad = grpc.StatusCode.INVALID_ARGUMENT
    request = build_infer_request(name, {"input": np.zeros((1, 1, 8, 8), np.float32)})
    with watched(outside):
        calls = [
            inference.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name=name)),
            inference.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name=name)),
            inference.ModelInfer(request),
            inference.ModelMetadata(pb.ModelMetadataRequest(name=name)),
            inference.ModelConfig(pb.ModelConfigRequest(name=name)),
        ]
        if name:  # an empty name asks ModelStatistics for every model
            calls.append(inference.ModelStatistics(pb.ModelStatisticsRequest(name=name)))
        for call in calls:
            details = await expect(call, bad)
            assert "name" in details and len(details) < 400, details
        ready = await inference.ModelReady(pb.ModelReadyRequest(name=name))
        assert not ready.ready


@pytest.mark.parametrize("version", ["../1", "1/../../x", "1\x00", "9" * 10_000, "-1"], ids=repr)
async def test_bad_versions_are_invalid_argument(stubs, version):
    inference, _ = stubs
    details = await expect(inference.ModelMetadata(pb.ModelMetadataRequest(
        name="digits", version=version)), grpc.StatusCode.INVALID_ARGUMENT)
    assert "model_version" in details


async def test_symlinks_out_of_the_repository_are_refused(stubs, outside, links):
    inference, _ = stubs
    with watched(outside):
        for name in links:
            details = await expect(
                inference.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name=name)),
                grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND)
            assert "outside" in details or "not in the repository" in details, (name, details)
        index = await inference.RepositoryIndex(pb.RepositoryIndexRequest())
    listed = {m.name for m in index.models}
    assert "linked_folder" not in listed and "linked_config" not in listed
    assert {"digits", "resnet20"} <= listed


async def test_the_refusals_leave_a_loadable_model_loadable(stubs):
    inference, _ = stubs
    await inference.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="digits"))
    request = build_infer_request("digits", {"input": np.zeros((2, 1, 8, 8), np.float32)})
    assert list((await inference.ModelInfer(request)).outputs[0].shape) == [2, 10]


@pytest.mark.parametrize("key", ["/../etc/passwd", "/a\x00b", "/" + "k" * 10_000, "/.hidden"],
                         ids=repr)
async def test_bad_shared_memory_keys_are_invalid_argument(stubs, key):
    inference, _ = stubs
    details = await expect(inference.SystemSharedMemoryRegister(
        pb.SystemSharedMemoryRegisterRequest(name="region", key=key, byte_size=8)),
        grpc.StatusCode.INVALID_ARGUMENT)
    assert "key" in details


def _job(model_repository: Path, **changes) -> str:
    spec = {"source": {"repository": str(model_repository), "name": "digits"},
            "steps": [{"finetune": {"epochs": 1}}], "dataset": "digits",
            "output_repository": str(model_repository), "output_name": "never_written",
            "measure_latency": False}
    for key, value in changes.items():
        spec[key] = {**spec[key], **value} if isinstance(value, dict) else value
    return json.dumps(spec)


@pytest.mark.parametrize("changes", [
    {"output_name": "../x"}, {"output_name": "/etc/passwd"}, {"output_name": "a/../../b"},
    {"output_name": "n\x00ul"}, {"output_name": "x" * 10_000},
    {"output_repository": "OUTSIDE"}, {"output_repository": "/etc"},
    {"output_repository": "a/../../b"},
    {"source": {"repository": "OUTSIDE"}}, {"source": {"name": "../digits"}},
    {"source": {"repository": "", "name": "", "state_dict": "/etc/passwd"}},
    {"source": {"repository": "", "name": "", "state_dict": "OUTSIDE/sentinel.txt"}},
], ids=lambda change: repr(change)[:60])
async def test_job_paths_stay_inside_the_repository(stubs, model_repository, outside, changes):
    _, jobs = stubs
    text = _job(model_repository, **changes).replace("OUTSIDE", str(outside))
    before = sorted(p.name for p in model_repository.iterdir())
    with watched(outside):
        details = await expect(jobs.Submit(jobs_pb2.SubmitJobRequest(spec_json=text)),
                               grpc.StatusCode.INVALID_ARGUMENT)
    assert len(details) < 400
    assert sorted(p.name for p in model_repository.iterdir()) == before
