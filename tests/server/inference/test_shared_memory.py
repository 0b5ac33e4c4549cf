"""Triton's system shared memory: the region registry and the codec's use of it."""

from __future__ import annotations

import os
import uuid

import numpy as np
import pytest

from augserve.clients.proto.inference import grpc_service_pb2 as pb
from augserve.server.errors import AlreadyExists, InvalidArgument, NotFound, PermissionDenied
from augserve.server.inference.codec import decode_request, encode_response
from augserve.server.inference.model_config import parse_model_config
from augserve.server.inference.shared_memory import SHM_ROOT, SystemSharedMemory

SETTINGS = parse_model_config({
    "platform": "torch_export", "max_batch_size": 8,
    "input": [{"name": "x", "datatype": "FP32", "dims": [4]},
              {"name": "k", "datatype": "INT64", "dims": [1]}],
    "output": [{"name": "y", "datatype": "FP32", "dims": [4]}]}, "m")


@pytest.fixture
def shm_object():
    key = f"/augserve-test-{uuid.uuid4().hex}"
    path = os.path.join(SHM_ROOT, key[1:])
    with open(path, "wb") as file:
        file.write(bytes(256))
    yield key, path
    os.unlink(path)


def in_region(name: str, region: str, shape: list[int], datatype: str, byte_size: int,
              offset: int = 0) -> pb.ModelInferRequest.InferInputTensor:
    tensor = pb.ModelInferRequest.InferInputTensor(name=name, datatype=datatype, shape=shape)
    tensor.parameters["shared_memory_region"].string_param = region
    tensor.parameters["shared_memory_byte_size"].int64_param = byte_size
    if offset:
        tensor.parameters["shared_memory_offset"].int64_param = offset
    return tensor


def test_register_status_unregister(shm_object):
    key, _ = shm_object
    memory = SystemSharedMemory()
    memory.register("a", key, 16, 64)
    with pytest.raises(AlreadyExists, match="'a' is already registered"):
        memory.register("a", key, 0, 8)
    with pytest.raises(InvalidArgument, match="past the end"):
        memory.register("b", key, 200, 64)
    for bad in ("/../etc/passwd", "/a/b", "", "/"):
        with pytest.raises(InvalidArgument, match="key"):
            memory.register("c", bad, 0, 8)
    with pytest.raises(InvalidArgument, match="cannot open"):
        memory.register("c", "/augserve-no-such-object", 0, 8)
    assert [(r.name, r.key, r.offset, r.byte_size) for r in memory.status("")] == [
        ("a", key, 16, 64)]
    with pytest.raises(NotFound):
        memory.status("b")
    with pytest.raises(NotFound):
        memory.unregister("b")
    memory.unregister("")
    assert memory.status("") == []


def test_inputs_come_from_and_outputs_go_to_regions(shm_object):
    key, path = shm_object
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    k = np.array([[3], [4]], np.int64)
    with open(path, "r+b") as file:
        file.seek(32)
        file.write(x.tobytes())
    memory = SystemSharedMemory()
    memory.register("in", key, 0, 128)
    memory.register("out", key, 128, 128)
    request = pb.ModelInferRequest(model_name="m", inputs=[
        in_region("x", "in", [2, 4], "FP32", x.nbytes, offset=32),
        pb.ModelInferRequest.InferInputTensor(name="k", datatype="INT64", shape=[2, 1])])
    request.raw_input_contents.append(k.tobytes())  # only the input not in shared memory
    output = request.outputs.add(name="y")
    output.parameters["shared_memory_region"].string_param = "out"
    output.parameters["shared_memory_byte_size"].int64_param = 32
    decoded = decode_request(request, SETTINGS, memory, local=True)
    np.testing.assert_array_equal(decoded.inputs[0], x)
    np.testing.assert_array_equal(decoded.inputs[1], k)
    response = encode_response(request, SETTINGS, 1, decoded, [x * 2], memory)
    assert response.outputs[0].parameters["shared_memory_region"].string_param == "out"
    assert list(response.raw_output_contents) == [b""]
    with open(path, "rb") as file:
        file.seek(128)
        np.testing.assert_array_equal(np.frombuffer(file.read(32), np.float32), (x * 2).ravel())
    with pytest.raises(InvalidArgument, match=r"output 'y'.*do not fit"):
        encode_response(request, SETTINGS, 1, decoded, [np.zeros((8, 4), np.float32)], memory)


@pytest.mark.parametrize(("tensor", "message"), [
    (in_region("x", "in", [2, 4], "FP32", 16), "byte_size is 16, its shape and datatype need 32"),
    (in_region("x", "in", [2, 4], "FP32", 32, offset=120), "outside region 'in'"),
    (in_region("x", "nope", [2, 4], "FP32", 32), "'nope' is not registered"),
])
def test_bad_shared_memory_inputs_name_the_input(shm_object, tensor, message):
    memory = SystemSharedMemory()
    memory.register("in", shm_object[0], 0, 128)
    request = pb.ModelInferRequest(model_name="m", inputs=[
        tensor, in_region("k", "in", [2, 1], "INT64", 16)])
    with pytest.raises(InvalidArgument, match=f"input 'x'.*{message}"):
        decode_request(request, SETTINGS, memory, local=True)


def test_a_client_on_another_host_may_not_use_shared_memory(shm_object):
    memory = SystemSharedMemory()
    memory.register("in", shm_object[0], 0, 128)
    request = pb.ModelInferRequest(model_name="m", inputs=[
        in_region("x", "in", [2, 4], "FP32", 32), in_region("k", "in", [2, 1], "INT64", 16)])
    with pytest.raises(PermissionDenied, match=r"input 'x'.*server's host"):
        decode_request(request, SETTINGS, memory, local=False)


def test_bytes_outputs_cannot_go_to_shared_memory(shm_object):
    settings = parse_model_config({
        "platform": "torch_export",
        "input": [{"name": "x", "datatype": "FP32", "dims": [4]}],
        "output": [{"name": "label", "datatype": "BYTES", "dims": [1]}]}, "m")
    memory = SystemSharedMemory()
    memory.register("out", shm_object[0], 0, 128)
    request = pb.ModelInferRequest(model_name="m", inputs=[
        pb.ModelInferRequest.InferInputTensor(name="x", datatype="FP32", shape=[4])])
    request.raw_input_contents.append(bytes(16))
    output = request.outputs.add(name="label")
    output.parameters["shared_memory_region"].string_param = "out"
    with pytest.raises(InvalidArgument, match=r"output 'label': BYTES"):
        decode_request(request, settings, memory, local=True)
