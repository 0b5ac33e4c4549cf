"""Triton's classification extension, asked for by the official tritonclient[grpc]."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

from augserve.server.inference.demo import DIGIT_LABELS
from augserve.server.inference.loading import load_module
from augserve.server.inference.model_config import read_model_config


@pytest.fixture(scope="module")
def client(served):
    with triton.InferenceServerClient(served.url) as client:
        yield client


@pytest.fixture(scope="module")
def digits_logits(model_repository):
    settings = read_model_config(model_repository / "digits")
    module = load_module(settings, model_repository / "digits" / "1", allow_pickle=False)

    def logits(images: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(images)).numpy()

    return logits


def _digits(batch: int, seed: int) -> tuple[triton.InferInput, np.ndarray]:
    images = np.random.default_rng(seed).random((batch, 1, 8, 8), dtype=np.float32)
    tensor = triton.InferInput("input", list(images.shape), "FP32")
    tensor.set_data_from_numpy(images)
    return tensor, images


def _parse(entry: bytes) -> tuple[float, int, str | None]:
    score, index, *label = entry.decode().split(":")
    return float(score), int(index), (label[0] if label else None)


def test_top_k_strings_are_sorted_scores_with_labels(client, digits_logits):
    tensor, images = _digits(4, seed=11)
    result = client.infer("digits", [tensor],
                          outputs=[triton.InferRequestedOutput("logits", class_count=3)])
    output = result.get_output("logits")
    assert (output.datatype, list(output.shape)) == ("BYTES", [4, 3])
    classes = result.as_numpy("logits")
    expected = digits_logits(images)
    for row, logits in zip(classes, expected, strict=True):
        parsed = [_parse(entry) for entry in row]
        order = np.argsort(-logits, kind="stable")[:3]
        assert [index for _, index, _ in parsed] == order.tolist()
        assert [label for _, _, label in parsed] == [DIGIT_LABELS[i] for i in order]
        np.testing.assert_allclose([s for s, _, _ in parsed], logits[order], atol=2e-5)
        assert all(len(entry.decode().split(":")[0].split(".")[1]) == 6 for entry in row)


def test_logits_and_classes_in_one_request(client, digits_logits):
    tensor, images = _digits(2, seed=12)
    result = client.infer("digits", [tensor], outputs=[
        triton.InferRequestedOutput("logits", class_count=1)])
    top1 = [_parse(row[0])[1] for row in result.as_numpy("logits")]
    assert top1 == digits_logits(images).argmax(1).tolist()
    plain = client.infer("digits", [tensor]).as_numpy("logits")  # without: the scores
    assert plain.dtype == np.float32 and plain.shape == (2, 10)


def test_class_count_above_the_classes_is_clamped_and_no_label_file_means_no_label(client):
    tensor, _ = _digits(1, seed=13)
    result = client.infer("digits_torchscript", [tensor],
                          outputs=[triton.InferRequestedOutput("logits", class_count=50)])
    classes = result.as_numpy("logits")
    assert classes.shape == (1, 10)
    assert sorted(_parse(entry)[1] for entry in classes[0]) == list(range(10))
    assert all(_parse(entry)[2] is None for entry in classes[0])


def test_model_config_shows_the_label_file(client):
    assert "classification" in client.get_server_metadata().extensions
    config = client.get_model_config("digits", as_json=True)["config"]
    assert config["output"][0]["label_filename"] == "labels.txt"
    assert "label_filename" not in client.get_model_config("resnet20", as_json=True)[
        "config"]["output"][0]


def _bad_output(name: str, **parameter) -> triton.InferRequestedOutput:
    output = triton.InferRequestedOutput(name, class_count=1)
    del output._get_tensor().parameters["classification"]
    for kind, value in parameter.items():
        setattr(output._get_tensor().parameters["classification"], kind, value)
    return output


@pytest.mark.parametrize(
    ("model", "output", "message"),
    [
        ("digits", _bad_output("logits", int64_param=0), "'logits': class_count must be >= 1"),
        ("digits", _bad_output("logits", int64_param=-3), "class_count must be >= 1, got -3"),
        ("digits", _bad_output("logits", string_param="3"), "'logits'.*must be an integer"),
        ("raiser_2d", triton.InferRequestedOutput("y", class_count=2),
         r"output 'y': class_count needs one dimension.*\[2, 2\]"),
    ],
)
def test_class_count_on_a_non_classification_output_is_invalid_argument(
        client, model, output, message):
    shape = [1, 1, 8, 8] if model == "digits" else [1, 2, 2]
    tensor = triton.InferInput("input" if model == "digits" else "x", shape, "FP32")
    tensor.set_data_from_numpy(np.zeros(shape, np.float32))
    with pytest.raises(InferenceServerException, match=message) as error:
        client.infer(model, [tensor], outputs=[output])
    assert error.value.status() == "StatusCode.INVALID_ARGUMENT"
