"""Typed conversion between KServe v2 messages and numpy arrays, with every check at the edge.

`decode_request` validates a ModelInferRequest against the model's config once
and returns arrays that view the request's raw bytes without copying;
`encode_response` builds the reply, raw or typed as the request was.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from augserve.clients.datatypes import CONTENTS_FIELD, from_raw, numpy_dtype, to_raw
from augserve.clients.proto.inference import grpc_service_pb2 as pb
from augserve.server.errors import InvalidArgument
from augserve.server.inference.model_config import ModelSettings, TensorSpec


@dataclass(frozen=True)
class DecodedRequest:
    """A checked request: arrays in config input order, and the outputs to return."""

    inputs: list[np.ndarray]
    output_names: list[str]
    raw: bool


def _check_shape(spec: TensorSpec, shape: tuple[int, ...], settings: ModelSettings) -> None:
    dims = spec.dims
    if settings.max_batch_size:
        if len(shape) != len(dims) + 1:
            raise InvalidArgument(
                f"input {spec.name!r}: shape {list(shape)} should be [batch, *{list(dims)}]"
            )
        if not 1 <= shape[0] <= settings.max_batch_size:
            raise InvalidArgument(
                f"input {spec.name!r}: batch size {shape[0]} is outside "
                f"1..{settings.max_batch_size}"
            )
        shape = shape[1:]
    if len(shape) != len(dims) or any(d != -1 and d != s for d, s in zip(dims, shape, strict=True)):
        raise InvalidArgument(
            f"input {spec.name!r}: shape {list(shape)} does not match the model's {list(dims)}"
        )
    if any(s < 0 for s in shape):
        raise InvalidArgument(f"input {spec.name!r}: negative dimension in {list(shape)}")


def _typed_array(tensor: pb.ModelInferRequest.InferInputTensor, spec: TensorSpec) -> np.ndarray:
    field = CONTENTS_FIELD.get(spec.datatype)
    if field is None:
        raise InvalidArgument(f"input {spec.name!r}: {spec.datatype} travels only as raw contents")
    values = getattr(tensor.contents, field)
    count = int(np.prod(tensor.shape, dtype=np.int64))
    if len(values) != count:
        raise InvalidArgument(
            f"input {spec.name!r}: {len(values)} values in contents.{field}, shape "
            f"{list(tensor.shape)} needs {count}"
        )
    dtype = numpy_dtype(spec.datatype)
    return np.array(values, dtype=dtype).reshape(tuple(tensor.shape))


def decode_request(request: pb.ModelInferRequest, settings: ModelSettings) -> DecodedRequest:
    """Check `request` against `settings` and turn its tensors into numpy arrays.

    Raises:
        InvalidArgument: an unknown, missing or duplicate input; a wrong datatype,
            shape or byte length; raw and typed contents mixed; an unknown output.
            The message names the input or output.

    """
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise InvalidArgument(
            f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs"
        )
    by_name: dict[str, np.ndarray] = {}
    for index, tensor in enumerate(request.inputs):
        spec = settings.input_named(tensor.name)
        if spec is None:
            known = [s.name for s in settings.inputs]
            raise InvalidArgument(f"input {tensor.name!r} is not an input of the model; {known}")
        if tensor.name in by_name:
            raise InvalidArgument(f"input {tensor.name!r} appears twice")
        if tensor.datatype != spec.datatype:
            raise InvalidArgument(
                f"input {tensor.name!r}: datatype {tensor.datatype!r}, the model expects "
                f"{spec.datatype!r}"
            )
        shape = tuple(tensor.shape)
        _check_shape(spec, shape, settings)
        if raw and tensor.HasField("contents"):
            raise InvalidArgument(
                f"input {tensor.name!r}: typed contents and raw_input_contents are mixed"
            )
        if raw:
            try:
                by_name[tensor.name] = from_raw(raw[index], spec.datatype, shape)
            except ValueError as error:
                raise InvalidArgument(f"input {tensor.name!r}: {error}") from None
        else:
            by_name[tensor.name] = _typed_array(tensor, spec)
    missing = [s.name for s in settings.inputs if s.name not in by_name]
    if missing:
        raise InvalidArgument(f"input {missing[0]!r} is missing from the request")
    arrays = [by_name[s.name] for s in settings.inputs]
    if settings.max_batch_size and len({a.shape[0] for a in arrays}) > 1:
        raise InvalidArgument("inputs disagree on the batch size (dimension 0)")

    known_outputs = [s.name for s in settings.outputs]
    output_names = [o.name for o in request.outputs] or known_outputs
    for name in output_names:
        if name not in known_outputs:
            raise InvalidArgument(f"output {name!r} is not an output of the model; {known_outputs}")
    return DecodedRequest(arrays, output_names, bool(raw))


def encode_response(
    request: pb.ModelInferRequest,
    settings: ModelSettings,
    version: int,
    decoded: DecodedRequest,
    outputs: list[np.ndarray],
) -> pb.ModelInferResponse:
    """The reply for `request`: the requested outputs, raw if the request was raw."""
    response = pb.ModelInferResponse(
        model_name=settings.name, model_version=str(version), id=request.id
    )
    by_name = {
        spec.name: (spec, array) for spec, array in zip(settings.outputs, outputs, strict=True)
    }
    use_raw = decoded.raw or any(
        by_name[name][0].datatype not in CONTENTS_FIELD for name in decoded.output_names
    )
    for name in decoded.output_names:
        spec, array = by_name[name]
        tensor = response.outputs.add(name=name, datatype=spec.datatype, shape=array.shape)
        if use_raw:
            response.raw_output_contents.append(to_raw(array))
        else:
            getattr(tensor.contents, CONTENTS_FIELD[spec.datatype]).extend(
                array.reshape(-1).tolist()
            )
    return response
