"""Images in, answers out: server-side decode, preprocessing and TTA against the client's own.

The `images` model takes encoded images (BYTES) and merges two views (identity and a
horizontal flip) as the mean of their softmax; `images_uint8` takes raw HWC pixels and
answers its logits. Both run `PIPELINE` in the replica (tests/e2e/image_models.py).
"""

from __future__ import annotations

import asyncio
import io
import logging

import grpc
import numpy as np
import pytest
import torch
from PIL import Image

from augserve.clients.infer import build_infer_request, parse_infer_response
from augserve.clients.proto.inference import grpc_service_pb2 as pb
from augserve.clients.proto.inference import grpc_service_pb2_grpc as pb_grpc
from augserve.clients.proto.inference import model_config_pb2 as mc
from augserve.server.augment.pipeline import Pipeline
from tests.bombs import png_declaring
from tests.e2e.image_models import PIPELINE, build_network, jpeg, photos

# Server and client decode with libjpeg-turbo and run the same pipeline and weights; what
# differs is the batch the model runs in (float sums in another order), hence the bound.
SCORE_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
async def stub(server):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


def encoded_request(files: list[bytes], model: str = "images",
                    **parameters: bool | int | str) -> pb.ModelInferRequest:
    array = np.empty((len(files), 1), dtype=object)
    array[:, 0] = files
    return build_infer_request(model, {"image": array}, parameters=parameters)


def client_side(files: list[bytes]) -> torch.Tensor:
    """What a client would do: decode (PIL) and run the same pipeline; the model's input."""
    decoded = [np.asarray(Image.open(io.BytesIO(f)).convert("RGB")) for f in files]
    return Pipeline.from_spec(PIPELINE, "fast")(decoded).images


@pytest.fixture(scope="module")
def files() -> list[bytes]:
    return [jpeg(image) for image in photos().values()]


@pytest.fixture(scope="module")
def network() -> torch.nn.Module:
    return build_network()


def softmax_views(network: torch.nn.Module, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per-view softmax by hand: (identity, horizontal flip)."""
    with torch.inference_mode():
        identity = torch.softmax(network(x), -1).numpy()
        flipped = torch.softmax(network(x.flip(-1)), -1).numpy()
    return identity, flipped


async def infer(stub, request: pb.ModelInferRequest) -> np.ndarray:
    return parse_infer_response(await stub.ModelInfer(request))["logits"]


async def test_metadata_and_config_show_the_public_input(stub):
    metadata = await stub.ModelMetadata(pb.ModelMetadataRequest(name="images"))
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs] == [
        ("image", "BYTES", [-1, 1])]
    config = (await stub.ModelConfig(pb.ModelConfigRequest(name="images_uint8"))).config
    assert [(t.name, t.data_type, list(t.dims)) for t in config.input] == [
        ("image", mc.TYPE_UINT8, [-1, -1, 3])]


async def test_server_side_equals_client_side_with_tta(stub, files, network):
    identity, flipped = softmax_views(network, client_side(files))
    expected = (identity + flipped) / 2
    together = await infer(stub, encoded_request(files))  # one request of 4 images
    alone = await asyncio.gather(*(infer(stub, encoded_request([f])) for f in files))
    for served in (together, np.concatenate(alone)):
        assert served.shape == (len(files), 4)
        np.testing.assert_array_equal(served.argmax(1), expected.argmax(1))
        np.testing.assert_allclose(served, expected, atol=SCORE_TOLERANCE)
    # the flip matters for this network, so the merge is really of two views
    assert np.abs(identity - flipped).max() > 1e-3


async def test_tta_off_and_one_view_give_the_identity_view(stub, files, network):
    identity, _ = softmax_views(network, client_side(files))
    off = await infer(stub, encoded_request(files, tta=False))
    one = await infer(stub, encoded_request(files, tta_views=1))
    for served in (off, one):
        np.testing.assert_allclose(served, identity, atol=SCORE_TOLERANCE)


async def test_rows_with_different_view_counts_share_a_batch(stub, files, network):
    identity, flipped = softmax_views(network, client_side(files))
    answers = await asyncio.gather(
        infer(stub, encoded_request(files[:2], tta=False)),
        infer(stub, encoded_request(files[2:], tta_views=2)),
    )
    np.testing.assert_allclose(answers[0], identity[:2], atol=SCORE_TOLERANCE)
    np.testing.assert_allclose(answers[1], ((identity + flipped) / 2)[2:], atol=SCORE_TOLERANCE)


async def test_uint8_images_of_different_sizes(stub, network):
    pictures = list(photos().values())
    sizes = [(120, 90), (64, 100)]
    requests = [cv_resize(pictures[i], size)[None] for i, size in enumerate(sizes)]
    answers = await asyncio.gather(*(
        infer(stub, build_infer_request("images_uint8", {"image": images}))
        for images in requests))
    for images, served in zip(requests, answers, strict=True):
        with torch.inference_mode():
            expected = network(Pipeline.from_spec(PIPELINE, "fast")(images).images).numpy()
        np.testing.assert_allclose(served, expected, atol=SCORE_TOLERANCE)


def cv_resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    import cv2

    return np.ascontiguousarray(cv2.resize(image, size))


async def expect_status(call, code: grpc.StatusCode, *fragments: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call
    assert error.value.code() == code, error.value.details()
    for fragment in fragments:
        assert fragment in error.value.details(), error.value.details()


@pytest.mark.parametrize(
    ("bad", "code", "fragment"),
    [
        (b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4, grpc.StatusCode.INVALID_ARGUMENT,
         "unreadable jpeg header"),
        ("truncated", grpc.StatusCode.INVALID_ARGUMENT, "truncated JPEG"),
        (b"GIF89a\x01\x00\x01\x00\x00\x00\x00;", grpc.StatusCode.INVALID_ARGUMENT,
         "not a JPEG, PNG or WebP"),
        (b"", grpc.StatusCode.INVALID_ARGUMENT, "empty"),
        (png_declaring(50000, 50000), grpc.StatusCode.RESOURCE_EXHAUSTED,
         "max_image_pixels (--inference-max-image-pixels)"),
    ],
    ids=["corrupt", "truncated", "gif", "empty", "pixel-bomb"],
)
async def test_bad_image_names_its_input_and_row(stub, files, bad, code, fragment):
    if bad == "truncated":
        bad = files[0][: len(files[0]) // 2]
    await expect_status(stub.ModelInfer(encoded_request([files[1], bad])), code,
                        "input 'image' row 1", fragment)


async def test_zero_size_uint8_image(stub):
    images = np.zeros((1, 0, 5, 3), np.uint8)
    await expect_status(stub.ModelInfer(build_infer_request("images_uint8", {"image": images})),
                        grpc.StatusCode.INVALID_ARGUMENT, "input 'image'", "zero-size")


async def test_wrong_datatype_for_the_public_input(stub):
    request = build_infer_request("images", {"image": np.zeros((1, 1), np.float32)})
    await expect_status(stub.ModelInfer(request), grpc.StatusCode.INVALID_ARGUMENT,
                        "input 'image'", "'BYTES'")


@pytest.mark.parametrize(
    ("parameters", "fragment"),
    [({"tta": "yes"}, "'tta' must be a bool"), ({"tta_views": 3}, "1..2"),
     ({"tta_views": 0}, "1..2"), ({"tta": False, "tta_views": 2}, "disagree")],
)
async def test_bad_tta_parameters(stub, files, parameters, fragment):
    await expect_status(stub.ModelInfer(encoded_request(files[:1], **parameters)),
                        grpc.StatusCode.INVALID_ARGUMENT, fragment)


async def test_an_image_that_fails_in_the_replica_fails_only_its_request(
        stub, files, network, caplog):
    # A PNG with a sound header and no pixel data passes the edge and fails to decode in
    # the replica, inside the batch it shares with the good request (100 ms fill delay).
    identity, flipped = softmax_views(network, client_side(files[:1]))
    caplog.set_level(logging.WARNING, logger="augserve.server.inference.batcher")
    good, bad = await asyncio.gather(
        infer(stub, encoded_request(files[:1])),
        stub.ModelInfer(encoded_request([png_declaring(8, 8)])),
        return_exceptions=True,
    )
    np.testing.assert_allclose(good, (identity + flipped) / 2, atol=SCORE_TOLERANCE)
    assert isinstance(bad, grpc.aio.AioRpcError)
    assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT, bad.details()
    assert "input 'image' row 0" in bad.details()
    assert "batch of 2 requests failed" in caplog.text  # they did share a batch


async def test_tritonclient_sends_encoded_images_and_tta_parameters(server, files, network):
    import tritonclient.grpc as triton

    identity, flipped = softmax_views(network, client_side(files))

    def call(parameters):
        with triton.InferenceServerClient(f"127.0.0.1:{server.port}") as client:
            tensor = triton.InferInput("image", [len(files), 1], "BYTES")
            tensor.set_data_from_numpy(np.array(files, dtype=np.object_).reshape(-1, 1))
            result = client.infer("images", [tensor], parameters=parameters)
            return result.as_numpy("logits")

    merged = await asyncio.to_thread(call, None)
    one = await asyncio.to_thread(call, {"tta_views": 1})
    np.testing.assert_allclose(merged, (identity + flipped) / 2, atol=SCORE_TOLERANCE)
    np.testing.assert_allclose(one, identity, atol=SCORE_TOLERANCE)
