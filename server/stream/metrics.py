"""Prometheus metrics of the StreamBatches service (served on `--metrics-port`).

Batches, samples and pixel bytes are counted per transport: "inline" (in the gRPC
message) or "shared_memory" (through a same-host stream's ring), so an operator can see
whether trainers on the server's host get the shared-memory path.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

ACTIVE_STREAMS = Gauge("augserve_stream_active", "StreamBatches calls in progress")
BATCHES = Counter("augserve_stream_batches", "Batches sent", ("transport",))
SAMPLES = Counter("augserve_stream_samples", "Samples sent", ("transport",))
PIXEL_BYTES = Counter("augserve_stream_pixel_bytes", "Bytes of pixels sent", ("transport",))
RESUBMITTED = Counter("augserve_stream_resubmitted_batches",
                      "Batches made again because their worker died")
SKIPPED = Counter("augserve_stream_skipped_samples", "Corrupt samples left out of batches")


def count_batch(shared_memory: bool, samples: int, pixel_bytes: int, skipped: int) -> None:
    """Count one batch sent."""
    transport = "shared_memory" if shared_memory else "inline"
    BATCHES.labels(transport).inc()
    SAMPLES.labels(transport).inc(samples)
    PIXEL_BYTES.labels(transport).inc(pixel_bytes)
    if skipped:
        SKIPPED.inc(skipped)


__all__ = ["ACTIVE_STREAMS", "BATCHES", "PIXEL_BYTES", "RESUBMITTED", "SAMPLES", "SKIPPED",
           "count_batch"]
