"""`augserve serve` driven by the official tritonclient[grpc], unmodified."""

from __future__ import annotations

import queue

import numpy as np
import pytest
import torch
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

from augserve.server.inference.loading import load_module
from augserve.server.inference.model_config import read_model_config


@pytest.fixture(scope="module")
def client(served):
    with triton.InferenceServerClient(served.url) as client:
        yield client


@pytest.fixture(scope="module")
def digits_reference(model_repository):
    settings = read_model_config(model_repository / "digits")
    return load_module(settings, model_repository / "digits" / "1", allow_pickle=False)


def digits_input(batch: int, seed: int) -> triton.InferInput:
    images = np.random.default_rng(seed).random((batch, 1, 8, 8), dtype=np.float32)
    tensor = triton.InferInput("input", list(images.shape), "FP32")
    tensor.set_data_from_numpy(images)
    return tensor, images


def expected(reference, images):
    with torch.inference_mode():
        return reference(torch.from_numpy(images)).numpy()


def test_server_live_ready_and_metadata(client):
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("digits")
    assert not client.is_model_ready("no_such_model")
    metadata = client.get_server_metadata()
    assert metadata.name == "augserve"
    assert "model_repository" in metadata.extensions


def test_model_metadata_and_config(client):
    metadata = client.get_model_metadata("resnet20")
    assert metadata.platform == "pytorch_state_dict"
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs] == [
        ("input", "FP32", [-1, 3, 32, 32])
    ]
    assert [(t.name, list(t.shape)) for t in metadata.outputs] == [("logits", [-1, 10])]
    config = client.get_model_config("digits", as_json=True)["config"]
    assert config["max_batch_size"] == 64
    assert config["input"][0]["dims"] == ["1", "8", "8"]
    assert config["input"][0]["data_type"] == "TYPE_FP32"


def test_infer_with_raw_inputs_matches_in_process(client, digits_reference):
    tensor, images = digits_input(5, seed=1)
    result = client.infer("digits", [tensor], outputs=[triton.InferRequestedOutput("logits")])
    logits = result.as_numpy("logits")
    assert logits.shape == (5, 10)
    np.testing.assert_allclose(logits, expected(digits_reference, images), rtol=1e-4, atol=1e-4)
    assert result.get_response().model_version == "1"


def test_async_stream_infer(client, digits_reference):
    answers: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    sent = {}
    try:
        for index in range(12):
            tensor, images = digits_input(1 + index % 3, seed=100 + index)
            sent[str(index)] = images
            client.async_stream_infer("digits", [tensor], request_id=str(index))
        received = [answers.get(timeout=30) for _ in sent]
    finally:
        client.stop_stream()
    for result, error in received:
        assert error is None
        request_id = result.get_response().id
        np.testing.assert_allclose(
            result.as_numpy("logits"), expected(digits_reference, sent[request_id]), atol=1e-4
        )
    assert sorted(r.get_response().id for r, _ in received) == sorted(sent)


def test_stream_reports_a_bad_request_and_keeps_going(client):
    answers: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        good, _ = digits_input(1, seed=3)
        client.async_stream_infer("no_such_model", [good], request_id="bad")
        client.async_stream_infer("digits", [good], request_id="good")
        results = [answers.get(timeout=30) for _ in range(2)]
    finally:
        client.stop_stream()
    errors = [error for _, error in results if error is not None]
    oks = [result for result, error in results if error is None]
    assert len(errors) == 1 and "no_such_model" in str(errors[0])
    assert len(oks) == 1 and oks[0].get_response().id == "good"


def test_inference_statistics(client):
    before = client.get_inference_statistics("digits_torchscript").model_stats[0]
    tensor, _ = digits_input(3, seed=2)
    client.infer("digits_torchscript", [tensor])
    stats = client.get_inference_statistics("digits_torchscript").model_stats[0]
    assert stats.inference_count == before.inference_count + 3
    assert stats.execution_count == before.execution_count + 1
    assert stats.inference_stats.success.count == before.inference_stats.success.count + 1
    assert stats.inference_stats.queue.count >= 1
    assert stats.inference_stats.compute_infer.ns > before.inference_stats.compute_infer.ns
    assert 3 in {b.batch_size for b in stats.batch_stats}


def test_unload_and_load_model(client):
    assert client.is_model_ready("digits_torchscript")
    client.unload_model("digits_torchscript")
    assert not client.is_model_ready("digits_torchscript")
    tensor, _ = digits_input(1, seed=4)
    with pytest.raises(InferenceServerException) as error:
        client.infer("digits_torchscript", [tensor])
    assert error.value.status() == "StatusCode.NOT_FOUND"
    index = {m.name: m.state for m in client.get_model_repository_index().models}
    assert index["digits_torchscript"] == "UNAVAILABLE"
    client.load_model("digits_torchscript")
    assert client.is_model_ready("digits_torchscript")
    assert client.infer("digits_torchscript", [tensor]).as_numpy("logits").shape == (1, 10)


def test_system_shared_memory_inputs_and_outputs(client, digits_reference):
    import tritonclient.utils.shared_memory as shm

    tensor, images = digits_input(4, seed=5)
    key = f"/augserve-test-{np.random.default_rng().integers(1 << 30)}"
    in_handle = shm.create_shared_memory_region("in", key + "-in", images.nbytes)
    out_handle = shm.create_shared_memory_region("out", key + "-out", 4 * 10 * 4)
    try:
        shm.set_shared_memory_region(in_handle, [images])
        client.register_system_shared_memory("in", key + "-in", images.nbytes)
        client.register_system_shared_memory("out", key + "-out", 4 * 10 * 4)
        status = client.get_system_shared_memory_status(as_json=True)["regions"]
        assert status["in"]["key"] == key + "-in" and int(status["out"]["byte_size"]) == 160
        with pytest.raises(InferenceServerException, match="already registered"):
            client.register_system_shared_memory("in", key + "-in", images.nbytes)

        tensor = triton.InferInput("input", list(images.shape), "FP32")
        tensor.set_shared_memory("in", images.nbytes)
        output = triton.InferRequestedOutput("logits")
        output.set_shared_memory("out", 4 * 10 * 4)
        result = client.infer("digits", [tensor], outputs=[output])
        assert result.get_output("logits").parameters["shared_memory_region"].string_param == "out"
        logits = shm.get_contents_as_numpy(out_handle, np.float32, [4, 10])
        np.testing.assert_allclose(logits, expected(digits_reference, images), rtol=1e-4,
                                   atol=1e-4)

        # Mixed: the input in shared memory, the output in the reply.
        raw_out = client.infer("digits", [tensor]).as_numpy("logits")
        np.testing.assert_allclose(raw_out, logits, rtol=1e-6)

        too_small = triton.InferInput("input", [5, 1, 8, 8], "FP32")
        too_small.set_shared_memory("in", 5 * 64 * 4)
        with pytest.raises(InferenceServerException, match="outside region 'in'"):
            client.infer("digits", [too_small])
        unknown = triton.InferInput("input", list(images.shape), "FP32")
        unknown.set_shared_memory("nowhere", images.nbytes)
        with pytest.raises(InferenceServerException, match="'nowhere' is not registered"):
            client.infer("digits", [unknown])
        with pytest.raises(InferenceServerException, match="cannot open shared memory"):
            client.register_system_shared_memory("gone", key + "-missing", 16)
    finally:
        client.unregister_system_shared_memory()
        shm.destroy_shared_memory_region(in_handle)
        shm.destroy_shared_memory_region(out_handle)
    assert client.get_system_shared_memory_status(as_json=True).get("regions", {}) == {}
    with pytest.raises(InferenceServerException, match=r"NOT_FOUND.*no shared-memory region 'in'"):
        client.get_system_shared_memory_status("in")
