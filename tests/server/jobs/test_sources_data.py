"""Jobs over gRPC on the user's models and data: image folders, state_dict files, zoo
models, exported and scripted sources, the accuracy gate, and every bad input's status."""

import json
import re

import grpc
import numpy as np
import pytest
import torch
from grpc import aio

from augserve.clients.proto.augserve.v1 import jobs_pb2 as pb
from augserve.clients.proto.augserve.v1 import jobs_pb2_grpc as pb_grpc
from augserve.kernels.zoo import faces_cnn
from augserve.server.config import ServerConfig
from augserve.server.jobs.models import digits_net
from augserve.server.jobs.settings import JobSettings
from augserve.server.stream.settings import StreamSettings

from .conftest import train_base, tree

SIZE = [3, 32, 32]
FACES = {"zoo": "faces_cnn", "input_shape": SIZE}


def write_crops(root, per_class=8, side=40):
    """root/<photo>/<i>.png|.jpg: random side x side crops of three scikit-image photos."""
    from PIL import Image
    from skimage import data

    rng = np.random.default_rng(0)
    for name in ("astronaut", "coffee", "chelsea"):
        photo = np.asarray(Image.fromarray(getattr(data, name)()).resize((96, 96)))
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            y, x = rng.integers(0, 96 - side, 2)
            crop = Image.fromarray(photo[y : y + side, x : x + side])
            crop.save(root / name / f"{i}.{'png' if i % 2 else 'jpg'}")


@pytest.fixture(scope="module")
async def served(ray_session, tmp_path_factory):
    """A server with a registered folder dataset "crops"; only `base` (digits) is loaded.

    Jobs write into `root/out`, a repository the server does not serve, so no replica
    starts for their outputs.
    """
    from augserve.server.app import start_server

    root = tmp_path_factory.mktemp("user-repository")
    crops = tmp_path_factory.mktemp("crops")
    write_crops(crops)
    train_base(root, epochs=1)  # the gate test needs a model that pruning hurts, no more
    (root / "out").mkdir()
    _scripted_and_exported(root)
    torch.manual_seed(0)
    torch.save(faces_cnn(num_classes=2, width=4).state_dict(), root / "faces2.pth")
    torch.save(faces_cnn(num_classes=3, width=4).state_dict(), root / "faces3.pth")
    config = ServerConfig(
        port=0, metrics_port=0, model_repository=root, shutdown_grace_s=1.0,
        load_models=("base",),
        jobs=JobSettings(state_dir=str(tmp_path_factory.mktemp("journal"))),
        stream=StreamSettings(datasets={"crops": {"kind": "folder", "path": str(crops)}}))
    running = await start_server(config)
    async with aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        yield root, pb_grpc.JobServiceStub(channel)
    await running.stop()


def _scripted_and_exported(root):
    """`scripted` (TorchScript digits_net) and `exported` (torch.export faces_cnn, 3 x 32 x 32,
    batch at most 8: a bound the job must respect)."""
    models = {"scripted": ("torchscript", digits_net(num_classes=10, width=4), [3, 8, 8], 10),
              "exported": ("torch_export", faces_cnn(num_classes=3, width=4), SIZE, 3)}
    for name, (platform, _, dims, classes) in models.items():
        (root / name / "1").mkdir(parents=True)
        (root / name / "config.json").write_text(json.dumps({
            "platform": platform, "max_batch_size": 8,
            "input": [{"name": "input", "datatype": "FP32", "dims": dims}],
            "output": [{"name": "logits", "datatype": "FP32", "dims": [classes]}]}))
    torch.jit.script(models["scripted"][1].eval()).save(str(root / "scripted" / "1" / "model.pt"))
    batch = torch.export.Dim("batch", min=1, max=8)
    program = torch.export.export(models["exported"][1].eval(), (torch.zeros(2, *SIZE),),
                                  dynamic_shapes=({0: batch},))
    torch.export.save(program, str(root / "exported" / "1" / "model.pt2"))


def _spec(root, source, steps, name, dataset="crops", **extra):
    return json.dumps({"source": source, "steps": steps, "dataset": dataset,
                       "output_repository": str(root / "out"), "output_name": name,
                       "measure_latency": False, **extra})


async def _run(stub, spec):
    """Submit, follow to the end; (last event, Result response or the RpcError)."""
    job = (await stub.Submit(pb.SubmitJobRequest(spec_json=spec))).job_id
    events = [e async for e in stub.Watch(pb.WatchJobRequest(job_id=job))]
    try:
        return events[-1], await stub.Result(pb.JobRef(job_id=job))
    except aio.AioRpcError as error:
        return events[-1], error


async def test_train_then_compress_a_model_on_an_image_folder(served):
    root, stub = served
    steps = [{"finetune": {"epochs": 3, "lr": 1e-2}}]
    last, result = await _run(stub, _spec(root, {**FACES, "architecture_kwargs": {"width": 4}},
                                          steps, "crops_base"))
    assert last.state == pb.JobEvent.DONE, last.message
    card = json.loads(result.model_card_json)
    assert card["dataset"]["input_shape"] == SIZE and card["gate"] is None
    assert card["dataset"]["train_images"] + card["dataset"]["test_images"] == 24
    config = json.loads((root / "out" / "crops_base" / "config.json").read_text())
    assert config["input"][0]["dims"] == SIZE and config["output"][0]["dims"] == [3]

    source = {"repository": str(root / "out"), "name": "crops_base"}
    steps = [{"prune": {"sparsity": 0.5, "finetune_epochs": 1}},
             {"quantize": {"method": "dynamic"}}]
    last, result = await _run(stub, _spec(root, source, steps, "crops_small",
                                          max_accuracy_drop=1.0))
    assert last.state == pb.JobEvent.DONE, last.message
    card = json.loads(result.model_card_json)
    drop = card["accuracy"]["before"] - card["accuracy"]["after"]
    assert card["gate"] == {"max_accuracy_drop": 1.0, "passed": True,
                            "measured_drop": pytest.approx(drop, abs=1e-6)}
    assert card["params"]["after"] < card["params"]["before"]
    assert (root / "out" / "crops_small" / str(result.version) / "compressed").is_dir()


async def test_transfer_and_compress_a_state_dict_file_with_its_architecture(served):
    root, stub = served
    source = {**FACES, "state_dict": str(root / "faces2.pth"),
              "architecture_kwargs": {"num_classes": 2, "width": 4}}
    last, result = await _run(stub, _spec(root, source, [{"transfer": {"epochs": 2}}],
                                          "crops_transfer"))
    assert last.state == pb.JobEvent.DONE, last.message
    card = json.loads(result.model_card_json)
    assert card["settings"]["source"]["state_dict"].endswith("faces2.pth")
    assert json.loads((root / "out" / "crops_transfer" / "config.json").read_text()
                      )["output"][0]["dims"] == [3]

    source = {**FACES, "state_dict": str(root / "faces3.pth"),
              "architecture_kwargs": {"num_classes": 3, "width": 4}}
    last, result = await _run(stub, _spec(root, source, [{"quantize": {"method": "dynamic"}}],
                                          "crops_int8", max_accuracy_drop=1.0))
    assert last.state == pb.JobEvent.DONE, last.message
    assert json.loads(result.model_card_json)["gate"]["passed"] is True


async def test_an_exported_model_teaches_a_fresh_student(served):
    root, stub = served
    steps = [{"distill": {"student_width": 4, "epochs": 1}}]
    last, result = await _run(stub, _spec(root, {"repository": str(root), "name": "exported"},
                                          steps, "student", max_accuracy_drop=1.0))
    assert last.state == pb.JobEvent.DONE, last.message
    assert json.loads(result.model_card_json)["accuracy"]["before"] >= 0


async def test_a_missed_gate_fails_with_both_accuracies_and_writes_nothing(served):
    root, stub = served
    before = tree(root)
    steps = [{"prune": {"sparsity": 0.9, "finetune_epochs": 0}}]
    spec = _spec(root, {"repository": str(root), "name": "base"}, steps, "gated", "digits",
                 max_accuracy_drop=0.0)
    last, error = await _run(stub, spec)
    assert last.state == pb.JobEvent.FAILED
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    found = re.search(r"fell from (0\.\d+) \(source\) to (0\.\d+)", error.details())
    assert found and float(found[1]) > float(found[2]), error.details()
    assert "max_accuracy_drop 0.0" in error.details()
    assert tree(root) == before and not (root / "out" / "gated").exists()


@pytest.mark.parametrize("source, steps, dataset, code, words", [
    ({"zoo": "resnet50"}, [{"finetune": {}}], "crops", "NOT_FOUND",
     "source.zoo 'resnet50' is not a zoo model"),
    ({"name": "base", "version": 9}, [{"finetune": {}}], "digits", "NOT_FOUND",
     "source model 'base' has no version 9"),
    (FACES, [{"finetune": {}}], "no_such_data", "NOT_FOUND",
     "dataset 'no_such_data' does not exist"),
    ({"name": "scripted"}, [{"prune": {}}], "digits", "FAILED_PRECONDITION",
     "TorchScript cannot be pruned structurally"),
    ({"name": "exported"}, [{"finetune": {}}], "crops", "FAILED_PRECONDITION",
     "a torch.export program: an exported graph has no eager architecture"),
    ({"zoo": "resnet20"}, [{"finetune": {}}], "digits", "FAILED_PRECONDITION",
     "dataset 'digits' gives 3x8x8 inputs, the source model takes 3x32x32"),
])
async def test_bad_sources_and_datasets_are_refused_at_submit(served, source, steps, dataset,
                                                             code, words):
    root, stub = served
    if "name" in source:
        source = {"repository": str(root), **source}
    with pytest.raises(aio.AioRpcError) as error:
        await stub.Submit(pb.SubmitJobRequest(spec_json=_spec(root, source, steps, "x", dataset)))
    assert error.value.code() == getattr(grpc.StatusCode, code)
    assert words in error.value.details()


async def test_images_that_do_not_fit_the_model_fail_the_job(served):
    root, stub = served
    unresized = {"ops": [{"normalize": {}}], "dtype": "float32", "layout": "NCHW"}
    _, error = await _run(stub, _spec(root, FACES, [{"finetune": {"epochs": 1}}], "misfit",
                                      eval_pipeline=unresized))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "come out of the pipeline as (3, 40, 40); the model takes (3, 32, 32)" in (
        error.details())
    assert not (root / "out" / "misfit").exists()
