"""Per model-version inference statistics, for the ModelStatistics RPC and for Prometheus.

Queue time (waiting in the batcher) is kept apart from compute time (the
replica running the model), and executions are counted per batch size, as
Triton does. The same figures feed Prometheus histograms and counters.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field

from prometheus_client import Counter, Histogram

from augserve.server.inference.timing import BatchTiming

_LABELS = ("model", "version")
REQUESTS = Counter("augserve_inference_requests", "Inference requests", (*_LABELS, "status"))
QUEUE_SECONDS = Histogram(
    "augserve_inference_queue_seconds",
    "Time a request waited in the batcher's queue",
    _LABELS,
    buckets=(1e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 0.1, 0.25, 0.5, 1.0),
)
COMPUTE_SECONDS = Histogram(
    "augserve_inference_compute_seconds",
    "Time a replica spent running one batch",
    _LABELS,
    buckets=(1e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 0.1, 0.25, 0.5, 1.0),
)
PREPROCESS_SECONDS = Counter(
    "augserve_preprocess_seconds", "Wall time replicas spent decoding and preprocessing images",
    _LABELS)
PREPROCESS_CPU_SECONDS = Counter(
    "augserve_preprocess_cpu_seconds",
    "CPU time (all threads of the replica) spent decoding and preprocessing images", _LABELS)
PREPROCESS_IMAGES = Counter(
    "augserve_preprocess_images", "Images replicas decoded and preprocessed", _LABELS)
BATCH_SIZE = Histogram(
    "augserve_inference_batch_size",
    "Rows per executed batch",
    _LABELS,
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)


@dataclass
class Duration:
    """A count and a total in nanoseconds."""

    count: int = 0
    ns: int = 0

    def add(self, ns: int, count: int = 1) -> None:
        """Record `count` events that took `ns` nanoseconds in total."""
        self.count += count
        self.ns += ns


@dataclass
class BatchDurations:
    """Time spent per executed batch of one size: moving inputs, computing, splitting outputs."""

    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)


@dataclass
class ModelStats:
    """Cumulative statistics of one model version."""

    name: str
    version: str
    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)
    inference_count: int = 0
    execution_count: int = 0
    last_inference_ms: int = 0
    batches: dict[int, BatchDurations] = field(default_factory=lambda: defaultdict(BatchDurations))

    def __post_init__(self) -> None:
        # The labelled children, looked up once: `labels()` costs a lock and a dict
        # lookup, several times per request otherwise.
        labels = (self.name, self.version)
        self._ok = REQUESTS.labels(*labels, "ok")
        self._error = REQUESTS.labels(*labels, "error")
        self._queue_seconds = QUEUE_SECONDS.labels(*labels)
        self._compute_seconds = COMPUTE_SECONDS.labels(*labels)
        self._batch_size = BATCH_SIZE.labels(*labels)
        self._preprocess = (PREPROCESS_SECONDS.labels(*labels),
                            PREPROCESS_CPU_SECONDS.labels(*labels),
                            PREPROCESS_IMAGES.labels(*labels))

    def record_request(self, ok: bool, total_ns: int, queue_ns: int, rows: int) -> None:
        """One request finished (ok or failed) after `total_ns`, `queue_ns` of it queued."""
        (self.success if ok else self.fail).add(total_ns)
        if ok:
            self.queue.add(queue_ns)
            self.inference_count += rows
        self.last_inference_ms = int(time.time() * 1000)
        (self._ok if ok else self._error).inc()
        self._queue_seconds.observe(queue_ns / 1e9)

    def record_batch(self, rows: int, input_ns: int, infer_ns: int, output_ns: int) -> None:
        """One batch of `rows` rows ran on a replica."""
        self.execution_count += 1
        durations = self.batches[rows]
        for total, per_size, ns in (
            (self.compute_input, durations.compute_input, input_ns),
            (self.compute_infer, durations.compute_infer, infer_ns),
            (self.compute_output, durations.compute_output, output_ns),
        ):
            total.add(ns)
            per_size.add(ns)
        self._compute_seconds.observe(infer_ns / 1e9)
        self._batch_size.observe(rows)

    def record_preprocess(self, timing: BatchTiming) -> None:
        """A batch's images were decoded and preprocessed in its replica (`[preprocess]`)."""
        wall, cpu, images = self._preprocess
        wall.inc(timing.preprocess_ns / 1e9)
        cpu.inc(timing.preprocess_cpu_ns / 1e9)
        images.inc(timing.images)
