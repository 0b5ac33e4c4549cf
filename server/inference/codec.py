"""Typed conversion between KServe v2 messages and numpy arrays, with every check at the edge.

`decode_request` validates a ModelInferRequest against the model's config once
and returns arrays that view the request's raw bytes without copying (inputs in a
registered shared-memory region are copied out of it); `encode_response` builds the
reply, raw or typed as the request was, writing outputs asked for in shared memory
into their regions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from augserve.clients.datatypes import (
    CONTENTS_FIELD,
    WireFormatError,
    from_raw,
    numpy_dtype,
    to_raw,
)
from augserve.clients.proto.inference import grpc_service_pb2 as pb
from augserve.server.errors import InvalidArgument, PermissionDenied
from augserve.server.inference.classification import class_count, classify_output
from augserve.server.inference.image_inputs import pack_images
from augserve.server.inference.model_config import ModelSettings, TensorSpec
from augserve.server.inference.settings import InferenceSettings
from augserve.server.inference.shared_memory import (
    BYTE_SIZE,
    REGION,
    SystemSharedMemory,
    parameters_of,
)
from augserve.server.limits import over_limit

_INT64_MAX = (1 << 63) - 1


@dataclass(frozen=True)
class DecodedRequest:
    """A checked request: arrays in config input order, and the outputs to return.

    Attributes:
        inputs: the arrays, in the config's input order.
        output_names: the outputs to return, in the request's order.
        raw: whether outputs go back as raw bytes (the request used raw or shared memory).
        output_regions: output name -> its shared-memory parameters, for outputs to write
            into a region instead of into the reply.
        class_counts: output name -> k, for outputs asked for as their top-k classes
            (Triton's classification extension, `inference.classification`).
    """

    inputs: list[np.ndarray]
    output_names: list[str]
    raw: bool
    output_regions: dict[str, dict[str, int | str]] = field(default_factory=dict)
    class_counts: dict[str, int] = field(default_factory=dict)


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


def check_declared_shapes(request: pb.ModelInferRequest, limits: InferenceSettings) -> None:
    """Bound every input's declared shape by the server's limits, before anything is read.

    `decode_request` runs it first, so that nothing (typed contents, BYTES, a shared-memory
    copy) is allocated for a shape over the limits. Empty dimensions count as 1: a shape
    like [0, 2^62] holds nothing, but numpy cannot even describe it.

    Raises:
        InvalidArgument: a negative dimension, or a shape whose element count overflows int64.
        ResourceExhausted: more elements than `max_tensor_elements`, or more rows (the first
            dimension) than `max_request_rows`; the message names the limit.
    """
    for tensor in request.inputs:
        what, shape = f"input {tensor.name!r}", list(tensor.shape)
        if any(d < 0 for d in shape):
            raise InvalidArgument(f"{what}: negative dimension in {shape}")
        elements = math.prod(max(d, 1) for d in shape)
        if elements > _INT64_MAX:
            raise InvalidArgument(f"{what}: shape {shape} declares {elements} elements, "
                                  f"which overflows int64")
        if elements > limits.max_tensor_elements:
            raise over_limit(limits, "max_tensor_elements",
                             f"{what}: {elements} elements of shape {shape}")
        if shape and shape[0] > limits.max_request_rows:
            raise over_limit(limits, "max_request_rows", f"{what}: {shape[0]} rows")


def _typed_array(tensor: pb.ModelInferRequest.InferInputTensor, spec: TensorSpec) -> np.ndarray:
    field = CONTENTS_FIELD.get(spec.datatype)
    if field is None:
        raise InvalidArgument(f"input {spec.name!r}: {spec.datatype} travels only as raw contents")
    values = getattr(tensor.contents, field)
    count = math.prod(tensor.shape)
    if len(values) != count:
        raise InvalidArgument(
            f"input {spec.name!r}: {len(values)} values in contents.{field}, shape "
            f"{list(tensor.shape)} needs {count}"
        )
    dtype = numpy_dtype(spec.datatype)
    return np.array(values, dtype=dtype).reshape(tuple(tensor.shape))


def _shared_memory(memory: SystemSharedMemory | None, local: bool, what: str
                   ) -> SystemSharedMemory:
    if not local:
        raise PermissionDenied(f"{what}: shared memory is only for clients on the server's host")
    if memory is None:
        raise InvalidArgument(f"{what}: this server has no shared-memory regions")
    return memory


def _from_region(tensor: pb.ModelInferRequest.InferInputTensor, spec: TensorSpec,
                 parameters: dict[str, int | str], memory: SystemSharedMemory) -> np.ndarray:
    what = f"input {spec.name!r}"
    if spec.datatype == "BYTES":
        raise InvalidArgument(f"{what}: BYTES tensors cannot come through shared memory")
    shape = tuple(tensor.shape)
    needed = math.prod(shape) * np.dtype(numpy_dtype(spec.datatype)).itemsize
    # `read` checks the byte size against `needed`, so the view always fits.
    return from_raw(memory.read(what, parameters, needed), spec.datatype, shape)


def decode_request(request: pb.ModelInferRequest, settings: ModelSettings,
                   memory: SystemSharedMemory | None = None, local: bool = False,
                   limits: InferenceSettings | None = None) -> DecodedRequest:
    """Check `request` against `settings` and turn its tensors into numpy arrays.

    A model with `[preprocess]` takes images: they are checked here (format, header,
    pixel bound) and packed for the replica by `image_inputs.pack_images`.

    Args:
        request: the request.
        settings: the model's configuration.
        memory: the registered shared-memory regions, for tensors that live there.
        local: whether the client is on this host (only such clients may use them).
        limits: the server's inference limits (`check_declared_shapes`, first, and
            `max_image_pixels`); default ones if None.

    Raises:
        InvalidArgument: an unknown, missing or duplicate input; a wrong datatype,
            shape or byte length; raw and typed contents mixed; an unknown output or
            shared-memory region; a class_count the output cannot answer. The message
            names the input or output.
        PermissionDenied: shared memory named by a client on another host.
        ResourceExhausted: a shape over `max_tensor_elements` or `max_request_rows`, an
            image over `max_image_pixels`.

    """
    limits = limits or InferenceSettings()
    check_declared_shapes(request, limits)
    raw = list(request.raw_input_contents)
    in_regions = [parameters_of(tensor) for tensor in request.inputs]
    inline = sum(1 for parameters in in_regions if not parameters)
    if raw and len(raw) != inline:
        raise InvalidArgument(
            f"raw_input_contents has {len(raw)} entries for {inline} inputs not in shared memory"
        )
    raw_entries = iter(raw)
    by_name: dict[str, np.ndarray] = {}
    for tensor, parameters in zip(request.inputs, in_regions, strict=True):
        spec = settings.input_named(tensor.name)
        if spec is None:
            known = [s.name for s in settings.public_inputs]
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
        if parameters:
            region = _shared_memory(memory, local, f"input {tensor.name!r}")
            by_name[tensor.name] = _from_region(tensor, spec, parameters, region)
        elif raw:
            try:
                by_name[tensor.name] = from_raw(next(raw_entries), spec.datatype, shape)
            except WireFormatError as error:  # the client's bytes: named by the input
                raise InvalidArgument(f"input {tensor.name!r}: {error}") from None
        else:
            by_name[tensor.name] = _typed_array(tensor, spec)
    missing = [s.name for s in settings.public_inputs if s.name not in by_name]
    if missing:
        raise InvalidArgument(f"input {missing[0]!r} is missing from the request")
    arrays = [by_name[s.name] for s in settings.public_inputs]
    if settings.max_batch_size and len({a.shape[0] for a in arrays}) > 1:
        raise InvalidArgument("inputs disagree on the batch size (dimension 0)")
    if settings.preprocess is not None:  # images: checked here, decoded in the replica
        arrays = pack_images(arrays[0], settings.preprocess, request.parameters,
                             limits)

    known_outputs = [s.name for s in settings.outputs]
    output_names = [o.name for o in request.outputs] or known_outputs
    for name in output_names:
        if name not in known_outputs:
            raise InvalidArgument(f"output {name!r} is not an output of the model; {known_outputs}")
    output_regions = {}
    class_counts = {}
    output_specs = {spec.name: spec for spec in settings.outputs}
    for output in request.outputs:
        parameters = parameters_of(output)
        spec = output_specs[output.name]
        k = class_count(output, spec, bool(parameters))
        if k:
            class_counts[output.name] = k
        if parameters:
            region = _shared_memory(memory, local, f"output {output.name!r}")
            if spec.datatype == "BYTES":
                raise InvalidArgument(f"output {output.name!r}: BYTES tensors cannot go "
                                      f"through shared memory")
            region.span(f"output {output.name!r}", parameters, None)  # a known region
            output_regions[output.name] = parameters
    return DecodedRequest(arrays, output_names, bool(raw) or any(in_regions), output_regions,
                          class_counts)


def encode_response(
    request: pb.ModelInferRequest,
    settings: ModelSettings,
    version: int,
    decoded: DecodedRequest,
    outputs: list[np.ndarray],
    memory: SystemSharedMemory | None = None,
) -> pb.ModelInferResponse:
    """The reply for `request`: the requested outputs, raw if the request was raw.

    An output asked for in shared memory is written into its region; the reply names
    the region in the output's parameters and, when raw, holds an empty entry for it,
    so that the raw entries stay in output order. An output with a class count answers
    as its top-k "score:index:label" strings (BYTES).

    Raises:
        InvalidArgument: an output does not fit its region.
    """
    response = pb.ModelInferResponse(
        model_name=settings.name, model_version=str(version), id=request.id
    )
    by_name = {
        spec.name: (spec.datatype, array)
        for spec, array in zip(settings.outputs, outputs, strict=True)
    }
    for spec in settings.outputs:
        k = decoded.class_counts.get(spec.name)
        if k:
            labels = settings.labels.get(spec.name, ())
            classes = classify_output(by_name[spec.name][1], spec, k, labels,
                                      bool(settings.max_batch_size))
            by_name[spec.name] = ("BYTES", classes)
    use_raw = decoded.raw or any(
        by_name[name][0] not in CONTENTS_FIELD for name in decoded.output_names
    )
    for name in decoded.output_names:
        datatype, array = by_name[name]
        tensor = response.outputs.add(name=name, datatype=datatype, shape=array.shape)
        parameters = decoded.output_regions.get(name)
        if parameters:
            memory.write(f"output {name!r}", parameters, array)
            tensor.parameters[REGION].string_param = str(parameters[REGION])
            tensor.parameters[BYTE_SIZE].int64_param = array.nbytes
            if use_raw:
                response.raw_output_contents.append(b"")
            continue
        if use_raw:
            response.raw_output_contents.append(to_raw(array))
        else:
            getattr(tensor.contents, CONTENTS_FIELD[datatype]).extend(
                array.reshape(-1).tolist()
            )
    return response
