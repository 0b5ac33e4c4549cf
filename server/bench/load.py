"""Load generation for the inference benches: pick a load generator and run one phase.

The generator runs in a process of its own: `bench.h2load` (nghttp2's C client), or
the Python `bench.loadgen` (`python -m augserve.server.bench.loadgen`).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from augserve.server.bench import h2load, lifecycle
from augserve.server.bench.loadgen import build_payload
from augserve.server.bench.model import INPUT_SHAPE, MODEL


def resolve_loadgen(choice: str) -> str:
    """"h2load" or "python" for `--loadgen` (auto: h2load when it is installed).

    Raises:
        RuntimeError: h2load was asked for and is not installed.
    """
    if choice == "auto":
        return "h2load" if h2load.h2load_path() else "python"
    if choice == "h2load" and not h2load.h2load_path():
        raise RuntimeError("--loadgen h2load: h2load is not on PATH (apt install nghttp2-client)")
    return choice


def run_loadgen(
    loadgen: str, port: int, concurrency: int, duration: float, warmup: float, out: Path,
    metadata: Sequence[tuple[str, str]] = (), root_cert: Path | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Drive the model at 127.0.0.1:`port` with one request of one image; the summary.

    `loadgen` is "h2load" or "python"; the summary is also written to `out`. `metadata`
    goes with every call; with `root_cert` (a PEM CA) the calls go over TLS.

    Raises:
        RuntimeError: a call failed, or nothing was measured.
        subprocess.CalledProcessError: the Python load generator failed.
    """
    url = f"127.0.0.1:{port}"
    if loadgen == "h2load":
        payload = build_payload(MODEL, "input", (1, *INPUT_SHAPE))
        summary = h2load.generate(
            url, payload, concurrency, duration, warmup, metadata, root_cert
        )
        out.write_text(json.dumps(summary, indent=2) + "\n")
    else:
        command = [
            sys.executable, "-m", "augserve.server.bench.loadgen", "--url", url,
            "--model", MODEL, "--concurrency", str(concurrency), "--duration", str(duration),
            "--warmup", str(warmup), "--json", str(out),
            *(f"--metadata={key}={value}" for key, value in metadata),
            *([f"--root-cert={root_cert}"] if root_cert is not None else []),
        ]  # fmt: skip
        lifecycle.run(command, duration + warmup + 120)
        summary = json.loads(out.read_text())
    if summary["errors"] or not summary["measured"]:
        raise RuntimeError(f"load generator at c={concurrency}: {summary}")
    return summary
