"""Settings of the augment service (the `[augment]` table of the server config)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from augserve.server.actors import check_placement
from augserve.server.options import option


@dataclasses.dataclass(frozen=True)
class AugmentSettings:
    """Limits and pool shape of the Augment RPC; each field's `help` says what it means."""

    max_pixels: int = option(
        4096 * 4096, flag="--augment-max-pixels", shown="16777216 (4096 x 4096)",
        help="the most pixels (H * W) one image of an Augment request may have")
    max_images: int = option(
        1024, flag="--augment-max-images", help="the most images one Augment request may carry")
    max_request_pixels: int = option(
        64 * 1024 * 1024, flag="--augment-max-request-pixels", shown="67108864 (64 Mi)",
        help="the most pixels over all images of one Augment request")
    max_ops: int = option(
        64, flag="--augment-max-ops",
        help="the most ops a pipeline (inline in a request, or registered) may have; it "
             "bounds the Augment and StreamBatches RPCs alike")
    max_output_pixels: int = option(
        4096 * 4096, flag="--augment-max-output-pixels", shown="16777216 (4096 x 4096)",
        help="the most pixels (H * W) one output image may have, computed from the "
             "pipeline before any work is sent to an actor")
    max_output_bytes: int = option(
        64 << 20, flag="--augment-max-output-bytes", shown="67108864 (64 MiB)",
        help="the most bytes one output image may have (H * W * 3 * the output dtype's size)")
    max_request_output_pixels: int = option(
        64 * 1024 * 1024, flag="--augment-max-request-output-pixels", shown="67108864 (64 Mi)",
        help="the most output pixels over all images of one Augment request")
    max_request_output_bytes: int = option(
        256 << 20, flag="--augment-max-request-output-bytes", shown="268435456 (256 MiB)",
        help="the most output bytes over all images of one Augment request (the response is "
             "also bounded by `max_message_bytes`)")
    pool_size: int = option(
        2, flag="--augment-pool-size",
        help="Ray actors in the augment pool; 0 runs in-process (a thread), which tests "
             "and tiny deployments may want")
    actor_num_cpus: float = option(
        1.0, flag="--augment-actor-num-cpus",
        help="CPUs each augment actor reserves (each runs its kernels on one thread)")
    actor_num_gpus: float = option(
        0.0, flag="--augment-actor-num-gpus",
        help="GPUs (or a fraction) each augment actor reserves; Ray hides GPUs from actors "
             "that reserve none, so set it (e.g. 0.25) for kornia on CUDA")
    actor_placement: str = option(
        "spread", flag="--augment-actor-placement",
        help='where the augment actors run on a Ray cluster: "spread" over the nodes, '
             '"pack" (Ray\'s default: this node first) or the name of a custom resource '
             "that the chosen nodes advertise")
    chunk_size: int = option(
        64, flag="--augment-chunk-size",
        help="images per actor task; a request is cut into chunks that run in parallel")
    backend: str = option(
        "auto", flag="--augment-backend", choices=("auto", "fast", "kornia"),
        help='"auto" (kornia on CUDA when present, else the CPU fast path), "fast" or '
             '"kornia"')
    pipelines: Mapping[str, str] = option(
        default_factory=dict,
        help='registered pipelines, id -> JSON spec (`[augment.pipelines]`); '
             '"imagenet_train" is built in')

    def __post_init__(self) -> None:
        for name in ("max_pixels", "max_images", "max_request_pixels", "max_ops",
                     "max_output_pixels", "max_output_bytes", "max_request_output_pixels",
                     "max_request_output_bytes", "chunk_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"augment settings: {name} must be >= 1")
        if self.actor_num_gpus < 0 or self.actor_num_cpus < 0:
            raise ValueError("augment settings: actor_num_cpus and actor_num_gpus must be >= 0")
        if self.pool_size < 0:
            raise ValueError("augment settings: pool_size must be >= 0")
        check_placement(self.actor_placement, "augment settings: actor_placement")
        if self.backend not in ("auto", "fast", "kornia"):
            raise ValueError("augment settings: backend must be auto, fast or kornia")
