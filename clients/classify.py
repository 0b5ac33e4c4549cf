"""Images in, labels out: the request and reply of `InferClient.classify`.

`classify` sends encoded images (one BYTES tensor [n, 1]) to a model whose config
preprocesses them on the server, and asks for the output's top-k classes through Triton's
classification extension (the output's `parameters["classification"]`, what tritonclient's
`InferRequestedOutput(name, class_count=k)` sends). The server answers each image with k
strings "score:index:label", which `parse_classes` turns into `Classification`s.

Images may be encoded bytes (JPEG, PNG, WebP), paths of such files (read as they are), or
uint8 RGB arrays, HWC or HW (grey), which are encoded to PNG here (lossless).

Example:
    >>> parse_classes(np.array([[b"0.980000:1:face", b"0.020000:0"]], dtype=object))[0][1]
    Classification(label='', score=0.02, index=0)
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from augserve.clients.proto.inference import grpc_service_pb2 as pb

CLASSIFICATION = "classification"

Image = bytes | bytearray | memoryview | str | os.PathLike | np.ndarray


@dataclass(frozen=True)
class Classification:
    """One of an image's top-k classes: its label ("" if the model has none), score, index."""

    label: str
    score: float
    index: int


def _encode_array(image: np.ndarray) -> bytes:
    import cv2  # only arrays need it: bytes and paths travel as they are

    if image.dtype != np.uint8 or image.ndim not in (2, 3) or (
            image.ndim == 3 and image.shape[2] not in (1, 3)):
        raise ValueError(f"an image array must be uint8 HW or HWC with 1 or 3 channels, got "
                         f"{image.dtype} {list(image.shape)}")
    pixels = image if image.ndim == 2 or image.shape[2] == 1 else cv2.cvtColor(
        image, cv2.COLOR_RGB2BGR)
    ok, data = cv2.imencode(".png", pixels)
    if not ok:
        raise ValueError(f"cv2 could not encode an image of shape {list(image.shape)} as PNG")
    return data.tobytes()


def encode_image(image: Image) -> bytes:
    """One image as the bytes that travel: encoded bytes as given, a file's bytes, or a PNG.

    Raises:
        ValueError: an array that is not uint8 HW or HWC (1 or 3 channels).
        OSError: a path that cannot be read.
        TypeError: anything else.
    """
    if isinstance(image, (bytes, bytearray, memoryview)):
        return bytes(image)
    if isinstance(image, (str, os.PathLike)):
        return Path(image).read_bytes()
    if isinstance(image, np.ndarray):
        return _encode_array(image)
    raise TypeError(f"an image is encoded bytes, a path or a uint8 array, not "
                    f"{type(image).__name__}")


def _as_list(images: Image | Iterable[Image]) -> list[Image]:
    if isinstance(images, (bytes, bytearray, memoryview, str, os.PathLike)):
        return [images]
    if isinstance(images, np.ndarray):
        return list(images) if images.ndim == 4 else [images]  # NHWC: a batch of images
    return list(images)


def images_tensor(images: Image | Iterable[Image]) -> np.ndarray:
    """The BYTES tensor [n, 1] of `images`: one image, a sequence, or an NHWC uint8 batch.

    Raises:
        ValueError: no images, or an array that cannot be encoded.
    """
    encoded = [encode_image(image) for image in _as_list(images)]
    if not encoded:
        raise ValueError("classify needs at least one image")
    tensor = np.empty((len(encoded), 1), dtype=np.object_)
    tensor[:, 0] = encoded
    return tensor


def request_classes(request: pb.ModelInferRequest, output: str, top_k: int) -> None:
    """Ask `request` for `output` as its `top_k` classes (Triton's classification extension).

    Raises:
        ValueError: `top_k` below 1.
    """
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    requested = request.outputs.add(name=output)
    requested.parameters[CLASSIFICATION].int64_param = top_k


def _parse_one(entry: bytes | str) -> Classification:
    text = entry.decode() if isinstance(entry, bytes) else entry
    score, index, *label = text.split(":", 2)  # a label may itself hold ':'
    return Classification(label[0] if label else "", float(score), int(index))


def parse_classes(classes: np.ndarray) -> list[list[Classification]]:
    """A classification output ([n, k] "score:index[:label]" strings) per image, best first.

    Raises:
        ValueError: an entry that is not "score:index[:label]".
    """
    rows = classes.reshape(1, -1) if classes.ndim == 1 else classes
    return [[_parse_one(entry) for entry in row] for row in rows]


def pick_names(inputs: Sequence[tuple[str, str]], outputs: Sequence[str],
               input_name: str | None, output_name: str | None) -> tuple[str, str]:
    """The input and output to classify with, from the model's metadata when not given.

    `inputs` are (name, datatype) pairs: the model's one BYTES input is taken; `outputs`
    must hold one output, or `output_name` must be given.

    Raises:
        ValueError: the choice is ambiguous or the model has no BYTES input.
    """
    if input_name is None:
        encoded = [name for name, datatype in inputs if datatype == "BYTES"]
        if len(encoded) != 1:
            raise ValueError(f"the model's inputs {[name for name, _ in inputs]} hold "
                             f"{len(encoded)} BYTES inputs; pass input_name")
        input_name = encoded[0]
    if output_name is None:
        if len(outputs) != 1:
            raise ValueError(f"the model has outputs {list(outputs)}; pass output_name")
        output_name = outputs[0]
    return input_name, output_name
