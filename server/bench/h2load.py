"""Closed-loop `ModelInfer` load from nghttp2's `h2load`, a C HTTP/2 client, for `bench infer`.

Why a C client: on a 2-core machine the load generator takes its CPU from the
server it measures. The Python grpc.aio generator (`bench.loadgen`) costs about
0.2 ms of CPU per request, a tenth of a served ResNet-20 request, and h2load about
0.02 ms, which comes closest to a client on another host. (Triton's perf_analyzer
is C++ too, but its pip build needs glibc 2.38.) Install it with
`apt-get install nghttp2-client` (Debian, Ubuntu) or `brew install nghttp2`.

A unary gRPC call is one HTTP/2 POST to `/package.Service/Method` with
`content-type: application/grpc` and `te: trailers`, whose body is the message
behind a 5-byte prefix (a compressed flag, then the big-endian length). h2load
sends that body as is, `concurrency` streams at a time on one connection. It
judges a response by its HTTP status only, while gRPC reports an error with
HTTP 200 and the status in trailers, and no message. So every measured phase
sends a fixed number of requests (`-n`) and checks that h2load received exactly
one message of the expected length for each: one failed call fails the phase.
"""

from __future__ import annotations

import re
import resource
import shutil
import struct
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from augserve.server.bench import lifecycle
from augserve.server.bench.loadgen import MODEL_INFER, first_response, summarize

_REQUESTS = re.compile(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded")
_DATA_BYTES = re.compile(r"traffic: .*\((\d+)\) data")


def h2load_path() -> str | None:
    """The `h2load` executable on PATH, or None."""
    return shutil.which("h2load")


def grpc_frame(message: bytes) -> bytes:
    """`message` as the body of a gRPC call: uncompressed flag, big-endian length, bytes."""
    return b"\0" + struct.pack(">I", len(message)) + message


def _run_h2load(
    url: str, body: Path, concurrency: int, limit: list[str], metadata: Sequence[tuple[str, str]],
    log: Path | None = None,
) -> tuple[int, int, int]:  # fmt: skip
    """Run h2load once; (requests done, requests succeeded, response body bytes)."""
    command = [
        h2load_path() or "h2load", "--clients=1", "--threads=1",
        f"--max-concurrent-streams={concurrency}", f"--data={body}",
        "--header=content-type: application/grpc", "--header=te: trailers",
        *(f"--header={key}: {value}" for key, value in metadata), *limit,
    ]  # fmt: skip
    if log is not None:
        command.append(f"--log-file={log}")
    output = lifecycle.run([*command, url + MODEL_INFER], timeout_s=600).stdout
    requests, data = _REQUESTS.search(output), _DATA_BYTES.search(output)
    if requests is None or data is None:
        raise RuntimeError(f"h2load printed no summary:\n{output}")
    return int(requests[2]), int(requests[3]), int(data[1])


def latencies_from_log(log: Path) -> tuple[np.ndarray, np.ndarray]:
    """(start, end) seconds of each request in an h2load `--log-file` (µs start, status, µs)."""
    table = np.loadtxt(log, dtype=np.int64, ndmin=2)
    starts = table[:, 0] / 1e6
    return starts, starts + table[:, 2] / 1e6


def generate(
    url: str,
    payload: bytes,
    concurrency: int,
    duration_s: float,
    warmup_s: float,
    metadata: Sequence[tuple[str, str]] = (),
    root_cert: Path | None = None,
) -> dict[str, Any]:
    """Drive `url` (host:port) with h2load: a warm-up, then about `duration_s` of requests.

    With `root_cert` (the server's PEM CA) the calls go over TLS (`https://`, ALPN h2);
    h2load does not verify the certificate, the first call (Python, through grpc) does.

    The warm-up runs for `warmup_s` and sets the measured phase's request count: its
    rate times `duration_s`. Throughput counts the measured requests over the span from
    the first one sent to the last one answered.

    Returns:
        The `loadgen.summarize` dict of the measured phase, plus `calls` (warm-up
        included) and `cpu_ms_per_request` (h2load's own CPU).

    Raises:
        RuntimeError: the first call failed, or a measured request got no message of
            the expected length (a gRPC error).

    """
    expected = len(grpc_frame(first_response(url, payload, metadata, root_cert=root_cert)))
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with tempfile.TemporaryDirectory(prefix="augserve-h2load-") as tmp:
        body, log = Path(tmp) / "request.bin", Path(tmp) / "requests.log"
        body.write_bytes(grpc_frame(payload))
        address = f"{'http' if root_cert is None else 'https'}://{url}"
        warm_s = max(1, round(warmup_s))  # h2load takes whole seconds
        warm_done, _, _ = _run_h2load(
            address, body, concurrency, [f"--duration={warm_s}"], metadata
        )
        count = max(4 * concurrency, round(warm_done / warm_s * duration_s))
        done, succeeded, data_bytes = _run_h2load(
            address, body, concurrency, [f"--requests={count}"], metadata, log
        )
        if not done == succeeded == count or data_bytes != count * expected:
            raise RuntimeError(
                f"h2load at c={concurrency}: {succeeded} of {count} requests answered "
                f"with HTTP 200, {data_bytes} response bytes for {count} x {expected}: "
                "some calls failed"
            )
        starts, ends = latencies_from_log(log)
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = sum(getattr(cpu_after, f) - getattr(cpu_before, f) for f in ("ru_utime", "ru_stime"))
    summary = summarize(starts, ends, (starts.min(), ends.max()), Counter())
    summary["calls"] = warm_done + count
    summary["cpu_ms_per_request"] = 1e3 * cpu_s / summary["calls"]
    return summary
