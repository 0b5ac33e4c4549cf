"""Settings of the stream service (the `[stream]` table of the server config)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from augserve.clients.ring import MAX_SLOTS
from augserve.server.actors import check_placement
from augserve.server.data.datasets import DatasetSpec
from augserve.server.images import MAX_IMAGE_PIXELS
from augserve.server.options import option

BUILTIN_DATASETS: dict[str, DatasetSpec] = {
    "digits": DatasetSpec("builtin", name="digits"),
    "lfw_subset": DatasetSpec("builtin", name="lfw_subset"),
    "photos": DatasetSpec("builtin", name="photos"),
}
"""Registered on every server: scikit-learn's digits, scikit-image's LFW subset and photos."""

CORRUPT_POLICIES = ("skip", "fail")


@dataclasses.dataclass(frozen=True)
class StreamSettings:
    """Limits, pool shape and datasets of the StreamBatches RPC; see each field's `help`."""

    window: int = option(
        8, flag="--stream-window",
        help="batches in flight per stream (submitted to the pool, not yet sent); it bounds "
             "what one stream holds on the server, and a reader that stops reading stops "
             "production once the window is full")
    max_batch_size: int = option(
        1024, flag="--stream-max-batch-size", help="the largest batch a request may ask for")
    max_streams: int = option(
        64, flag="--stream-max-streams",
        help="streams served at once; one more gets RESOURCE_EXHAUSTED (with `window`, it "
             "bounds what all streams hold together)")
    max_streams_per_client: int = option(
        8, flag="--stream-max-streams-per-client",
        help="streams one client identity (its token's name, else its address) may have "
             "open at once; one more gets RESOURCE_EXHAUSTED and the open ones go on")
    max_batch_bytes: int = option(
        512 << 20, flag="--stream-max-batch-bytes", shown="536870912 (512 MiB)",
        help="the most output bytes one batch may have (batch_size * H * W * 3 * the "
             "dtype's size), checked from the pipeline and the dataset before the stream "
             "starts, where the output size is known (a sized dataset or a resizing op)")
    max_stream_bytes: int = option(
        2 << 30, flag="--stream-max-stream-bytes", shown="2147483648 (2 GiB)",
        help="the most bytes one stream may hold on the server: `window` batches of the "
             "request's output bytes")
    cache_bytes: int = option(
        512 << 20, flag="--stream-cache-bytes", shown="536870912 (512 MiB)",
        help="each worker's cache of decoded folder images, in bytes (region-decoded "
             "samples, a folder's default under a pipeline that starts with a crop, skip it)")
    max_image_pixels: int = option(
        MAX_IMAGE_PIXELS, flag="--stream-max-image-pixels", shown="67108864 (64 Mi)",
        help="the most pixels a folder dataset's image file may declare in its JPEG, PNG or "
             "WebP header, checked before decoding (a guard against decompression bombs); "
             "a larger one is handled as a corrupt image (`on_corrupt`)")
    pool_size: int = option(
        2, flag="--stream-pool-size",
        help="Ray actors making batches (shared by all streams); 0 runs them on a thread of "
             "the server process (tests, tiny deployments)")
    actor_num_cpus: float = option(
        1.0, flag="--stream-actor-num-cpus",
        help="CPUs each stream actor reserves (its kernels run on one thread)")
    actor_placement: str = option(
        "spread", flag="--stream-actor-placement",
        help='where the stream actors run on a Ray cluster: "spread" over the nodes, '
             '"pack" (Ray\'s default: this node first) or the name of a custom resource '
             "that the chosen nodes advertise")
    backend: str = option(
        "auto", flag="--stream-backend", choices=("auto", "fast", "kornia"),
        help='augmentation backend of the stream workers: "auto", "fast" or "kornia"')
    on_corrupt: str = option(
        "skip", flag="--stream-on-corrupt", choices=CORRUPT_POLICIES,
        help='a corrupt image file is logged with its path, then "skip"ped (the batch is one '
             'sample shorter and lists it in `skipped`) or "fail"s the stream with '
             "FAILED_PRECONDITION; requests may override it")
    max_retries: int = option(
        3, flag="--stream-max-retries",
        help="times one batch is resubmitted after its actor died")
    shared_memory_dir: str = option(
        "/dev/shm", flag="--stream-shared-memory-dir",
        help='where same-host streams that ask for it get their shared-memory rings (a '
             'tmpfs); "" turns the transport off')
    shared_memory_slots: int = option(
        6, flag="--stream-shared-memory-slots",
        help=f"a ring's slots beyond the window: one for the batch on its way, the others "
             f"for batches the client keeps in place (zero-copy) until it drops them; a ring "
             f"has `window + shared_memory_slots` slots, at most {MAX_SLOTS}")
    max_resume_layouts: int = option(
        16, flag="--stream-max-resume-layouts",
        help="earlier trainer layouts one request may list in `consumed` (elastic "
             "resumption: the trainer count changed that many times within the epoch); "
             "each costs one pass over the epoch's order when the stream starts")
    datasets: Mapping[str, Any] = option(
        default_factory=dict,
        help='extra datasets, name -> `DatasetSpec` table (`[stream.datasets.NAME]`), e.g. '
             '`{kind = "folder", path = "/data/train"}`; "digits", "lfw_subset" and "photos" '
             "are always registered")

    def __post_init__(self) -> None:
        for name in ("window", "max_batch_size", "max_streams", "max_streams_per_client",
                     "max_batch_bytes", "max_stream_bytes", "max_resume_layouts",
                     "max_image_pixels"):
            if getattr(self, name) < 1:
                raise ValueError(f"stream settings: {name} must be >= 1")
        if not 1 <= self.window + self.shared_memory_slots <= MAX_SLOTS or (
                self.shared_memory_slots < 1):
            raise ValueError(f"stream settings: shared_memory_slots must be >= 1, and "
                             f"window + shared_memory_slots at most {MAX_SLOTS}")
        for name in ("cache_bytes", "pool_size", "max_retries"):
            if getattr(self, name) < 0:
                raise ValueError(f"stream settings: {name} must be >= 0")
        if self.backend not in ("auto", "fast", "kornia"):
            raise ValueError("stream settings: backend must be auto, fast or kornia")
        check_placement(self.actor_placement, "stream settings: actor_placement")
        if self.on_corrupt not in CORRUPT_POLICIES:
            raise ValueError(f"stream settings: on_corrupt must be one of {CORRUPT_POLICIES}")
        specs = dict(BUILTIN_DATASETS)
        for name, value in self.datasets.items():
            specs[name] = value if isinstance(value, DatasetSpec) else DatasetSpec.from_mapping(
                value)
        object.__setattr__(self, "datasets", specs)
