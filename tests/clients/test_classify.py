"""`InferClient.classify`'s request and reply, without a server."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from augserve.clients.classify import (
    Classification,
    encode_image,
    images_tensor,
    parse_classes,
    pick_names,
)
from augserve.clients.datatypes import deserialize_bytes_tensor
from augserve.clients.infer import ModelInfo, TensorInfo, build_classify_request, classify_names
from augserve.server.inference.classification import format_classes

IMAGE = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)


def test_images_travel_as_given_read_from_files_or_as_png(tmp_path):
    jpeg = cv2.imencode(".jpg", IMAGE)[1].tobytes()
    path = tmp_path / "a.jpg"
    path.write_bytes(jpeg)
    assert encode_image(jpeg) == jpeg
    assert encode_image(bytearray(jpeg)) == jpeg
    assert encode_image(path) == encode_image(str(path)) == jpeg
    png = encode_image(IMAGE)
    decoded = cv2.cvtColor(cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR),
                           cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(decoded, IMAGE)  # RGB in, the same RGB out
    grey = encode_image(IMAGE[..., 0])
    np.testing.assert_array_equal(cv2.imdecode(np.frombuffer(grey, np.uint8),
                                               cv2.IMREAD_UNCHANGED), IMAGE[..., 0])


@pytest.mark.parametrize(
    ("image", "error"),
    [(IMAGE.astype(np.float32), ValueError), (np.zeros((4, 4, 4), np.uint8), ValueError),
     (3, TypeError)],
)
def test_what_is_not_an_image_is_refused_before_sending(image, error):
    with pytest.raises(error):
        encode_image(image)


def test_one_image_a_list_or_an_nhwc_batch_make_a_bytes_tensor_n_by_1():
    assert images_tensor(b"x").shape == (1, 1)
    assert images_tensor(IMAGE).shape == (1, 1)
    assert images_tensor(np.stack([IMAGE] * 3)).shape == (3, 1)
    assert images_tensor([b"a", IMAGE]).shape == (2, 1)
    with pytest.raises(ValueError, match="at least one image"):
        images_tensor([])


def test_request_carries_the_images_and_asks_for_the_classes():
    request = build_classify_request("faces", [b"one", b"three"], 3, "image", "logits", "2")
    (tensor,) = request.inputs
    assert (request.model_name, request.model_version) == ("faces", "2")
    assert (tensor.name, tensor.datatype, list(tensor.shape)) == ("image", "BYTES", [2, 1])
    assert deserialize_bytes_tensor(request.raw_input_contents[0], 2).tolist() == [b"one",
                                                                                  b"three"]
    (output,) = request.outputs
    assert output.name == "logits"
    assert output.parameters["classification"].int64_param == 3
    with pytest.raises(ValueError, match="top_k must be >= 1"):
        build_classify_request("faces", [b"x"], 0, "image", "logits")


def test_request_matches_what_tritonclient_sends():
    import tritonclient.grpc as triton

    theirs = triton.InferRequestedOutput("logits", class_count=3)._get_tensor()
    ours = build_classify_request("faces", [b"x"], 3, "image", "logits").outputs[0]
    assert ours.SerializeToString() == theirs.SerializeToString()


def test_names_come_from_the_metadata():
    info = ModelInfo("faces", ("1",), "pytorch_torch_export",
                     (TensorInfo("image", "BYTES", (-1, 1)),), (TensorInfo("logits", "FP32",
                                                                          (-1, 2)),))
    assert classify_names(info, None, None) == ("image", "logits")
    assert pick_names([("x", "FP32")], ["a", "b"], "x", "b") == ("x", "b")
    with pytest.raises(ValueError, match="0 BYTES inputs; pass input_name"):
        pick_names([("x", "FP32")], ["y"], None, None)
    with pytest.raises(ValueError, match="pass output_name"):
        pick_names([("i", "BYTES")], ["a", "b"], None, None)


def test_reply_parses_what_the_server_formats():
    scores = np.array([[0.2, 0.8], [0.9, 0.1]], np.float32)
    parsed = parse_classes(format_classes(scores, 2, ("non-face", "face")))
    assert parsed == [
        [Classification("face", 0.8, 1), Classification("non-face", 0.2, 0)],
        [Classification("non-face", 0.9, 0), Classification("face", 0.1, 1)],
    ]
    odd = parse_classes(np.array([b"1.500000:3:a:b", b"-inf:0"], dtype=object))
    assert odd == [[Classification("a:b", 1.5, 3), Classification("", float("-inf"), 0)]]


def test_request_parameters_travel_typed():
    from augserve.clients.infer import build_infer_request

    request = build_infer_request("m", {"x": np.zeros((1, 2), np.float32)},
                                  parameters={"tta": False, "tta_views": 2, "note": "a"})
    assert request.parameters["tta"].WhichOneof("parameter_choice") == "bool_param"
    assert request.parameters["tta"].bool_param is False
    assert request.parameters["tta_views"].int64_param == 2
    assert request.parameters["note"].string_param == "a"
    with pytest.raises(TypeError, match="parameter 'bad'"):
        build_infer_request("m", {}, parameters={"bad": 1.5})
