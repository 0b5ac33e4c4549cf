"""Settings of the inference service (the `[inference]` table of the server config)."""

from __future__ import annotations

import dataclasses

from augserve.server.images import MAX_IMAGE_PIXELS
from augserve.server.options import option


@dataclasses.dataclass(frozen=True)
class InferenceSettings:
    """Server-wide limits of model serving (a model's own knobs live in its config.toml)."""

    stream_window: int = option(
        256, flag="--inference-stream-window",
        help="requests one ModelStreamInfer stream may have in flight; beyond it the server "
             "stops reading the stream until an answer goes out")
    max_replica_deaths: int = option(
        2, flag="--inference-max-replica-deaths",
        help="replica deaths one request may ride through (its batch is requeued on a fresh "
             "replica) before it fails with UNAVAILABLE, so an input that crashes replicas "
             "cannot take the model down")
    no_replica_wait_s: float = option(
        10.0, flag="--inference-no-replica-wait-s",
        help="seconds requests wait for a restart while every replica of their model is "
             "down (the batches of the dead ones requeued, newcomers queued); past it they, "
             "and those that come until a replica is back, get UNAVAILABLE at once, naming "
             "the model and the replicas lost, rather than wait out their deadline")
    warm_spares: int = option(
        0, flag="--inference-warm-spares",
        help="replicas per model version kept started and warmed up out of rotation; when "
             "a replica dies one takes its place at once and another starts in the "
             "background, so a death costs no restart (a new process importing torch, "
             "15-50 s on a loaded host). Each spare holds what a replica holds (a process, "
             "the model, its num_cpus and GPU), hence 0 by default")
    max_tensor_elements: int = option(
        1 << 27, flag="--inference-max-tensor-elements", shown="134217728 (2^27)",
        help="elements one input tensor may declare (its shape's product, empty dimensions "
             "counted as 1), checked on the declared shape before anything is allocated; "
             "one over it is RESOURCE_EXHAUSTED")
    max_request_rows: int = option(
        1 << 20, flag="--inference-max-request-rows", shown="1048576 (2^20)",
        help="rows (the first dimension: the batch, for a batching model) one input tensor "
             "may declare; more is RESOURCE_EXHAUSTED (a batch over the model's own "
             "max_batch_size stays INVALID_ARGUMENT, as in Triton)")
    replica_max_in_flight: int = option(
        1, flag="--inference-replica-max-in-flight",
        help="batches sent to one replica before it counts as busy")
    max_image_pixels: int = option(
        MAX_IMAGE_PIXELS, flag="--inference-max-image-pixels",
        help="pixels one image sent to a model with [preprocess] may have (as its header "
             "declares, checked before it is decoded); more is RESOURCE_EXHAUSTED")

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            least = 0 if f.name in ("no_replica_wait_s", "warm_spares") else 1
            if getattr(self, f.name) < least:
                raise ValueError(f"inference settings: {f.name} must be >= {least}")
