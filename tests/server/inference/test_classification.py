"""Triton's classification extension: top-k against its reference, the strings, the checks."""

from __future__ import annotations

import json

import numpy as np
import pytest

from augserve.clients.proto.inference import grpc_service_pb2 as pb
from augserve.server.errors import InvalidArgument
from augserve.server.inference.classification import (
    bf16_as_float32,
    class_count,
    classify_output,
    format_classes,
    top_k,
    top_k_reference,
)
from augserve.server.inference.codec import decode_request, encode_response
from augserve.server.inference.model_config import (
    TensorSpec,
    parse_model_config,
    read_model_config,
)

LOGITS = TensorSpec("logits", "FP32", (10,))


@pytest.mark.parametrize("classes", [3, 64, 65, 1000])
@pytest.mark.parametrize("k", [1, 5, 64, 2000])
def test_top_k_matches_the_full_sort_with_ties_and_nan(classes, k):
    rng = np.random.default_rng(classes * 7 + k)
    # Few distinct values, so many ties; some NaN.
    scores = rng.integers(0, 7, (9, classes)).astype(np.float32)
    scores[rng.random(scores.shape) < 0.05] = np.nan
    indices, values = top_k(scores, k)
    ref_indices, ref_values = top_k_reference(scores, k)
    np.testing.assert_array_equal(indices, ref_indices)
    np.testing.assert_array_equal(values, ref_values)
    assert indices.shape == (9, min(k, classes))


def test_top_k_orders_by_score_then_index_and_puts_nan_last():
    scores = np.array([[0.5, np.nan, 2.0, 0.5, -1.0]], np.float32)
    assert top_k_reference(scores, 5)[0].tolist() == [[2, 0, 3, 4, 1]]
    # The reference itself against a plain Python sort.
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(4, 200)).astype(np.float32)
    for row, indices in zip(rows, top_k(rows, 7)[0], strict=True):
        assert indices.tolist() == sorted(range(200), key=lambda i: (-row[i], i))[:7]


def test_strings_follow_triton_formatting():
    scores = np.array([[0.25, 3.0, -1.5], [1.0, 0.0, 1.0]], np.float32)
    assert format_classes(scores, 2, ("zero", "one")).tolist() == [
        [b"3.000000:1:one", b"0.250000:0:zero"],
        [b"1.000000:0:zero", b"1.000000:2"],  # no label line for class 2
    ]
    assert format_classes(np.array([[3, 9]], np.uint8), 1).tolist() == [[b"9:1"]]


def test_unbatched_output_answers_shape_k_and_bf16_is_read_as_float():
    words = (np.array([0.5, 2.0, 1.0], np.float32).view(np.uint32) >> 16).astype(np.uint16)
    np.testing.assert_array_equal(bf16_as_float32(words), [0.5, 2.0, 1.0])
    spec = TensorSpec("y", "BF16", (3,))
    assert classify_output(words, spec, 2, (), batched=False).tolist() == [b"2.000000:1",
                                                                             b"1.000000:2"]


def _output(name: str, **parameter) -> pb.ModelInferRequest.InferRequestedOutputTensor:
    output = pb.ModelInferRequest.InferRequestedOutputTensor(name=name)
    for kind, value in parameter.items():
        setattr(output.parameters["classification"], kind, value)
    return output


def test_class_count_accepts_what_tritonclient_sends():
    import tritonclient.grpc as triton

    sent = triton.InferRequestedOutput("logits", class_count=3)._get_tensor()
    assert class_count(sent, LOGITS, in_shared_memory=False) == 3
    assert class_count(_output("logits"), LOGITS, in_shared_memory=False) == 0
    assert class_count(_output("logits", int64_param=50), LOGITS, False) == 50  # clamped later


@pytest.mark.parametrize(
    ("output", "spec", "shared", "message"),
    [
        (_output("logits", int64_param=0), LOGITS, False, r"'logits': class_count must be >= 1"),
        (_output("logits", int64_param=-2), LOGITS, False, "must be >= 1, got -2"),
        (_output("logits", string_param="3"), LOGITS, False, "must be an integer"),
        (_output("s", int64_param=1), TensorSpec("s", "BYTES", (4,)), False, "'s'.*BYTES"),
        (_output("m", int64_param=1), TensorSpec("m", "FP32", (2, 5)), False,
         r"'m'.*dims are \[2, 5\]"),
        (_output("logits", int64_param=1), LOGITS, True, "cannot go to shared memory"),
    ],
)
def test_class_count_refuses_what_cannot_be_classified(output, spec, shared, message):
    with pytest.raises(InvalidArgument, match=message):
        class_count(output, spec, shared)


def _settings(tmp_path, **output):
    folder = tmp_path / "m"
    folder.mkdir(exist_ok=True)
    config = {
        "platform": "torch_export", "max_batch_size": 8,
        "input": [{"name": "x", "datatype": "FP32", "dims": [3]}],
        "output": [{"name": "logits", "datatype": "FP32", "dims": [3], **output}],
    }  # fmt: skip
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_label_file_is_read_from_the_model_folder(tmp_path):
    folder = _settings(tmp_path, label_filename="labels.txt")
    (folder / "labels.txt").write_text("cat\r\ndog\nbird\n")
    settings = read_model_config(folder)
    assert settings.outputs[0].label_filename == "labels.txt"
    assert settings.labels == {"logits": ("cat", "dog", "bird")}
    assert parse_model_config(json.loads((folder / "config.json").read_text()), "m").labels == {}


@pytest.mark.parametrize(
    ("name", "message"),
    [("missing.txt", "cannot read 'missing.txt'"), ("../outside.txt", "leads outside"),
     ("/etc/hostname", "leads outside")],
)
def test_label_file_outside_the_folder_or_missing_is_refused(tmp_path, name, message):
    (tmp_path / "outside.txt").write_text("x\n")
    folder = _settings(tmp_path, label_filename=name)
    with pytest.raises(InvalidArgument, match=f"output 'logits' label_filename.*{message}"):
        read_model_config(folder)


@pytest.mark.parametrize("raw", [True, False])
def test_codec_answers_a_classification_output_as_bytes(tmp_path, raw):
    folder = _settings(tmp_path, label_filename="labels.txt")
    (folder / "labels.txt").write_text("cat\ndog\nbird\n")
    settings = read_model_config(folder)
    x = np.zeros((2, 3), np.float32)
    request = pb.ModelInferRequest(model_name="m", id="7")
    tensor = request.inputs.add(name="x", datatype="FP32", shape=[2, 3])
    if raw:
        request.raw_input_contents.append(x.tobytes())
    else:
        tensor.contents.fp32_contents.extend(x.reshape(-1).tolist())
    request.outputs.append(_output("logits", int64_param=2))
    decoded = decode_request(request, settings)
    assert decoded.class_counts == {"logits": 2}
    logits = np.array([[0.1, 0.9, 0.5], [2.0, 1.0, 3.0]], np.float32)
    response = encode_response(request, settings, 1, decoded, [logits])
    out = response.outputs[0]
    assert (out.name, out.datatype, list(out.shape)) == ("logits", "BYTES", [2, 2])
    from augserve.clients.infer import parse_infer_response

    assert parse_infer_response(response)["logits"].tolist() == [
        [b"0.900000:1:dog", b"0.500000:2:bird"], [b"3.000000:2:bird", b"2.000000:0:cat"]]
