"""A closed-loop gRPC load generator for `ModelInfer`, run as its own process.

N coroutines share one channel and each resends ONE prebuilt request, serialized
once, through a raw `unary_unary` call (no protobuf work per request), timing
every call with `time.perf_counter`. A non-OK status is counted as an error; the
first response is parsed once to check that the model really answered.

Usage:
    python -m augserve.server.bench.loadgen --url 127.0.0.1:8001 --model resnet20 \
        --concurrency 32 --duration 15 --warmup 3 --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
import numpy as np

MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
_CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 64 << 20),
    ("grpc.max_send_message_length", 64 << 20),
]


def open_channel(url: str, root_cert: Path | None, aio: bool = False) -> Any:
    """A channel to `url`: plaintext, or TLS trusting the PEM CA `root_cert`."""
    module = grpc.aio if aio else grpc
    if root_cert is None:
        return module.insecure_channel(url, options=_CHANNEL_OPTIONS)
    credentials = grpc.ssl_channel_credentials(root_certificates=root_cert.read_bytes())
    return module.secure_channel(url, credentials, options=_CHANNEL_OPTIONS)


def build_payload(model: str, input_name: str, shape: Sequence[int], seed: int = 0) -> bytes:
    """One serialized ModelInferRequest carrying a random fp32 tensor of `shape`, raw."""
    from augserve.clients.infer import build_infer_request

    image = np.random.default_rng(seed).standard_normal(tuple(shape), dtype=np.float32)
    return build_infer_request(model, {input_name: image}).SerializeToString()


def first_response(
    url: str, payload: bytes, metadata: Sequence[tuple[str, str]] = (), timeout_s: float = 30.0,
    root_cert: Path | None = None,
) -> bytes:
    """Send `payload` once to `url` (over TLS trusting `root_cert`, if given); the answer.

    Raises:
        RuntimeError: the call failed, or its answer is not a ModelInferResponse with
            at least one output.

    """
    from augserve.clients.proto.inference import grpc_service_pb2 as pb

    with open_channel(url, root_cert) as channel:
        call = channel.unary_unary(MODEL_INFER, request_serializer=None, response_deserializer=None)
        try:
            raw = call(payload, timeout=timeout_s, metadata=metadata)
        except grpc.RpcError as error:
            raise RuntimeError(
                f"the first request failed: {error.code()} {error.details()}"
            ) from None
    response = pb.ModelInferResponse.FromString(raw)
    if not response.outputs:
        raise RuntimeError(f"the server answered with no outputs: {response}")
    return raw


def summarize(
    starts: np.ndarray, ends: np.ndarray, window: tuple[float, float], errors: Counter[str]
) -> dict[str, Any]:
    """Throughput and latency percentiles of the calls inside the measurement window.

    Args:
        starts: perf_counter seconds at which each successful call was sent.
        ends: perf_counter seconds at which each answer arrived.
        window: (start, end) of the measured period; warm-up calls fall before it.
        errors: failed calls by status code name.

    Returns:
        requests/s (answers that arrived in the window over its length), latency
        p50/p90/p99/mean/max in ms (calls sent and answered inside the window),
        the counts, and the errors.

    """
    begin, end = window
    done = (ends >= begin) & (ends <= end)
    inside = (starts >= begin) & done
    latencies_ms = (ends[inside] - starts[inside]) * 1e3
    result: dict[str, Any] = {
        "requests_per_s": float(done.sum() / (end - begin)),
        "completed": int(done.sum()),
        "measured": int(inside.sum()),
        "duration_s": end - begin,
        "errors": dict(errors),
    }
    if latencies_ms.size:
        p50, p90, p99 = np.percentile(latencies_ms, [50, 90, 99])
        result.update(
            p50_ms=float(p50),
            p90_ms=float(p90),
            p99_ms=float(p99),
            mean_ms=float(latencies_ms.mean()),
            max_ms=float(latencies_ms.max()),
        )
    return result


async def generate(
    url: str,
    payload: bytes,
    concurrency: int,
    duration_s: float,
    warmup_s: float,
    timeout_s: float = 30.0,
    metadata: Sequence[tuple[str, str]] = (),
    root_cert: Path | None = None,
) -> dict[str, Any]:
    """Drive `url` with `concurrency` closed-loop callers for warm-up plus `duration_s`.

    `metadata` goes with every call (Ray Serve's proxy routes on "application"; a
    secured server takes `authorization: Bearer ...`); with `root_cert` (a PEM CA)
    the calls go over TLS.

    Returns:
        The `summarize` dict for the measured period.

    Raises:
        RuntimeError: the first call failed, or its response had no outputs.

    """
    first_response(url, payload, metadata, timeout_s, root_cert)
    async with open_channel(url, root_cert, aio=True) as channel:
        call = channel.unary_unary(MODEL_INFER, request_serializer=None, response_deserializer=None)
        starts: list[float] = []
        ends: list[float] = []
        errors: Counter[str] = Counter()
        begin = time.perf_counter() + warmup_s
        stop = begin + duration_s

        async def caller() -> None:
            clock = time.perf_counter
            while (sent := clock()) < stop:
                try:
                    await call(payload, timeout=timeout_s, metadata=metadata)
                except grpc.aio.AioRpcError as error:
                    errors[error.code().name] += 1
                    continue
                ends.append(clock())
                starts.append(sent)

        cpu_start = time.process_time()
        await asyncio.gather(*(caller() for _ in range(concurrency)))
        cpu_s = time.process_time() - cpu_start
    summary = summarize(np.array(starts), np.array(ends), (begin, stop), errors)
    summary["calls"] = len(ends)  # warm-up included
    summary["cpu_ms_per_request"] = 1e3 * cpu_s / max(1, len(ends))
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: run the load and write the summary as JSON; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="host:port of the server")
    parser.add_argument("--model", required=True, help="model name in the request")
    parser.add_argument("--input-name", default="input", help="the model's input tensor")
    parser.add_argument(
        "--shape", default="1,3,32,32", help="input shape with batch dim (default 1,3,32,32)"
    )
    parser.add_argument("--concurrency", type=int, default=32, help="closed-loop callers")
    parser.add_argument("--duration", type=float, default=15.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds first")
    parser.add_argument(
        "--metadata", action="append", default=[], help="KEY=VALUE sent with every call"
    )
    parser.add_argument(
        "--root-cert", type=Path, help="PEM CA to trust: call over TLS (default: plaintext)"
    )
    parser.add_argument("--json", type=Path, help="write the summary here (default: stdout)")
    args = parser.parse_args(argv)
    shape = [int(d) for d in args.shape.split(",")]
    payload = build_payload(args.model, args.input_name, shape)
    metadata = [tuple(item.split("=", 1)) for item in args.metadata]
    summary = asyncio.run(generate(
        args.url, payload, args.concurrency, args.duration, args.warmup, metadata=metadata,
        root_cert=args.root_cert,
    ))  # fmt: skip
    summary.update(concurrency=args.concurrency, request_bytes=len(payload))
    text = json.dumps(summary, indent=2)
    if args.json:
        args.json.write_text(text + "\n")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
