"""`InferClient` and `AsyncInferClient`: small typed KServe v2 clients, numpy in and out.

They speak the same protocol as `tritonclient[grpc]` and import neither torch
nor Ray. Tensors travel as raw little-endian bytes. Failures raise
`grpc.RpcError`; `error.code()` is the status (NOT_FOUND, INVALID_ARGUMENT, ...).

Example:
    >>> with InferClient("localhost:8001") as client:           # doctest: +SKIP
    ...     logits = client.infer("digits", {"input": images})["logits"]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType

import numpy as np

from augserve.clients.auth import aio_interceptors, with_token
from augserve.clients.channel import open_aio_channel, open_channel
from augserve.clients.classify import (
    Classification,
    Image,
    images_tensor,
    parse_classes,
    pick_names,
    request_classes,
)
from augserve.clients.datatypes import CONTENTS_FIELD, datatype_of, from_raw, numpy_dtype, to_raw
from augserve.clients.proto.inference import grpc_service_pb2 as pb
from augserve.clients.proto.inference import grpc_service_pb2_grpc as pb_grpc
from augserve.clients.tls import TlsSettings

#: A KServe request parameter's value.
Parameter = bool | int | str

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class TensorInfo:
    """A model input or output: name, KServe datatype, and shape (-1 = variable)."""

    name: str
    datatype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class ModelInfo:
    """What ModelMetadata reports about a model."""

    name: str
    versions: tuple[str, ...]
    platform: str
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]


def build_infer_request(
    model: str,
    inputs: Mapping[str, np.ndarray],
    outputs: Sequence[str] | None = None,
    version: str = "",
    request_id: str = "",
    parameters: Mapping[str, Parameter] | None = None,
) -> pb.ModelInferRequest:
    """A ModelInferRequest carrying `inputs` as raw contents.

    `parameters` are the request's KServe parameters, e.g. `{"tta": False}` (a bool, int
    or str each, sent as bool_param, int64_param or string_param).
    """
    request = pb.ModelInferRequest(model_name=model, model_version=version, id=request_id)
    for name, array in inputs.items():
        request.inputs.add(name=name, datatype=datatype_of(array), shape=array.shape)
        request.raw_input_contents.append(to_raw(array))
    for name in outputs or ():
        request.outputs.add(name=name)
    _set_parameters(request, parameters or {})
    return request


def _set_parameters(request: pb.ModelInferRequest, parameters: Mapping[str, Parameter]) -> None:
    """Set the request's KServe parameters from Python values (bool, int or str)."""
    for key, value in parameters.items():
        if isinstance(value, bool):
            request.parameters[key].bool_param = value
        elif isinstance(value, int):
            request.parameters[key].int64_param = value
        elif isinstance(value, str):
            request.parameters[key].string_param = value
        else:
            raise TypeError(f"parameter {key!r}: expected bool, int or str, got {value!r}")


def parse_infer_response(response: pb.ModelInferResponse) -> dict[str, np.ndarray]:
    """The outputs of a ModelInferResponse as numpy arrays (raw or typed contents)."""
    result: dict[str, np.ndarray] = {}
    for index, tensor in enumerate(response.outputs):
        shape = tuple(tensor.shape)
        if response.raw_output_contents:
            result[tensor.name] = from_raw(
                response.raw_output_contents[index], tensor.datatype, shape
            )
        else:
            values = getattr(tensor.contents, CONTENTS_FIELD[tensor.datatype])
            result[tensor.name] = np.array(values, numpy_dtype(tensor.datatype)).reshape(shape)
    return result


def _model_info(response: pb.ModelMetadataResponse) -> ModelInfo:
    def tensors(items: Sequence[pb.ModelMetadataResponse.TensorMetadata]) -> tuple[TensorInfo, ...]:
        return tuple(TensorInfo(t.name, t.datatype, tuple(t.shape)) for t in items)

    return ModelInfo(
        response.name,
        tuple(response.versions),
        response.platform,
        tensors(response.inputs),
        tensors(response.outputs),
    )


def classify_names(info: ModelInfo, input_name: str | None, output_name: str | None
                   ) -> tuple[str, str]:
    """`classify`'s input and output: those given, else the model's BYTES input and output."""
    return pick_names([(t.name, t.datatype) for t in info.inputs],
                      [t.name for t in info.outputs], input_name, output_name)


def build_classify_request(model: str, images: Image | Iterable[Image], top_k: int,
                           input_name: str, output_name: str, version: str = "",
                           parameters: Mapping[str, Parameter] | None = None,
                           ) -> pb.ModelInferRequest:
    """The request of `classify`: the images as BYTES [n, 1], `output_name` as top-k classes."""
    request = build_infer_request(model, {input_name: images_tensor(images)}, version=version,
                                  parameters=parameters)
    request_classes(request, output_name, top_k)
    return request


def _channel_options(max_message_bytes: int) -> list[tuple[str, int]]:
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
    ]


class InferClient:
    """A blocking KServe v2 client.

    Args:
        url: "host:port" of the server.
        timeout: default seconds per call (None: no deadline).
        max_message_bytes: largest message sent or received.
        tls: connect over TLS with these settings (None: plaintext).
        token: a bearer token sent with every call (servers run with `--auth-tokens`).
    """

    def __init__(
        self,
        url: str = "localhost:8001",
        timeout: float | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        tls: TlsSettings | None = None,
        token: str | None = None,
    ) -> None:
        channel = open_channel(url, tls, _channel_options(max_message_bytes))
        self._channel = with_token(channel, token)
        self._stub = pb_grpc.GRPCInferenceServiceStub(self._channel)
        self.timeout = timeout

    def __enter__(self) -> InferClient:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def is_server_live(self) -> bool:
        """Whether the server answers."""
        return self._stub.ServerLive(pb.ServerLiveRequest(), timeout=self.timeout).live

    def is_server_ready(self) -> bool:
        """Whether the server accepts inference requests."""
        return self._stub.ServerReady(pb.ServerReadyRequest(), timeout=self.timeout).ready

    def is_model_ready(self, model: str, version: str = "") -> bool:
        """Whether `model` (at `version`, "" = newest) is loaded and ready."""
        request = pb.ModelReadyRequest(name=model, version=version)
        return self._stub.ModelReady(request, timeout=self.timeout).ready

    def model_metadata(self, model: str, version: str = "") -> ModelInfo:
        """Versions, platform, inputs and outputs of a loaded model."""
        request = pb.ModelMetadataRequest(name=model, version=version)
        return _model_info(self._stub.ModelMetadata(request, timeout=self.timeout))

    def infer(
        self,
        model: str,
        inputs: Mapping[str, np.ndarray],
        outputs: Sequence[str] | None = None,
        version: str = "",
        timeout: float | None = None,
    ) -> dict[str, np.ndarray]:
        """Run `model` on `inputs` (name -> array); returns output name -> array."""
        request = build_infer_request(model, inputs, outputs, version)
        return parse_infer_response(self.infer_request(request, timeout))

    def infer_request(self, request: pb.ModelInferRequest, timeout: float | None = None
                      ) -> pb.ModelInferResponse:
        """Send a prebuilt request (with parameters, shared memory, ...); the raw response."""
        return self._stub.ModelInfer(request, timeout=timeout or self.timeout)

    def classify(
        self,
        model: str,
        images_or_paths: Image | Iterable[Image],
        top_k: int = 1,
        input_name: str | None = None,
        output_name: str | None = None,
        version: str = "",
        timeout: float | None = None,
        parameters: Mapping[str, Parameter] | None = None,
    ) -> list[list[Classification]]:
        """The `top_k` classes of each image, best first, from a model that takes images.

        Args:
            model: a model whose config preprocesses encoded images on the server.
            images_or_paths: encoded bytes, file paths, or uint8 RGB arrays (HWC or HW,
                sent as PNG); one image, a sequence, or an NHWC batch array.
            top_k: classes per image (the server clamps it to the number of classes).
            input_name: the input that takes the images; None: the model's BYTES input.
            output_name: the scores to classify by; None: the model's only output.
            version: the model version ("" = newest).
            timeout: seconds for the call (None: the client's default).
            parameters: the request's parameters, e.g. `{"tta": False}` or
                `{"tta_views": 1}` for a model with test-time augmentation.

        Returns:
            per image, a list of `Classification(label, score, index)`.

        Example:
            >>> client.classify("faces", ["me.jpg"], top_k=2)          # doctest: +SKIP
            [[Classification(label='face', score=0.97, index=1), ...]]
        """
        if input_name is None or output_name is None:
            names = classify_names(self.model_metadata(model, version), input_name, output_name)
            input_name, output_name = names
        request = build_classify_request(model, images_or_paths, top_k, input_name,
                                         output_name, version, parameters)
        response = self._stub.ModelInfer(request, timeout=timeout or self.timeout)
        return parse_classes(parse_infer_response(response)[output_name])

    def load_model(self, model: str) -> None:
        """Load or reload `model` from the server's repository; returns once it is ready."""
        self._stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name=model))

    def unload_model(self, model: str) -> None:
        """Unload `model` after its queue drains."""
        self._stub.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name=model))

    def statistics(self, model: str = "", version: str = "") -> pb.ModelStatisticsResponse:
        """Cumulative statistics of `model` ("" = every loaded model)."""
        request = pb.ModelStatisticsRequest(name=model, version=version)
        return self._stub.ModelStatistics(request, timeout=self.timeout)


class AsyncInferClient:
    """The asyncio twin of `InferClient` for inference, built on grpc.aio.

    Args:
        url: "host:port" of the server.
        max_message_bytes: largest message sent or received.
        tls: connect over TLS with these settings (None: plaintext).
        token: a bearer token sent with every call (servers run with `--auth-tokens`).
    """

    def __init__(
        self, url: str = "localhost:8001", max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        tls: TlsSettings | None = None, token: str | None = None,
    ) -> None:
        self._channel = open_aio_channel(url, tls, _channel_options(max_message_bytes),
                                         interceptors=aio_interceptors(token))
        self._stub = pb_grpc.GRPCInferenceServiceStub(self._channel)

    async def __aenter__(self) -> AsyncInferClient:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channel."""
        await self._channel.close()

    async def infer(
        self,
        model: str,
        inputs: Mapping[str, np.ndarray],
        outputs: Sequence[str] | None = None,
        version: str = "",
        timeout: float | None = None,
    ) -> dict[str, np.ndarray]:
        """Run `model` on `inputs`; returns output name -> array."""
        request = build_infer_request(model, inputs, outputs, version)
        return parse_infer_response(await self._stub.ModelInfer(request, timeout=timeout))

    async def model_metadata(self, model: str, version: str = "") -> ModelInfo:
        """Versions, platform, inputs and outputs of a loaded model."""
        request = pb.ModelMetadataRequest(name=model, version=version)
        return _model_info(await self._stub.ModelMetadata(request))

    async def classify(
        self,
        model: str,
        images_or_paths: Image | Iterable[Image],
        top_k: int = 1,
        input_name: str | None = None,
        output_name: str | None = None,
        version: str = "",
        timeout: float | None = None,
        parameters: Mapping[str, Parameter] | None = None,
    ) -> list[list[Classification]]:
        """The `top_k` classes of each image, best first (see `InferClient.classify`)."""
        if input_name is None or output_name is None:
            info = await self.model_metadata(model, version)
            input_name, output_name = classify_names(info, input_name, output_name)
        request = build_classify_request(model, images_or_paths, top_k, input_name,
                                         output_name, version, parameters)
        response = await self._stub.ModelInfer(request, timeout=timeout)
        return parse_classes(parse_infer_response(response)[output_name])

    async def infer_request(
        self, request: pb.ModelInferRequest, timeout: float | None = None
    ) -> pb.ModelInferResponse:
        """Send a prebuilt request (load generators build it once and resend it)."""
        return await self._stub.ModelInfer(request, timeout=timeout)
