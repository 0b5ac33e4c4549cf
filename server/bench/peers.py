"""The peers `augserve bench infer --baseline` compares against, each run as its own server.

A peer serves the same ResNet-20 weights in the same replicas and threads, in a process
group of its own (`lifecycle.serving`), and is driven by the same load generator.
Today there is one, "ray-serve": Ray Serve's gRPC proxy with `@serve.batch(32, 0.002)`
(`bench.rayserve_baseline`, with its own fresh Ray).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from augserve.server.bench import lifecycle
from augserve.server.bench.load import run_loadgen
from augserve.server.bench.model import MODEL


@dataclass(frozen=True)
class Peer:
    """A peer server: its key in figures and ratios, and the module that serves it.

    The module takes `--state-dict --threads --replicas --model-name --ready-file`,
    writes its gRPC port to the ready file, and exits 0 on SIGTERM.
    """

    key: str
    module: str
    metadata: tuple[tuple[str, str], ...] = ()


PEERS: dict[str, Peer] = {
    # Serve's proxy routes a call to its application by the "application" metadata.
    "ray-serve": Peer("rayserve", "augserve.server.bench.rayserve_baseline",
                      (("application", MODEL),)),
}  # fmt: skip


def run_peer(
    name: str, weights: Path, threads: int, replicas: int, loadgen: str, concurrency: int,
    duration: float, warmup: float, work: Path, extra_env: dict[str, str],
) -> dict[str, Any]:  # fmt: skip
    """Serve `weights` with peer `name`, drive it once at `concurrency`; the load summary."""
    peer = PEERS[name]
    command = [
        sys.executable, "-m", peer.module, "--state-dict", str(weights),
        "--threads", str(threads), "--replicas", str(replicas), "--model-name", MODEL,
        "--ready-file", str(work / f"{peer.key}.port"),
    ]  # fmt: skip
    with lifecycle.serving(
        command, work / f"{peer.key}.port", work / f"{peer.key}.log",
        lifecycle.child_env(**extra_env), name=name,
    ) as (port, _):  # fmt: skip
        return run_loadgen(
            loadgen, port, concurrency, duration, warmup, work / f"{peer.key}.json",
            peer.metadata,
        )  # fmt: skip
