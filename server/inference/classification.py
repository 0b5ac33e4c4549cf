"""Triton's classification extension: an output asked for as its top-k classes.

A requested output whose `parameters["classification"]` is an int64 k (what tritonclient's
`InferRequestedOutput(name, class_count=k)` sends) answers as a BYTES tensor of shape
[batch, k] (or [k] for a model without batching) instead of its scores. Each element is
Triton's string `"score:index:label"`: the score printed as C's `%f` (six decimals) for a
float output and as an integer for an integer one, the class index, and the class's line
in the output's `label_filename` file; `":label"` is left out when the output has no label
file or the file has no line for that class. Classes are ordered by score, highest first;
ties go to the lower index (Triton leaves their order unspecified) and NaN sorts last.

Like Triton, a k above the number of classes is clamped to it. A k below 1, a BYTES output,
an output of more than one dimension (besides the batch) and an output in shared memory are
refused with INVALID_ARGUMENT naming the output.

Example:
    >>> top_k(np.array([[0.1, 0.7, 0.2]], np.float32), 2)[0].tolist()
    [[1, 2]]
    >>> format_classes(np.array([[0.1, 0.7, 0.2]], np.float32), 2, ("a", "b")).tolist()
    [[b'0.700000:1:b', b'0.200000:2']]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from augserve.clients.proto.inference import grpc_service_pb2 as pb
from augserve.server.errors import InvalidArgument
from augserve.server.inference.model_config import TensorSpec

CLASSIFICATION = "classification"


def class_count(output: pb.ModelInferRequest.InferRequestedOutputTensor, spec: TensorSpec,
                in_shared_memory: bool) -> int:
    """The k an output is asked for with, or 0 when it is asked for as its tensor.

    Raises:
        InvalidArgument: the parameter is not an integer or is below 1; the output is
            BYTES, has more than one non-batch dimension, or goes to shared memory.
    """
    if CLASSIFICATION not in output.parameters:
        return 0
    what = f"output {output.name!r}"
    parameter = output.parameters[CLASSIFICATION]
    kind = parameter.WhichOneof("parameter_choice")
    if kind not in ("int64_param", "uint64_param"):
        raise InvalidArgument(f"{what}: parameter 'classification' must be an integer class "
                              f"count, got {kind or 'no value'}")
    k = getattr(parameter, kind)
    if k < 1:
        raise InvalidArgument(f"{what}: class_count must be >= 1, got {k}")
    if spec.datatype == "BYTES":
        raise InvalidArgument(f"{what}: class_count needs numeric scores; the output is BYTES")
    if len(spec.dims) != 1:
        raise InvalidArgument(f"{what}: class_count needs one dimension of classes besides "
                              f"the batch; the output's dims are {list(spec.dims)}")
    if in_shared_memory:
        raise InvalidArgument(f"{what}: a classification output cannot go to shared memory")
    return int(k)


def _order_keys(scores: np.ndarray) -> np.ndarray:
    """Scores as float64 with NaN lowest, so that sorting descending puts NaN last."""
    keys = scores.astype(np.float64)
    keys[np.isnan(keys)] = -np.inf
    return keys


def top_k_reference(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Plain reference of `top_k`: a full stable sort of every row."""
    keys = _order_keys(scores)
    order = np.argsort(-keys, axis=1, kind="stable")[:, :min(k, scores.shape[1])]
    return order, np.take_along_axis(scores, order, axis=1)


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best classes of each row of `scores` (rows, classes): (indices, scores).

    Highest score first, ties to the lower index, NaN last; k is clamped to the number of
    classes. Same result as `top_k_reference`, without sorting whole rows when k is small.
    """
    rows, classes = scores.shape
    k = min(k, classes)
    if k == classes or classes <= 64:
        return top_k_reference(scores, k)
    keys = _order_keys(scores)
    kth = -np.partition(-keys, k - 1, axis=1)[:, k - 1 : k]
    indices = []
    for row in range(rows):
        # Every class that ties the k-th score is a candidate, so that ties resolve by
        # index exactly as the full stable sort does.
        candidates = np.flatnonzero(keys[row] >= kth[row])
        best = candidates[np.argsort(-keys[row, candidates], kind="stable")[:k]]
        indices.append(best)
    order = np.stack(indices)
    return order, np.take_along_axis(scores, order, axis=1)


def _score_text(value: np.generic) -> str:
    # Triton prints with std::to_string: "%f" for floats, the integer for integer types.
    return f"{value:f}" if isinstance(value, np.floating) else str(int(value))


def format_classes(scores: np.ndarray, k: int, labels: Sequence[str] = ()) -> np.ndarray:
    """Scores (rows, classes) as the BYTES array of "score:index[:label]" (rows, min(k, C)).

    `labels[i]` names class i; classes past the end of `labels` get no label.
    """
    order, best = top_k(scores, k)
    out = np.empty(order.shape, dtype=np.object_)
    for row in range(order.shape[0]):
        for rank in range(order.shape[1]):
            index = int(order[row, rank])
            text = f"{_score_text(best[row, rank])}:{index}"
            if index < len(labels):
                text += f":{labels[index]}"
            out[row, rank] = text.encode()
    return out


def bf16_as_float32(words: np.ndarray) -> np.ndarray:
    """BF16 outputs (uint16 words, the upper half of a float32) as float32 values."""
    return (words.astype(np.uint32) << 16).view(np.float32)


def classify_output(array: np.ndarray, spec: TensorSpec, k: int, labels: Sequence[str],
                    batched: bool) -> np.ndarray:
    """A model output's array as its classification tensor: [batch, k], or [k] unbatched."""
    scores = bf16_as_float32(array) if spec.datatype == "BF16" else array
    rows = scores.reshape(-1 if batched else 1, scores.shape[-1])
    result = format_classes(rows, k, labels)
    return result if batched else result[0]
