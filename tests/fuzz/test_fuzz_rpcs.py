"""Fuzz every RPC of one real server: bytes, tensor headers, pipelines and corrupt images.

Each test draws inputs with hypothesis for its share of `AUGSERVE_FUZZ_SECONDS` (40 s in
all by default; set it higher for a longer run). After every example:

- the reply is OK or a status from the test's expected set: a client-caused error is never
  UNKNOWN or INTERNAL;
- the server answers ServerLive;
- the RSS of the server's process tree (Ray's workers included) stays below its size after
  warm-up plus `AUGSERVE_FUZZ_RSS_SLACK_GIB` (2 GiB by default).

A failing example is printed with its RPC and its bytes in hex (`bytes.fromhex(...)`
rebuilds it), and hypothesis prints a `@reproduce_failure` blob.

Sizes in random pipelines are small or absurd (past every op's bound), never in between:
the output-size limit has tests of its own, and this suite must not allocate gigabytes on
purpose. No RPC takes encoded images, so corrupt JPEG and PNG files reach the server as the
files of a folder dataset that StreamBatches decodes, and go to the decoder directly too.
The reflection service (grpc's own) is not fuzzed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Iterable
from typing import Any

import grpc
import numpy as np
import pytest
from google.protobuf import json_format, message_factory
from google.protobuf.message import DecodeError
from grpc_health.v1 import health_pb2
from hypothesis import HealthCheck, assume, given, note, settings
from hypothesis import strategies as st

from augserve.clients.datatypes import DATATYPES
from augserve.clients.proto.augserve.v1 import augment_pb2, jobs_pb2, stream_pb2
from augserve.clients.proto.inference import grpc_service_pb2 as infer_pb
from augserve.clients.proto.inference import grpc_service_pb2_grpc as infer_grpc
from augserve.server.augment.ops import OPS
from augserve.server.data.datasets import decode_file
from augserve.server.images import IMAGE_ERRORS
from augserve.server.inference.servicer import InferenceServicer

from .conftest import IMAGE_FILES, RSS_SLACK_GIB, FuzzServer, run_for, seed_images, tree_rss

Code = grpc.StatusCode
SERVICES = [
    infer_pb.DESCRIPTOR.services_by_name["GRPCInferenceService"],
    augment_pb2.DESCRIPTOR.services_by_name["AugmentService"],
    stream_pb2.DESCRIPTOR.services_by_name["StreamService"],
    jobs_pb2.DESCRIPTOR.services_by_name["JobService"],
    health_pb2.DESCRIPTOR.services_by_name["Health"],
]
METHODS = [method for service in SERVICES for method in service.methods]
#: What a client may get for a request it made up; UNKNOWN and INTERNAL are never in it.
CLIENT_ERRORS = {Code.OK, Code.INVALID_ARGUMENT, Code.NOT_FOUND, Code.FAILED_PRECONDITION,
                 Code.RESOURCE_EXHAUSTED, Code.PERMISSION_DENIED, Code.ALREADY_EXISTS,
                 Code.OUT_OF_RANGE, Code.DEADLINE_EXCEEDED}
#: Methods of the KServe protocol that augserve does not serve (CUDA shared memory, ...).
UNSERVED = {
    method.name for method in SERVICES[0].methods
    if getattr(InferenceServicer, method.name)
    is getattr(infer_grpc.GRPCInferenceServiceServicer, method.name)
}
TIMEOUT_S = 10.0
FUZZ = settings(deadline=None, max_examples=20, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                       HealthCheck.function_scoped_fixture])


def path(method: Any) -> str:
    """The method's gRPC path, e.g. "/inference.GRPCInferenceService/ModelInfer"."""
    return f"/{method.containing_service.full_name}/{method.name}"


def request_class(method: Any) -> type:
    """The generated message class of the method's request."""
    return message_factory.GetMessageClass(method.input_type)


def call_raw(channel: grpc.Channel, method: Any, payload: bytes) -> tuple[Code, str]:
    """Send `payload` as the request's bytes; the status (a stream that answers once is OK)."""
    name = path(method)
    try:
        if method.client_streaming and method.server_streaming:
            replies = channel.stream_stream(name)(iter([payload]), timeout=TIMEOUT_S)
        elif method.server_streaming:
            replies = channel.unary_stream(name)(payload, timeout=TIMEOUT_S)
        elif method.client_streaming:
            channel.stream_unary(name)(iter([payload]), timeout=TIMEOUT_S)
            return Code.OK, ""
        else:
            channel.unary_unary(name)(payload, timeout=TIMEOUT_S)
            return Code.OK, ""
        with contextlib.suppress(StopIteration):
            next(iter(replies))
        replies.cancel()
        return Code.OK, ""
    except grpc.RpcError as error:
        return error.code(), error.details() or ""


def check_server(server: FuzzServer) -> None:
    """The server is live and its tree's RSS is under the bound."""
    live = infer_pb.ServerLiveResponse.FromString(server.channel.unary_unary(
        "/inference.GRPCInferenceService/ServerLive")(
        infer_pb.ServerLiveRequest().SerializeToString(), timeout=TIMEOUT_S))
    assert live.live
    rss = tree_rss(server.pid)
    assert rss < server.rss_bound, f"server tree RSS {rss / 2**30:.2f} GiB passed the bound " \
                                   f"{server.rss_bound / 2**30:.2f} GiB"


def expect(server: FuzzServer, method: Any, payload: bytes, allowed: Iterable[Code]) -> Code:
    """Send `payload` to `method`, print it as hex, and check the status and the server."""
    note(f"rpc {path(method)}  payload bytes.fromhex({payload.hex()!r})")
    code, details = call_raw(server.channel, method, payload)
    note(f"status {code.name}: {details[:300]}")
    allowed = {*allowed, Code.UNIMPLEMENTED} if method.name in UNSERVED else set(allowed)
    assert code in allowed, f"{path(method)} answered {code.name}: {details[:300]}"
    check_server(server)
    return code


def method_by_name(name: str) -> Any:
    """The method `name` ("Service/Method") of `METHODS`."""
    return next(m for m in METHODS if f"{m.containing_service.name}/{m.name}" == name)


@pytest.fixture(scope="module")
def server(fuzz_server: FuzzServer) -> FuzzServer:
    """The suite's server, warmed up (infer, augment, stream), with its RSS bound set."""
    request = infer_pb.ModelInferRequest(model_name="digits")
    tensor = request.inputs.add(name="input", datatype="FP32", shape=[1, 1, 8, 8])
    tensor.contents.fp32_contents.extend([0.5] * 64)
    assert expect_ok(fuzz_server, "GRPCInferenceService/ModelInfer", request)
    assert expect_ok(fuzz_server, "AugmentService/Augment", augment_request(
        [{"horizontal_flip": {}}], [(8, 8)]))
    assert expect_ok(fuzz_server, "StreamService/StreamBatches", stream_pb2.StreamRequest(
        dataset="fuzzed", batch_size=2, pipeline=augment_pb2.Pipeline()))
    fuzz_server.rss_bound = tree_rss(fuzz_server.pid) + int(RSS_SLACK_GIB * 2**30)
    return fuzz_server


def expect_ok(server: FuzzServer, name: str, message: Any) -> bool:
    """Whether a valid request to `name` is answered OK."""
    code, details = call_raw(server.channel, method_by_name(name), message.SerializeToString())
    assert code == Code.OK, f"{name}: {code.name} {details}"
    return True


# --- malformed protobuf bytes -------------------------------------------------------------

def parses(method: Any, payload: bytes) -> bool:
    """Whether `payload` parses as the method's request message."""
    try:
        request_class(method).FromString(payload)
    except DecodeError:
        return False
    return True


def test_undecodable_bytes_are_invalid_argument_on_every_rpc(server):
    @FUZZ
    @given(method=st.sampled_from(METHODS), payload=st.binary(min_size=1, max_size=256))
    def batch(method, payload):
        assume(not parses(method, payload))
        expect(server, method, payload, {Code.INVALID_ARGUMENT})

    run_for(0.05, batch)


def wire_bytes() -> st.SearchStrategy[bytes]:
    """Bytes in protobuf's wire format: random fields of every wire type, nested at times."""
    def varint(value: int) -> bytes:
        out = bytearray()
        while True:
            out.append((value & 0x7F) | (0x80 if value > 0x7F else 0))
            value >>= 7
            if not value:
                return bytes(out)

    def field(number: int, kind: int, payload: bytes, value: int) -> bytes:
        tag = varint(number << 3 | kind)
        if kind == 0:
            return tag + varint(value)
        if kind == 1:
            return tag + value.to_bytes(8, "little")
        if kind == 5:
            return tag + (value & 0xFFFFFFFF).to_bytes(4, "little")
        return tag + varint(len(payload)) + payload

    leaf = st.builds(field, st.integers(1, 40), st.sampled_from([0, 1, 2, 5]),
                     st.binary(max_size=64), st.integers(0, 2**64 - 1))
    nested = st.builds(field, st.integers(1, 40), st.just(2),
                       st.lists(leaf, max_size=4).map(b"".join), st.just(0))
    return st.lists(leaf | nested, max_size=8).map(b"".join)


def test_random_wire_messages_get_an_expected_status_on_every_rpc(server):
    @FUZZ
    @given(method=st.sampled_from(METHODS), payload=wire_bytes())
    def batch(method, payload):
        assume(parses(method, payload))  # the undecodable ones are the test above
        expect(server, method, payload, CLIENT_ERRORS)

    run_for(0.25, batch)


# --- random tensor headers ----------------------------------------------------------------

DIMS = st.one_of(st.integers(-3, 70), st.sampled_from([2**31, 2**32 + 1, 2**62, 2**63 - 1,
                                                       -(2**63)]))
PARAMETER_KEYS = ["shared_memory_region", "shared_memory_byte_size", "shared_memory_offset",
                  "binary_data_size", "classification", "priority", "timeout"]


@st.composite
def infer_requests(draw: st.DrawFn) -> infer_pb.ModelInferRequest:
    """A ModelInferRequest with random names, datatypes, shapes, contents and parameters."""
    request = infer_pb.ModelInferRequest(
        model_name=draw(st.sampled_from(["digits", "resnet20", "digits_torchscript", "nope",
                                         "../digits", ""])),
        model_version=draw(st.sampled_from(["", "1", "2", "x", "-1"])))
    raw = draw(st.booleans())
    for _ in range(draw(st.integers(0, 3))):
        tensor = request.inputs.add(
            name=draw(st.sampled_from(["input", "x", "", "input\x00"])),
            datatype=draw(st.sampled_from([*DATATYPES, "", "FP128", "fp32"])),
            shape=draw(st.lists(DIMS, max_size=6)))
        for key in draw(st.lists(st.sampled_from(PARAMETER_KEYS), max_size=2)):
            parameter = tensor.parameters[key]
            if draw(st.booleans()):
                parameter.int64_param = draw(st.integers(-(2**63), 2**63 - 1))
            else:
                parameter.string_param = draw(st.sampled_from(["r", "", "../x", "/etc/passwd"]))
        if raw:
            request.raw_input_contents.append(draw(st.binary(max_size=2048)))
        else:
            tensor.contents.fp32_contents.extend(draw(st.lists(
                st.floats(width=32, allow_nan=True), max_size=300)))
            tensor.contents.int64_contents.extend(draw(st.lists(
                st.integers(-(2**63), 2**63 - 1), max_size=4)))
    if draw(st.booleans()):
        request.raw_input_contents.append(draw(st.binary(max_size=512)))
    for _ in range(draw(st.integers(0, 2))):
        request.outputs.add(name=draw(st.sampled_from(["logits", "y", "", "nope"])))
    return request


def test_random_tensor_headers_get_an_expected_status(server):
    methods = [method_by_name("GRPCInferenceService/ModelInfer"),
               method_by_name("GRPCInferenceService/ModelStreamInfer")]

    @FUZZ
    @given(method=st.sampled_from(methods), request=infer_requests())
    def batch(method, request):
        expect(server, method, request.SerializeToString(), CLIENT_ERRORS)

    run_for(0.2, batch)


# --- random pipelines ---------------------------------------------------------------------

NUMBERS = st.one_of(st.integers(-4, 48), st.floats(-2.0, 2.0),
                    st.sampled_from([0, -1, 1e9, -1e9, 2**31, 2**63, 1e308, float("inf"),
                                     float("-inf"), float("nan")]))
JSON = st.recursive(st.none() | st.booleans() | NUMBERS | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)


def field_names(op: str) -> list[str]:
    """The registered op's fields (its params), or none for an unknown name."""
    cls = OPS.get(op)
    return [f.name for f in dataclasses.fields(cls)] if cls and dataclasses.is_dataclass(cls) \
        else []


@st.composite
def named_ops(draw: st.DrawFn) -> dict[str, Any]:
    """One op as the JSON form of `NamedOp`: a real or made-up name, random params."""
    name = draw(st.sampled_from(sorted(OPS)) | st.text(max_size=12))
    keys = [*field_names(name), "bogus"]
    params = draw(st.dictionaries(st.sampled_from(keys), JSON, max_size=3))
    op: dict[str, Any] = {"named": {"name": name, "params": params}}
    if draw(st.booleans()):
        op["p"] = draw(NUMBERS)
    return op


def augment_request(ops: list[dict[str, Any]], shapes: list[tuple[int, int]],
                    **fields: Any) -> augment_pb2.AugmentRequest:
    """An AugmentRequest of black images of `shapes` through the pipeline `ops` (JSON form)."""
    pipeline = json_format.ParseDict({"ops": ops, **fields}, augment_pb2.Pipeline())
    request = augment_pb2.AugmentRequest(pipeline=pipeline)
    for h, w in shapes:
        request.images.add(data=bytes(h * w * 3), shape=[h, w, 3])
    return request


PIPELINE_FIELDS = st.fixed_dictionaries({}, optional={
    "dtype": st.sampled_from(["uint8", "float32", "float16", "bfloat16", "int4", ""]),
    "layout": st.sampled_from(["NCHW", "NHWC", "CHW", ""]),
    "boxPolicy": st.sampled_from(["clip", "drop", "keep"]),
})


def to_request(ops: list[dict[str, Any]], fields: dict[str, str],
               shapes: list[tuple[int, int]], seed: int) -> augment_pb2.AugmentRequest | None:
    """The request, or None when the JSON does not fit the Pipeline message at all."""
    try:
        request = augment_request(ops, shapes, **fields)
    except (json_format.ParseError, ValueError, TypeError):
        return None
    request.seed = seed
    return request


def test_random_pipelines_get_an_expected_status(server):
    augment = method_by_name("AugmentService/Augment")
    stream = method_by_name("StreamService/StreamBatches")

    @FUZZ
    @given(ops=st.lists(named_ops(), max_size=4), fields=PIPELINE_FIELDS,
           shapes=st.lists(st.tuples(st.integers(1, 24), st.integers(1, 24)), min_size=1,
                           max_size=3),
           seed=st.integers(0, 2**64 - 1), to_stream=st.booleans())
    def batch(ops, fields, shapes, seed, to_stream):
        note(f"pipeline {json.dumps({'ops': ops, **fields}, default=str)}")
        request = to_request(ops, fields, shapes, seed)
        assume(request is not None)
        if to_stream:
            message = stream_pb2.StreamRequest(dataset="digits", batch_size=len(shapes),
                                               seed=seed % 2**63, pipeline=request.pipeline)
            expect(server, stream, message.SerializeToString(), CLIENT_ERRORS)
        else:
            expect(server, augment, request.SerializeToString(), CLIENT_ERRORS)

    run_for(0.25, batch)


# --- truncated and corrupt JPEG / PNG -----------------------------------------------------

SEEDS = seed_images()


@st.composite
def corrupt_images(draw: st.DrawFn, suffix: str) -> bytes:
    """A seed image of `suffix`, truncated, with bytes overwritten, or garbage appended."""
    data = bytearray(SEEDS[suffix])
    for _ in range(draw(st.integers(0, 6))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    data = data[: draw(st.integers(0, len(data)))]
    return bytes(data) + draw(st.binary(max_size=32))


def test_decoder_raises_only_image_errors(tmp_path):
    target = tmp_path / "image"

    @FUZZ
    @given(suffix=st.sampled_from([".png", ".jpg"]), data=st.data())
    def batch(suffix, data):
        payload = data.draw(corrupt_images(suffix))
        note(f"file bytes.fromhex({payload.hex()!r})")
        target.write_bytes(payload)
        try:
            image = decode_file(target)
        except IMAGE_ERRORS:
            return
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3

    run_for(0.05, batch)


def test_corrupt_dataset_files_get_an_expected_status_from_streams(server):
    stream = method_by_name("StreamService/StreamBatches")

    @FUZZ
    @given(png=corrupt_images(".png"), jpg=corrupt_images(".jpg"),
           on_corrupt=st.sampled_from(["skip", "fail", ""]))
    def batch(png, jpg, on_corrupt):
        note(f"{IMAGE_FILES[0]} bytes.fromhex({png.hex()!r})")
        note(f"{IMAGE_FILES[1]} bytes.fromhex({jpg.hex()!r})")
        server.write_images(dict(zip(IMAGE_FILES, (png, jpg), strict=True)))
        message = stream_pb2.StreamRequest(dataset="fuzzed", batch_size=2, on_corrupt=on_corrupt,
                                           pipeline=augment_pb2.Pipeline())
        expect(server, stream, message.SerializeToString(), CLIENT_ERRORS)

    try:
        run_for(0.2, batch)
    finally:
        server.write_images(dict(zip(IMAGE_FILES, (SEEDS[".png"], SEEDS[".jpg"]), strict=True)))
