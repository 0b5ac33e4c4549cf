"""Typed converters between `augserve.v1` messages and the engine's types.

Every check on a request happens here, once; failures raise `InvalidArgument` (malformed)
or `ResourceExhausted` (over a limit).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch

from augserve.clients.proto.augserve.v1 import augment_pb2 as pb
from augserve.server.augment.ops import OpParams
from augserve.server.augment.settings import AugmentSettings
from augserve.server.augment.spec import PipelineSpec
from augserve.server.augment.targets import Targets
from augserve.server.errors import InvalidArgument
from augserve.server.limits import over_limit


def decode_image(message: pb.Image, where: str, settings: AugmentSettings) -> np.ndarray:
    """A uint8 [H, W, 3] view of the message's bytes (no copy), or InvalidArgument."""
    if message.dtype not in ("", "uint8"):
        raise InvalidArgument(f"{where}.dtype: only uint8 is accepted, got {message.dtype!r}")
    shape = tuple(message.shape)
    if len(shape) != 3 or shape[2] != 3:
        raise InvalidArgument(f"{where}.shape: expected [H, W, 3], got {list(shape)}")
    if shape[0] <= 0 or shape[1] <= 0:
        raise InvalidArgument(f"{where}.shape: zero-size image {list(shape)}")
    if shape[0] * shape[1] > settings.max_pixels:
        raise over_limit(settings, "max_pixels", f"{where}: {shape[0]}x{shape[1]}")
    expected = shape[0] * shape[1] * 3
    if len(message.data) != expected:
        raise InvalidArgument(f"{where}.data: {len(message.data)} bytes do not match shape "
                              f"{list(shape)} ({expected} bytes)")
    return np.frombuffer(message.data, dtype=np.uint8).reshape(shape)


_WIRE_DTYPES = {torch.uint8: "uint8", torch.float32: "float32", torch.float16: "float16",
                torch.bfloat16: "bfloat16"}


def encode_image(tensor: torch.Tensor) -> pb.Image:
    """An output tensor as raw bytes with its shape and dtype name."""
    t = tensor.contiguous()
    raw = t.view(torch.int16) if t.dtype == torch.bfloat16 else t
    return pb.Image(data=raw.numpy().tobytes(), shape=list(t.shape), dtype=_WIRE_DTYPES[t.dtype])


def params_to_proto(params: Sequence[OpParams]) -> list[pb.SampleParams]:
    """Batch params (one per op) as one SampleParams per sample."""
    n = len(params[0]) if params else 0
    columns = [{k: v.tolist() for k, v in p.columns().items()} for p in params]
    applied = [p.applied.tolist() for p in params]
    out = []
    for i in range(n):
        sample = pb.SampleParams()
        for k in range(len(params)):
            sample.ops.add(applied=applied[k][i],
                           values={name: col[i] for name, col in columns[k].items()})
        out.append(sample)
    return out


def params_from_proto(
    spec: PipelineSpec, samples: Sequence[pb.SampleParams]
) -> tuple[OpParams, ...]:
    """One SampleParams per image back into checked batch params, or InvalidArgument.

    Every op gets all of its fields, each finite and within the op's `param_bounds`, so
    the pool replays them without further checks.
    """
    for i, sample in enumerate(samples):
        if len(sample.ops) != len(spec.ops):
            raise InvalidArgument(
                f"params[{i}].ops: expected {len(spec.ops)}, got {len(sample.ops)}")
    out = []
    for k, op in enumerate(spec.ops):
        applied = [s.ops[k].applied for s in samples]
        names = {name for s in samples for name in s.ops[k].values}
        wanted = [f.name for f in dataclasses.fields(op.params_type) if f.name != "applied"]
        missing = [name for name in wanted if name not in names]
        if missing:
            raise InvalidArgument(f"params (op {k}, {op.name}): params of "
                                  f"{op.params_type.__name__}: missing field {missing[0]!r}")
        columns = {name: [s.ops[k].values.get(name, float("nan")) for s in samples]
                   for name in wanted}
        params = op.params_type.from_columns(applied, columns)
        if any(torch.isnan(v).any() for v in params.columns().values()):
            raise InvalidArgument(f"params (op {k}, {op.name}): a value is missing")
        op.check_params(params)  # a SpecError (InvalidArgument) names the field and bounds
        out.append(params)
    return tuple(out)


def targets_from_proto(messages: Sequence[pb.Targets], settings: AugmentSettings) -> list[Targets]:
    """Request targets (boxes xyxy, keypoints xy, optional uint8 mask), or InvalidArgument."""
    out = []
    for i, m in enumerate(messages):
        if len(m.boxes) % 4 or len(m.keypoints) % 2:
            raise InvalidArgument(f"targets[{i}]: boxes need 4 numbers each, keypoints 2")
        mask = None
        if m.HasField("mask"):
            shape = list(m.mask.shape)
            if len(shape) != 2 or len(m.mask.data) != shape[0] * shape[1] or min(shape) <= 0:
                raise InvalidArgument(f"targets[{i}].mask: expected uint8 [H, W] matching data")
            mask = np.frombuffer(m.mask.data, np.uint8).reshape(shape)
        out.append(Targets(np.asarray(m.boxes, np.float32).reshape(-1, 4),
                           np.asarray(m.keypoints, np.float32).reshape(-1, 2), mask))
    return out


def targets_to_proto(targets: Targets) -> pb.Targets:
    """Moved targets as a message."""
    message = pb.Targets(boxes=targets.boxes.ravel().tolist(),
                         keypoints=targets.keypoints.ravel().tolist(),
                         box_indices=[] if targets.box_indices is None else
                         targets.box_indices.tolist(),
                         keypoints_visible=[] if targets.keypoints_visible is None else
                         targets.keypoints_visible.tolist())
    if targets.mask is not None:
        message.mask.CopyFrom(pb.Image(data=targets.mask.tobytes(), shape=list(targets.mask.shape),
                                       dtype="uint8"))
    return message
