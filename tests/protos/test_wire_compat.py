"""Our .proto text is wire-compatible with Triton's: same names, numbers, types and labels."""

from __future__ import annotations

import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from tritonclient.grpc import model_config_pb2 as triton_config
from tritonclient.grpc import service_pb2 as triton

from augserve.clients.proto.inference import grpc_service_pb2 as ours
from augserve.clients.proto.inference import model_config_pb2 as ours_config


def _field_signature(field: FieldDescriptor) -> tuple:
    kind = field.message_type.full_name if field.message_type else None
    enum = field.enum_type.full_name if field.enum_type else None
    return (field.number, field.type, field.is_repeated, kind, enum)


def _messages(descriptor: Descriptor) -> list[Descriptor]:
    found = [descriptor]
    for nested in descriptor.nested_types:
        found += _messages(nested)
    return found


def _all_messages(file_descriptor) -> dict[str, Descriptor]:
    result = {}
    for message in file_descriptor.message_types_by_name.values():
        for descriptor in _messages(message):
            result[descriptor.full_name] = descriptor
    return result


@pytest.mark.parametrize(
    ("our_file", "their_file"),
    [(ours.DESCRIPTOR, triton.DESCRIPTOR), (ours_config.DESCRIPTOR, triton_config.DESCRIPTOR)],
    ids=["grpc_service", "model_config"],
)
def test_every_field_matches_triton(our_file, their_file):
    theirs = _all_messages(their_file)
    checked = 0
    for name, message in _all_messages(our_file).items():
        assert name in theirs, f"{name} is not a Triton message"
        for field in message.fields:
            their_field = theirs[name].fields_by_name.get(field.name)
            assert their_field is not None, f"{name}.{field.name} is not in Triton's schema"
            assert _field_signature(field) == _field_signature(their_field), f"{name}.{field.name}"
            checked += 1
    assert checked > 50


def test_enums_match_triton():
    for enum in ours_config.DESCRIPTOR.enum_types_by_name.values():
        theirs = triton_config.DESCRIPTOR.enum_types_by_name[enum.name]
        assert {v.name: v.number for v in enum.values} == {v.name: v.number for v in theirs.values}


def test_service_has_its_rpcs_with_triton_signatures():
    our_service = ours.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    their_service = triton.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert our_service.full_name == "inference.GRPCInferenceService"
    names = {method.name for method in our_service.methods}
    assert len(names) == 18  # the twelve core RPCs and the six shared-memory ones
    assert {f"{kind}SharedMemory{verb}" for kind in ("System", "Cuda")
            for verb in ("Status", "Register", "Unregister")} <= names
    for method in our_service.methods:
        theirs = their_service.methods_by_name[method.name]
        assert method.input_type.full_name == theirs.input_type.full_name
        assert method.output_type.full_name == theirs.output_type.full_name
        assert method.client_streaming == theirs.client_streaming
        assert method.server_streaming == theirs.server_streaming


def test_bytes_cross_between_our_stubs_and_tritonclient():
    request = ours.ModelInferRequest(model_name="m", id="7")
    request.inputs.add(name="x", datatype="FP32", shape=[2, 3])
    request.raw_input_contents.append(b"\0" * 24)
    decoded = triton.ModelInferRequest.FromString(request.SerializeToString())
    assert (decoded.model_name, decoded.id, list(decoded.inputs[0].shape)) == ("m", "7", [2, 3])
    assert decoded.raw_input_contents[0] == b"\0" * 24
