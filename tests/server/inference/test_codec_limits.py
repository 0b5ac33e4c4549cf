"""Declared shapes are bounded before anything is allocated: elements, rows, overflow."""

from __future__ import annotations

import pytest

from augserve.clients.proto.inference import grpc_service_pb2 as pb
from augserve.server.errors import InvalidArgument, ResourceExhausted
from augserve.server.inference.codec import check_declared_shapes
from augserve.server.inference.settings import InferenceSettings

LIMITS = InferenceSettings(max_tensor_elements=1000, max_request_rows=10)


def request_of(shape: list[int], datatype: str = "FP32") -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="m")
    request.inputs.add(name="x", datatype=datatype, shape=shape)
    return request


@pytest.mark.parametrize("shape", [[10, 100], [1, 1000], [], [0, 1000], [10, 0, 10]])
def test_shapes_within_the_limits_pass(shape):
    check_declared_shapes(request_of(shape), LIMITS)


@pytest.mark.parametrize("datatype", ["FP32", "BYTES"])
def test_too_many_elements_is_resource_exhausted_naming_the_limit(datatype):
    # no contents at all: the declared shape alone is refused
    with pytest.raises(ResourceExhausted) as caught:
        check_declared_shapes(request_of([2, 501], datatype), LIMITS)
    assert str(caught.value) == ("input 'x': 1002 elements of shape [2, 501] is over "
                                 "max_tensor_elements (--inference-max-tensor-elements) = 1000")


def test_empty_dimensions_count_as_one():
    with pytest.raises(ResourceExhausted, match="max_tensor_elements"):
        check_declared_shapes(request_of([0, 1001]), LIMITS)


def test_too_many_rows_is_resource_exhausted_naming_the_limit():
    with pytest.raises(ResourceExhausted) as caught:
        check_declared_shapes(request_of([11, 2]), LIMITS)
    assert str(caught.value) == ("input 'x': 11 rows is over max_request_rows "
                                 "(--inference-max-request-rows) = 10")


@pytest.mark.parametrize("shape", [[-1, 4], [4, -4], [-2, -3]])
def test_negative_dimensions_are_invalid_arguments(shape):
    with pytest.raises(InvalidArgument, match="negative dimension"):
        check_declared_shapes(request_of(shape), LIMITS)


def test_an_element_count_that_overflows_int64_is_an_invalid_argument():
    with pytest.raises(InvalidArgument, match="overflows int64"):
        check_declared_shapes(request_of([1, 1 << 62, 1 << 62]), InferenceSettings())


def test_every_input_is_checked():
    request = request_of([1, 4])
    request.inputs.add(name="y", datatype="FP32", shape=[5000])
    with pytest.raises(ResourceExhausted, match="input 'y'"):
        check_declared_shapes(request, LIMITS)
