"""Pipeline specs: JSON and proto forms, and errors that name the op and the field."""

from __future__ import annotations

import re

import pytest

from augserve.clients.proto.augserve.v1 import augment_pb2 as pb
from augserve.server.augment.pipeline import Pipeline
from augserve.server.augment.spec import (
    IMAGENET_TRAIN,
    parse_pipeline,
    spec_from_proto,
    spec_to_json,
    spec_to_proto,
)
from augserve.server.errors import InvalidArgument

from .cases import OP_CASES
from .test_determinism import FULL


def test_json_and_proto_round_trip():
    for spec in (IMAGENET_TRAIN, FULL):
        assert parse_pipeline(spec_to_json(spec)) == spec
        assert spec_from_proto(spec_to_proto(spec)) == spec


def test_every_op_round_trips():
    for op in OP_CASES.values():
        message = spec_to_proto(parse_pipeline({"ops": []}))
        message.ops.append(spec_to_proto(type(FULL)((op,))).ops[0])
        assert spec_from_proto(message).ops == (op,)


def test_defaults_and_camel_case():
    text = '{"ops": [{"gaussianBlur": {"sigma": [1, 2]}}, {"resize": {"size": [8, 9]}}]}'
    spec = parse_pipeline(text)
    assert spec.ops[0].kernel_size == 3 and spec.ops[0].p == 1.0
    assert (spec.dtype, spec.layout, spec.box_policy) == ("float32", "NCHW", "clip")
    message = pb.Pipeline(ops=[pb.OpSpec(p=0.25, horizontal_flip={})])
    assert Pipeline.from_spec(message).spec.ops[0].p == 0.25


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ({"ops": [{"mosaic": {}}]}, 'no field named "mosaic"'),
        ({"ops": [{"rotate": {"degrees": [10, -10]}}]}, "ops[0] (rotate).degrees"),
        ({"ops": [{"horizontalFlip": {}}, {"colorJitter": {"hue": 0.7}}]},
         "ops[1] (color_jitter).hue"),
        ({"ops": [{"randomResizedCrop": {"scale": [0.5, 1.5]}}]}, "(random_resized_crop).scale"),
        ({"ops": [{"randomResizedCrop": {"size": [224]}}]}, "(random_resized_crop).size"),
        ({"ops": [{"resize": {"size": [4, 4]}, "p": 0.5}]}, "(resize).p"),
        ({"ops": [{"verticalFlip": {}, "p": 1.5}]}, "(vertical_flip).p"),
        ({"ops": [{"centerCrop": {"size": [4, 4], "fill": [1, 2]}}]}, "(center_crop).fill"),
        ({"ops": [{"gaussianBlur": {"kernelSize": 4}}]}, "(gaussian_blur).kernel_size"),
        ({"ops": [{"normalize": {"std": [0, 1, 1]}}]}, "(normalize).std"),
        ({"ops": [{"randomErasing": {"ratio": [0, 1]}}]}, "(random_erasing).ratio"),
        ({"ops": [{"affine": {"translate": [2, 0]}}]}, "(affine).translate"),
        ({"ops": [], "dtype": "int8"}, "pipeline.dtype"),
        ({"ops": [], "layout": "CHW"}, "pipeline.layout"),
        ({"ops": [], "boxPolicy": "keep"}, "pipeline.box_policy"),
        ({"ops": [{"normalize": {}}], "dtype": "uint8"}, "normalize needs a float"),
    ],
)
def test_bad_specs_name_op_and_field(spec, needle):
    with pytest.raises(InvalidArgument) as info:
        parse_pipeline(spec)
    assert needle in str(info.value)


def test_bad_json_text():
    with pytest.raises(InvalidArgument, match="pipeline JSON"):
        parse_pipeline("{not json")


@pytest.mark.parametrize("params, words", [
    ({"fill": None}, "fill: expected a number or a list of numbers"),
    ({"fill": ["x"]}, "fill: expected a number or a list of numbers"),
    ({"p": float("inf")}, "params: affine: Fail to serialize Infinity"),
    ({"degrees": [float("nan"), 1]}, "params: affine: Fail to serialize NaN"),
])
def test_named_op_params_of_the_wrong_kind_are_spec_errors(params, words):
    # Found by tests/fuzz: these raised TypeError / ValueError, which reached clients as INTERNAL.
    with pytest.raises(InvalidArgument, match=re.escape(words)):
        parse_pipeline({"ops": [{"named": {"name": "affine", "params": params}}]})


def test_more_ops_than_max_ops_is_resource_exhausted_naming_the_limit():
    from augserve.server.errors import ResourceExhausted

    assert len(parse_pipeline({"ops": [{"horizontalFlip": {}}] * 3}, max_ops=3).ops) == 3
    with pytest.raises(ResourceExhausted) as caught:
        parse_pipeline({"ops": [{"horizontalFlip": {}}] * 4}, max_ops=3)
    assert str(caught.value) == "pipeline.ops: 4 ops is over max_ops (--augment-max-ops) = 3"
