"""Packing a request's images for the replica: the round trip, batching, edge checks, views."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from augserve.clients.proto.inference import grpc_service_pb2 as pb
from augserve.server.errors import InvalidArgument, ResourceExhausted
from augserve.server.inference.image_inputs import (
    ENCODED,
    pack_images,
    requested_views,
    unpack_images,
)
from augserve.server.inference.model_config import parse_model_config
from augserve.server.inference.settings import InferenceSettings
from tests.bombs import jpeg_declaring, png_declaring
from tests.server.inference.test_preprocess_config import config

RNG = np.random.default_rng(0)
LIMITS = InferenceSettings()


def preprocess(datatype="BYTES", views=("identity", "hflip")):
    raw = config(tta={"views": list(views), "outputs": ["logits"]})
    raw["preprocess"]["datatype"] = datatype
    return parse_model_config(raw, "m").preprocess


def encoded(*files: bytes) -> np.ndarray:
    array = np.empty((len(files), 1), dtype=object)
    array[:, 0] = files
    return array


def png(height: int, width: int) -> bytes:
    return cv2.imencode(".png", RNG.integers(0, 256, (height, width, 3), np.uint8))[1].tobytes()


def params(**values) -> dict:
    request = pb.ModelInferRequest()
    for key, value in values.items():
        field = "bool_param" if isinstance(value, bool) else (
            "int64_param" if isinstance(value, int) else "string_param")
        setattr(request.parameters[key], field, value)
    return request.parameters


def test_encoded_images_round_trip_and_concatenate_across_requests():
    first, second = [png(5, 7), png(9, 4)], [png(3, 3)]
    parts = [pack_images(encoded(*files), preprocess(), params(tta_views=n), LIMITS)
             for files, n in ((first, 2), (second, 1))]
    record, payload = (np.concatenate([p[i] for p in parts]) for i in range(2))
    rows = list(unpack_images(record, payload))
    assert [r for r, _, _ in rows] == [0, 1, 2]
    for (_, entry, data), file, (h, w), views in zip(
            rows, [*first, *second], [(5, 7), (9, 4), (3, 3)], [2, 2, 1], strict=True):
        assert data.tobytes() == file
        assert entry.tolist() == [len(file), h, w, ENCODED, views]


def test_uint8_images_round_trip_without_a_copy():
    images = RNG.integers(0, 256, (2, 6, 5, 3), np.uint8)
    record, payload = pack_images(images, preprocess("UINT8"), {}, LIMITS)
    assert np.shares_memory(payload, images)
    for row, entry, data in unpack_images(record, payload):
        assert entry.tolist() == [90, 6, 5, 3, 2]
        np.testing.assert_array_equal(data.reshape(6, 5, 3), images[row])


def test_a_record_that_disagrees_with_its_payload_is_refused():
    record, payload = pack_images(encoded(png(4, 4)), preprocess(), {}, LIMITS)
    with pytest.raises(ValueError, match="the payload holds"):
        list(unpack_images(record, payload[:-1]))


@pytest.mark.parametrize(
    ("data", "error", "fragment"),
    [
        (b"", InvalidArgument, "empty"),
        (b"GIF89a\x01\x00\x01\x00", InvalidArgument, "not a JPEG, PNG or WebP"),
        (b"\x89PNG\r\n\x1a\n" + bytes(40), InvalidArgument, "unreadable png header"),
        (png(8, 8)[:-30] + b"", InvalidArgument, None),
        (png_declaring(50000, 50000), ResourceExhausted,
         "over max_image_pixels (--inference-max-image-pixels) = 67108864"),
        (jpeg_declaring(9000, 9000), ResourceExhausted, "9000x9000"),
    ],
    ids=["empty", "gif", "bad-header", "cut-png", "png-bomb", "jpeg-bomb"],
)
def test_bad_files_fail_at_the_edge_naming_the_row(data, error, fragment):
    if fragment is None:  # a PNG cut short still has a sound header: the replica refuses it
        pack_images(encoded(png(2, 2), data), preprocess(), {}, LIMITS)
        return
    with pytest.raises(error) as raised:
        pack_images(encoded(png(2, 2), data), preprocess(), {}, LIMITS)
    assert "input 'image' row 1" in str(raised.value) and fragment in str(raised.value)


def test_the_pixel_bound_is_the_servers():
    small = InferenceSettings(max_image_pixels=100)
    with pytest.raises(ResourceExhausted, match="11x10 = 110 pixels, over max_image_pixels"):
        pack_images(encoded(png(10, 11)), preprocess(), {}, small)
    with pytest.raises(ResourceExhausted, match="over max_image_pixels"):
        pack_images(np.zeros((1, 10, 11, 3), np.uint8), preprocess("UINT8"), {}, small)


def test_zero_size_uint8_images_are_refused():
    with pytest.raises(InvalidArgument, match="input 'image': zero-size images"):
        pack_images(np.zeros((1, 0, 4, 3), np.uint8), preprocess("UINT8"), {}, LIMITS)


@pytest.mark.parametrize(
    ("values", "views"),
    [({}, 6), ({"tta": True}, 6), ({"tta": False}, 1), ({"tta_views": 3}, 3),
     ({"tta": False, "tta_views": 1}, 1), ({"tta": True, "tta_views": 2}, 2)],
)
def test_requested_views(values, views):
    assert requested_views(params(**values), preprocess(views=("identity", "hflip",
                                                                "five_crop"))) == views


@pytest.mark.parametrize(
    ("values", "fragment"),
    [({"tta": 1}, r"'tta' must be a bool \(bool_param\), got int64_param"),
     ({"tta_views": True}, "'tta_views' must be an int64"),
     ({"tta_views": 0}, r"must lie in 1\.\.2"), ({"tta_views": 3}, r"must lie in 1\.\.2"),
     ({"tta": False, "tta_views": 2}, "disagree")],
)
def test_bad_view_parameters(values, fragment):
    with pytest.raises(InvalidArgument, match=fragment):
        requested_views(params(**values), preprocess())


def test_a_model_without_tta_has_one_view():
    raw = config()
    settings = parse_model_config(raw, "m").preprocess
    assert requested_views(params(tta=True), settings) == 1
    with pytest.raises(InvalidArgument, match=r"1\.\.1"):
        requested_views(params(tta_views=2), settings)
