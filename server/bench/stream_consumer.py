"""`bench stream`'s consumer: a RemoteLoader that only counts batches, in a process of its own.

Prints one JSON line: samples and batches counted after two untimed batches, and the
wall and CPU seconds they took.

Usage:
    python -m augserve.server.bench.stream_consumer 127.0.0.1:8001 bench_photos 64 150 4 stream
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence

from augserve.clients import RemoteLoader


def consume(
    target: str, dataset: str, batch: int, batches: int, prefetch: int, transport: str
) -> dict[str, float]:
    """Count `batches` batches of `dataset` from `target` after two untimed ones.

    `transport` "inline" asks for the pixels inside the gRPC messages; anything else
    leaves the loader's default (shared memory on the same host).

    Returns:
        samples, batches, wall (seconds) and cpu (this process's CPU seconds).
    """
    loader = RemoteLoader(target, dataset, batch, pipeline_id="imagenet_train", seed=1,
                          epochs=None, prefetch=prefetch,
                          shared_memory=False if transport == "inline" else None)  # fmt: skip
    samples = count = 0
    wall = cpu = 0.0
    for k, item in enumerate(loader.batches()):
        if k == 2:
            samples, count = 0, 0
            wall, cpu = time.perf_counter(), time.process_time()
        samples += len(item.labels)
        count += 1
        if count == batches and k > 2:
            break
    return {"samples": samples, "batches": count, "wall": time.perf_counter() - wall,
            "cpu": time.process_time() - cpu}  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: consume and print the counts as JSON; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", help="host:port of the StreamBatches server")
    parser.add_argument("dataset", help="the server's dataset name")
    parser.add_argument("batch", type=int, help="samples per batch")
    parser.add_argument("batches", type=int, help="timed batches")
    parser.add_argument("prefetch", type=int, help="RemoteLoader prefetch")
    parser.add_argument("transport", choices=("stream", "inline"), help="pixel transport")
    args = parser.parse_args(argv)
    result = consume(args.target, args.dataset, args.batch, args.batches, args.prefetch,
                     args.transport)  # fmt: skip
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
