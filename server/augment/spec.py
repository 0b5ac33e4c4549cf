"""Pipeline specs: the typed form, and its proto / JSON forms (the proto's JSON mapping).

An op is given either by its own message (`{"rotate": {"degrees": [-10, 10]}}`) or,
for any registered op, by name (`{"named": {"name": "random_gamma", "params":
{"gamma": [0.8, 1.2]}}}`), whose fields are converted to the types of the op's
dataclass fields; so a new op needs no proto change.

`parse_pipeline` accepts a `PipelineSpec`, a `augserve.v1.Pipeline` message, a JSON
string or a dict, checks every field once, and raises `SpecError` (an
`InvalidArgument`) naming the op and the field at fault.

Example:
    >>> spec = parse_pipeline('{"ops": [{"horizontalFlip": {}, "p": 0.5}], "dtype": "uint8"}')
    >>> spec.ops[0]
    HorizontalFlip(p=0.5)
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from typing import Any

from google.protobuf import json_format

from augserve.clients.proto import POOL
from augserve.clients.proto.augserve.v1 import augment_pb2 as pb
from augserve.server.augment.ops import OPS, Normalize, Op, SpecError
from augserve.server.augment.ops.base import check_fill
from augserve.server.augment.settings import AugmentSettings
from augserve.server.errors import ResourceExhausted

DTYPES = ("uint8", "float32", "float16", "bfloat16")
LAYOUTS = ("NCHW", "NHWC")
BOX_POLICIES = ("clip", "drop")
_FILL_FIELDS = {"fill"}
# ops with a message of their own in `OpSpec`; any other op is given as a `NamedOp`
_TYPED = {f.name for f in pb.OpSpec.DESCRIPTOR.oneofs_by_name["op"].fields} - {"named"}


@dataclasses.dataclass(frozen=True)
class PipelineSpec:
    """A checked pipeline: ops in order, then the output's dtype and layout.

    Attributes:
        ops: the ops, applied in order.
        dtype: "uint8", "float32", "float16" or "bfloat16".
        layout: "NCHW" or "NHWC".
        box_policy: "clip" (clip to the image; drop boxes left empty) or "drop" (drop
            any box that leaves the image).
    """

    ops: tuple[Op, ...]
    dtype: str = "float32"
    layout: str = "NCHW"
    box_policy: str = "clip"

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise SpecError("dtype", f"expected one of {DTYPES}, got {self.dtype!r}")
        if self.layout not in LAYOUTS:
            raise SpecError("layout", f"expected one of {LAYOUTS}, got {self.layout!r}")
        if self.box_policy not in BOX_POLICIES:
            raise SpecError("box_policy", f"expected {BOX_POLICIES}, got {self.box_policy!r}")
        if self.dtype == "uint8" and any(isinstance(op, Normalize) for op in self.ops):
            raise SpecError("dtype", "normalize needs a float output dtype, not uint8")


def _named_value(field: str, value: Any, default: Any) -> Any:
    """A JSON value of a named op's field, as the type of the field's default."""
    if field in _FILL_FIELDS:
        values = value if isinstance(value, list) else [value]
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            raise SpecError(field, f"expected a number or a list of numbers, got {value!r}")
        return check_fill(field, values)
    if isinstance(default, tuple):
        if not isinstance(value, list) or not all(
                isinstance(v, int | float) and not isinstance(v, bool) for v in value):
            raise SpecError(field, f"expected a list of numbers, got {value!r}")
        if default and isinstance(default[0], int):
            return tuple(_integer(field, v) for v in value)
        return tuple(float(v) for v in value)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise SpecError(field, f"expected true or false, got {value!r}")
        return value
    if isinstance(default, int | float):
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise SpecError(field, f"expected a number, got {value!r}")
        return _integer(field, value) if isinstance(default, int) else float(value)
    if not isinstance(value, str):
        raise SpecError(field, f"expected a string, got {value!r}")
    return value


def _integer(field: str, value: float) -> int:
    if not math.isfinite(value) or value != int(value):
        raise SpecError(field, f"expected an integer, got {value}")
    return int(value)


def _op_from_named(message: pb.NamedOp, p: float) -> Op:
    """An op given by its registry name and a JSON object of its fields."""
    if message.name not in OPS:
        raise SpecError("name", f"unknown op {message.name!r} (known: {', '.join(OPS)})")
    cls = OPS[message.name]
    fields = {f.name: f.default for f in dataclasses.fields(cls) if f.name != "p"}
    kwargs: dict[str, Any] = {"p": p}
    try:
        params = json_format.MessageToDict(message.params)
    except ValueError as error:  # NaN or infinity in a Struct number
        raise SpecError("params", f"{cls.name}: {error}") from None
    for field, value in params.items():
        if field not in fields:
            raise SpecError(field, f"{cls.name} has no such field "
                                   f"(known: {', '.join(fields) or 'none'})")
        kwargs[field] = _named_value(field, value, fields[field])
    return cls(**kwargs)


def _named_to_proto(op: Op, body: pb.NamedOp) -> None:
    """Fill a `NamedOp` with the op's name and every field but p."""
    body.name = op.name
    body.params.update({f.name: list(getattr(op, f.name)) if isinstance(getattr(op, f.name), tuple)
                        else getattr(op, f.name)
                        for f in dataclasses.fields(op) if f.name != "p"})


def _op_from_message(which: str, message: Any, p: float) -> Op:
    cls = OPS[which]
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {"p": p}
    for field in message.DESCRIPTOR.fields:
        value = getattr(message, field.name)
        if field.name in _FILL_FIELDS:
            kwargs["fill"] = check_fill("fill", list(value))
        elif not isinstance(value, int | float | str | bool):
            if len(value):
                kwargs[field.name] = tuple(value)
        elif value != 0 or defaults.get(field.name) in (0, 0.0):
            kwargs[field.name] = value
    return cls(**kwargs)


def spec_from_proto(message: pb.Pipeline,
                    max_ops: int = AugmentSettings.max_ops) -> PipelineSpec:
    """Check a `Pipeline` message (at most `max_ops` ops) and build its typed spec.

    Raises:
        InvalidArgument: naming the op (index and name) and the field at fault.
        ResourceExhausted: more than `max_ops` ops.
    """
    if len(message.ops) > max_ops:
        raise ResourceExhausted(f"pipeline.ops: {len(message.ops)} ops is over max_ops "
                                f"(--augment-max-ops) = {max_ops}")
    ops = []
    for i, op_spec in enumerate(message.ops):
        which = op_spec.WhichOneof("op")
        if which is None:
            raise SpecError(f"pipeline.ops[{i}]", f"no op set (known: {', '.join(OPS)})")
        p = op_spec.p if op_spec.HasField("p") else 1.0
        label = op_spec.named.name if which == "named" else which
        try:
            if which == "named":
                ops.append(_op_from_named(op_spec.named, p))
            else:
                ops.append(_op_from_message(which, getattr(op_spec, which), p))
        except SpecError as error:
            # the op knows its field; the request's path is added
            raise SpecError(f"pipeline.ops[{i}] ({label}).{error.field}", error.detail) from None
    try:
        return PipelineSpec(tuple(ops), message.dtype or "float32", message.layout or "NCHW",
                            message.box_policy or "clip")
    except SpecError as error:
        raise SpecError(f"pipeline.{error.field}", error.detail) from None


def spec_to_proto(spec: PipelineSpec) -> pb.Pipeline:
    """The `Pipeline` message of a typed spec (the inverse of `spec_from_proto`)."""
    message = pb.Pipeline(dtype=spec.dtype, layout=spec.layout, box_policy=spec.box_policy)
    for op in spec.ops:
        op_spec = message.ops.add(p=op.p)
        if op.name not in _TYPED:
            _named_to_proto(op, op_spec.named)
            continue
        body = getattr(op_spec, op.name)
        body.SetInParent()
        for field in body.DESCRIPTOR.fields:
            value = getattr(op, field.name)
            if not isinstance(value, int | float | str | bool):
                getattr(body, field.name).extend(value)
            else:
                setattr(body, field.name, value)
    return message


def parse_pipeline(spec: PipelineSpec | pb.Pipeline | str | Mapping[str, Any],
                   max_ops: int = AugmentSettings.max_ops) -> PipelineSpec:
    """A checked `PipelineSpec` from any of its forms (typed, proto, JSON text, dict).

    A message, JSON text or dict may have at most `max_ops` ops (`AugmentSettings.max_ops`).

    Raises:
        InvalidArgument: unknown op, bad JSON, or a parameter out of range.
    """
    if isinstance(spec, PipelineSpec):
        return spec
    if isinstance(spec, pb.Pipeline):
        return spec_from_proto(spec, max_ops)
    text = spec if isinstance(spec, str) else json.dumps(spec)
    try:
        message = json_format.Parse(text, pb.Pipeline(), descriptor_pool=POOL)
    except json_format.ParseError as error:
        raise SpecError("pipeline JSON", str(error)) from None
    return spec_from_proto(message, max_ops)


def spec_to_json(spec: PipelineSpec) -> str:
    """The JSON form of a spec (proto3 JSON mapping, original field names)."""
    return json_format.MessageToJson(spec_to_proto(spec), preserving_proto_field_name=True)


IMAGENET_TRAIN = PipelineSpec(
    ops=(
        OPS["random_resized_crop"](size=(224, 224), scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)),
        OPS["horizontal_flip"](p=0.5),
        OPS["color_jitter"](p=0.8, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1),
        OPS["grayscale"](p=0.2),
        OPS["normalize"](),
    ),
    dtype="float32",
    layout="NCHW",
)
"""The standard ImageNet training pipeline (the benchmark's), registered as "imagenet_train"."""
