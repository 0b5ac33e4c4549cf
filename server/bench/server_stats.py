"""What a running `augserve serve` reports about itself: batch statistics and CPU time."""

from __future__ import annotations

from typing import Any

import psutil

from augserve.server.bench.model import MODEL


def is_replica(process: Any) -> bool:
    """Whether a `psutil.Process` of a server's tree is a model replica (a Ray actor).

    Raises:
        psutil.Error: the process is gone or cannot be read.
    """
    return "ModelReplica" in process.name() + " ".join(process.cmdline())


def cpu_seconds(pid: int) -> dict[str, float]:
    """CPU seconds so far of the server process, its model replicas, and the rest of its tree."""
    root = psutil.Process(pid)
    totals = {"server": sum(root.cpu_times()[:2]), "replicas": 0.0, "ray_other": 0.0}
    for child in root.children(recursive=True):
        try:
            seconds = sum(child.cpu_times()[:2])
            replica = is_replica(child)
        except psutil.Error:
            continue
        totals["replicas" if replica else "ray_other"] += seconds
    return totals


def batch_statistics(port: int) -> tuple[int, int, int, int]:
    """(rows, executions, compute-infer ns, compute-input ns) so far, from ModelStatistics.

    compute-input is the batcher's time around a replica call minus the model's own
    time: the replica round trip (the direct channel or a Ray call: arguments, results).
    """
    from augserve.clients.infer import InferClient

    with InferClient(f"127.0.0.1:{port}", timeout=10) as client:
        stats = client.statistics(MODEL).model_stats[0]
    infer = stats.inference_stats
    return (
        stats.inference_count, stats.execution_count, infer.compute_infer.ns,
        infer.compute_input.ns,
    )  # fmt: skip
