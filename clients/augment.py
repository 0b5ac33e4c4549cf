"""`AugmentClient`: calls augserve's Augment RPC with numpy arrays (no torch, no Ray).

Example:
    >>> with AugmentClient("localhost:8001") as client:  # doctest: +SKIP
    ...     reply = client.augment(images, pipeline_id="imagenet_train", seed=7,
    ...                            return_params=True)
    ...     again = client.augment(images, pipeline_id="imagenet_train", params=reply.params)
    >>> reply.images.shape  # doctest: +SKIP
    (8, 3, 224, 224)
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any

import grpc
import numpy as np
from google.protobuf import json_format

from augserve.clients.auth import with_token
from augserve.clients.channel import open_channel
from augserve.clients.proto import POOL
from augserve.clients.proto.augserve.v1 import augment_pb2 as pb
from augserve.clients.proto.augserve.v1 import augment_pb2_grpc as pb_grpc
from augserve.clients.tls import TlsSettings

_DTYPES = {"uint8": np.uint8, "float32": np.float32, "float16": np.float16}


def decode_image(message: pb.Image) -> np.ndarray:
    """An `Image` message as numpy; bfloat16 is widened (exactly) to float32."""
    if message.dtype == "bfloat16":
        bits = np.frombuffer(message.data, np.uint16).astype(np.uint32) << 16
        return bits.view(np.float32).reshape(tuple(message.shape))
    dtype = _DTYPES[message.dtype or "uint8"]
    return np.frombuffer(message.data, dtype).reshape(tuple(message.shape))


def encode_image(image: np.ndarray) -> pb.Image:
    """A uint8 [H, W, 3] array as an `Image` message."""
    image = np.ascontiguousarray(image)
    return pb.Image(data=image.tobytes(), shape=list(image.shape), dtype=image.dtype.name)


def pipeline_message(pipeline: pb.Pipeline | str | Mapping[str, Any]) -> pb.Pipeline:
    """A `Pipeline` message from a message, its JSON text or a dict."""
    if isinstance(pipeline, pb.Pipeline):
        return pipeline
    text = pipeline if isinstance(pipeline, str) else json.dumps(pipeline)
    return json_format.Parse(text, pb.Pipeline(), descriptor_pool=POOL)


@dataclasses.dataclass(frozen=True)
class AugmentReply:
    """The decoded reply.

    Attributes:
        images: (n, ...) array when all outputs share a shape, else a list of arrays.
        params: one `SampleParams` per image when asked for; pass them back to replay.
        targets: one `Targets` message per image when targets were sent.
    """

    images: np.ndarray | list[np.ndarray]
    params: list[pb.SampleParams]
    targets: list[pb.Targets]


class AugmentClient:
    """A blocking client of `augserve.v1.AugmentService`."""

    def __init__(self, target: str | grpc.Channel, max_message_bytes: int = 256 << 20,
                 tls: TlsSettings | None = None, token: str | None = None) -> None:
        """Connect to `target` ("host:port"), over TLS with `tls`; or reuse an open channel.

        `token`: a bearer token sent with every call (servers run with `--auth-tokens`).
        """
        if isinstance(target, str):
            options = [("grpc.max_send_message_length", max_message_bytes),
                       ("grpc.max_receive_message_length", max_message_bytes)]
            self._channel = open_channel(target, tls, options)
            self._owned = True
        else:
            self._channel, self._owned = target, False
        self._stub_channel = with_token(self._channel, token)
        self._stub = pb_grpc.AugmentServiceStub(self._stub_channel)

    def augment(
        self,
        images: np.ndarray | Sequence[np.ndarray],
        pipeline: pb.Pipeline | str | Mapping[str, Any] | None = None,
        pipeline_id: str | None = None,
        seed: int = 0,
        epoch: int = 0,
        sample_indices: Sequence[int] | None = None,
        return_params: bool = False,
        params: Sequence[pb.SampleParams] | None = None,
        timeout: float | None = None,
    ) -> AugmentReply:
        """Augment uint8 [H, W, 3] images with a pipeline (inline or registered id).

        Args:
            images: an (n, H, W, 3) uint8 array or a list of [H, W, 3] arrays.
            pipeline: the pipeline as a message, JSON text or dict.
            pipeline_id: or the id of a pipeline registered on the server.
            seed: the random stream, in [0, 2**64).
            epoch: the epoch, part of every random key.
            sample_indices: each image's dataset index (default 0..n-1).
            return_params: also return the per-sample params.
            params: replay these params (from an earlier reply).
            timeout: seconds before the call fails with DEADLINE_EXCEEDED.

        Returns:
            An `AugmentReply`.

        Raises:
            ValueError: neither or both of `pipeline` and `pipeline_id`.
            grpc.RpcError: the server refused the request (e.g. INVALID_ARGUMENT).
        """
        if (pipeline is None) == (pipeline_id is None):
            raise ValueError("give exactly one of pipeline and pipeline_id")
        request = pb.AugmentRequest(images=[encode_image(im) for im in images], seed=seed,
                                    epoch=epoch, return_params=return_params)
        if pipeline_id is not None:
            request.pipeline_id = pipeline_id
        else:
            request.pipeline.CopyFrom(pipeline_message(pipeline))  # type: ignore[arg-type]
        if sample_indices is not None:
            request.sample_indices.extend(int(i) for i in sample_indices)
        if params is not None:
            request.params.extend(params)
        response = self._stub.Augment(request, timeout=timeout)
        outs = [decode_image(m) for m in response.images]
        stacked: np.ndarray | list[np.ndarray] = outs
        if outs and len({o.shape for o in outs}) == 1:
            stacked = np.stack(outs)
        return AugmentReply(stacked, list(response.params), list(response.targets))

    def close(self) -> None:
        """Close the channel if this client opened it."""
        if self._owned:
            self._channel.close()

    def __enter__(self) -> AugmentClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
