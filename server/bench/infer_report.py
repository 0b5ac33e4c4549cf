"""`bench infer`'s figures, ratios and targets, from what its phases measured.

Ratio keys carry the run's parameters: `served_vs_inprocess_c{C}`,
`p99_over_batch_compute_c{C}`, `served_vs_{peer}_c{C}` and (with `--tls --auth`)
`tls_auth_vs_plain_c{C}` at `--concurrency` C, and `c1_p50_added_ms` at one client.
With the default C = 32 they are the names the targets and docs use:
`served_vs_inprocess_c32`, `p99_over_batch_compute_c32`, `served_vs_rayserve_c32`,
`tls_auth_vs_plain_c32`, `c1_p50_added_ms`.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from augserve.server.bench.report import BenchReport


def served_vs_inprocess(concurrency: int) -> str:
    """The key of served / in-process throughput at `concurrency` clients."""
    return f"served_vs_inprocess_c{concurrency}"


def p99_over_batch_compute(concurrency: int) -> str:
    """The key of the served p99 over the mean batch's compute time at `concurrency`."""
    return f"p99_over_batch_compute_c{concurrency}"


def served_vs_peer(peer: str, concurrency: int) -> str:
    """The key of augserve's requests/s over `peer`'s (e.g. "rayserve") at `concurrency`."""
    return f"served_vs_{peer}_c{concurrency}"


def secured_vs_plain(secured: str, concurrency: int) -> str:
    """The key of secured over plaintext requests/s (`secured`: "tls_auth", "tls" or "auth")."""
    return f"{secured}_vs_plain_c{concurrency}"


C1_P50_ADDED_MS = "c1_p50_added_ms"


def targets(concurrency: int) -> dict[str, tuple[str, float]]:
    """The target of each ratio, keyed as the run at `concurrency` names them."""
    return {
        served_vs_inprocess(concurrency): (">=", 0.7),
        served_vs_peer("rayserve", concurrency): (">=", 3.0),
        p99_over_batch_compute(concurrency): ("<=", 4.0),
        C1_P50_ADDED_MS: ("<=", 1.5),
        secured_vs_plain("tls_auth", concurrency): (">=", 0.9),
    }


@dataclass
class Measured:
    """What one `bench infer` run measured.

    Attributes:
        concurrency: clients of the loaded phases.
        served: the load generator's summary of each loaded round.
        ceilings: `inprocess.best_in_process` right after each round.
        cpu: CPU seconds over the loaded rounds: server, replicas, rest of Ray.
        batches: (rows, executions, compute-infer ns, compute-input ns) over them.
        c1: the load generator's summary of each one-client slice.
        b1: the in-process batch-1 ms measured right after each slice.
        c1_batches: `batches` over the one-client slices.
        peers: each peer's key and its summary at `concurrency`.
        secured: with `--tls`/`--auth`, (plaintext, secured) summaries of each pair of
            rounds at `concurrency`, run back to back on two servers.
        secured_name: what the secured server adds: "tls_auth", "tls" or "auth".
    """

    concurrency: int
    served: list[dict[str, Any]]
    ceilings: list[dict[str, Any]]
    cpu: dict[str, float]
    batches: tuple[int, int, int, int]
    c1: list[dict[str, Any]]
    b1: list[float]
    c1_batches: tuple[int, int, int, int]
    peers: dict[str, dict[str, Any]] = field(default_factory=dict)
    secured: list[tuple[dict[str, Any], dict[str, Any]]] = field(default_factory=list)
    secured_name: str = "tls_auth"


def _overall_rate(phases: list[dict[str, Any]]) -> float:
    """Requests/s over several load generator phases: all calls over all their time."""
    calls = sum(phase["calls"] for phase in phases)
    return calls / sum(phase["calls"] / phase["requests_per_s"] for phase in phases)


def fill(report: BenchReport, run: Measured) -> None:
    """Put `run`'s figures, ratios and their targets into `report`."""
    from augserve.server.bench.inprocess import best_of

    c, served, cpu = run.concurrency, run.served, run.cpu
    rows, executions, compute_ns, hop_ns = run.batches
    mean_batch = rows / executions
    batch_compute_ms = compute_ns / executions / 1e6
    ceiling = best_of(run.ceilings)
    layout_calls = [ms for round_ in run.ceilings for ms in round_["replica_layout_call_ms"]]
    calls = sum(phase["calls"] for phase in served)
    requests_per_s = _overall_rate(served)
    p99_ms = max(phase["p99_ms"] for phase in served)
    loadgen_cpu_ms = sum(phase["cpu_ms_per_request"] * phase["calls"] for phase in served)
    total_cpu_ms = (1e3 * sum(cpu.values()) + loadgen_cpu_ms) / calls
    c1, b1, c1_batches = run.c1, run.b1, run.c1_batches
    report.figures.update({
        f"augserve_c{c}_requests_per_s": requests_per_s,
        f"augserve_c{c}_each_round": " / ".join(
            f"{phase['requests_per_s']:,.0f}" for phase in served),
        f"augserve_c{c}_p50_ms": statistics.median(phase["p50_ms"] for phase in served),
        f"augserve_c{c}_p99_ms": p99_ms,
        f"augserve_c{c}_mean_batch_size": mean_batch,
        f"augserve_c{c}_batch_compute_ms": batch_compute_ms,
        f"augserve_c{c}_replica_round_trip_ms_per_batch": hop_ns / executions / 1e6,
        f"augserve_c{c}_server_cpu_ms_per_request": 1e3 * cpu["server"] / calls,
        f"augserve_c{c}_replica_cpu_ms_per_request": 1e3 * cpu["replicas"] / calls,
        f"augserve_c{c}_ray_other_cpu_ms_per_request": 1e3 * cpu["ray_other"] / calls,
        f"loadgen_c{c}_cpu_ms_per_request": loadgen_cpu_ms / calls,
        f"augserve_c{c}_total_cpu_ms_per_request": total_cpu_ms,
        "inprocess_cpu_ms_per_image": ceiling["cpu_ms_per_image"],
        # Noise-resistant view of served_vs_inprocess: images per CPU-second, served
        # (server, replica, rest of Ray, load generator) over in-process.
        f"cpu_efficiency_c{c}_vs_inprocess": ceiling["cpu_ms_per_image"] / total_cpu_ms,
        "augserve_c1_requests_per_s": _overall_rate(c1),
        "augserve_c1_p50_ms": statistics.median(phase["p50_ms"] for phase in c1),
        "augserve_c1_each_slice_p50_ms": " / ".join(f"{phase['p50_ms']:.2f}" for phase in c1),
        "augserve_c1_p99_ms": max(phase["p99_ms"] for phase in c1),
        "augserve_c1_batch_compute_ms": c1_batches[2] / c1_batches[1] / 1e6,
        "augserve_c1_replica_round_trip_ms_per_batch": c1_batches[3] / c1_batches[1] / 1e6,
        "inprocess_batch_size": max(1, round(mean_batch)),
        "inprocess_images_per_s": ceiling["rps"],
        "inprocess_each_round": " / ".join(f"{r['rps']:,.0f}" for r in run.ceilings),
        "inprocess_batch_ms": ceiling["batch_ms"],
        # The model alone, in the replicas' layout at the served batch size: how far
        # this host's own swings put one batch's p99 above its mean, with no queue.
        "inprocess_batch_p99_over_mean": float(
            np.percentile(layout_calls, 99) / np.mean(layout_calls)
        ),
        "inprocess_b1_ms": statistics.median(b1),
        "inprocess_b1_each_slice_ms": " / ".join(f"{ms:.2f}" for ms in b1),
    })  # fmt: skip
    # Paired: each round's served rate over the ceiling measured right after it.
    report.ratios[served_vs_inprocess(c)] = statistics.median(
        phase["requests_per_s"] / ceiling_round["rps"]
        for phase, ceiling_round in zip(served, run.ceilings, strict=True)
    )
    report.ratios[p99_over_batch_compute(c)] = p99_ms / batch_compute_ms
    # Paired as well: each slice's p50 over the reference measured right after it.
    report.ratios[C1_P50_ADDED_MS] = statistics.median(
        phase["p50_ms"] - ms for phase, ms in zip(c1, b1, strict=True)
    )
    for key, summary in run.peers.items():
        report.figures.update({
            f"{key}_c{c}_requests_per_s": summary["requests_per_s"],
            f"{key}_c{c}_p50_ms": summary["p50_ms"],
            f"{key}_c{c}_p99_ms": summary["p99_ms"],
        })  # fmt: skip
        report.ratios[served_vs_peer(key, c)] = requests_per_s / summary["requests_per_s"]
    if run.secured:
        _fill_secured(report, run)
    goals = targets(c)
    report.targets = {name: goals[name] for name in report.ratios if name in goals}


def _fill_secured(report: BenchReport, run: Measured) -> None:
    """The secured rounds' figures and their ratio: the median of paired secured / plain."""
    c, name = run.concurrency, run.secured_name
    for label, phases in (
        ("plain_paired", [plain for plain, _ in run.secured]),
        (name, [secured for _, secured in run.secured]),
    ):
        report.figures.update({
            f"augserve_{label}_c{c}_requests_per_s": _overall_rate(phases),
            f"augserve_{label}_c{c}_p50_ms": statistics.median(p["p50_ms"] for p in phases),
            f"augserve_{label}_c{c}_p99_ms": max(p["p99_ms"] for p in phases),
        })  # fmt: skip
    report.ratios[secured_vs_plain(name, c)] = statistics.median(
        secured["requests_per_s"] / plain["requests_per_s"] for plain, secured in run.secured
    )
