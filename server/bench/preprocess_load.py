"""One client process of `augserve bench preprocess`: closed-loop callers over real photos.

`--mode encoded` sends each photo's JPEG bytes as it is (the server decodes and
preprocesses); `--mode tensor` decodes and preprocesses every request in this process
first (`preprocess_data.client_preprocess`) and sends the float32 tensor, so the client's
CPU is spent on the same cores as the server's. Callers take the photos in turn. The
process writes its latencies inside the measured window, its CPU time and the bytes of
one request and one answer, as JSON.

Usage:
    python -m augserve.server.bench.preprocess_load --url 127.0.0.1:8001 --mode encoded \
        --photos DIR --concurrency 8 --duration 10 --warmup 3 --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from augserve.server.bench.loadgen import MODEL_INFER, first_response, open_channel
from augserve.server.bench.preprocess_data import ENCODED_MODEL, TENSOR_MODEL, client_preprocess


def encoded_request(jpeg: bytes, tta_views: int) -> bytes:
    """A serialized request of one JPEG for the encoded model (`tta_views` 0: TTA off)."""
    from augserve.clients.infer import build_infer_request

    images = np.empty((1, 1), dtype=np.object_)
    images[0, 0] = jpeg
    parameters = {"tta_views": tta_views} if tta_views else {"tta": False}
    return build_infer_request(ENCODED_MODEL, {"image": images},
                               parameters=parameters).SerializeToString()


def tensor_request(jpeg: bytes) -> bytes:
    """Decode and preprocess `jpeg` here, then serialize the fp32 request."""
    from augserve.clients.infer import build_infer_request

    return build_infer_request(TENSOR_MODEL, {"input": client_preprocess(jpeg)}
                               ).SerializeToString()


def request_maker(mode: str, jpegs: Sequence[bytes], tta_views: int) -> Callable[[int], bytes]:
    """For call number k, the bytes to send (prebuilt for encoded, built now for tensor)."""
    if mode == "encoded":
        prebuilt = [encoded_request(jpeg, tta_views) for jpeg in jpegs]
        return lambda k: prebuilt[k % len(prebuilt)]
    return lambda k: tensor_request(jpegs[k % len(jpegs)])


async def drive(url: str, make: Callable[[int], bytes], concurrency: int, duration_s: float,
                warmup_s: float, timeout_s: float = 60.0) -> dict[str, Any]:
    """`concurrency` closed-loop callers for warm-up plus `duration_s`; the raw figures."""
    async with open_channel(url, None, aio=True) as channel:
        call = channel.unary_unary(MODEL_INFER, request_serializer=None, response_deserializer=None)
        latencies: list[float] = []
        completed = 0
        errors: Counter[str] = Counter()
        begin = time.perf_counter() + warmup_s
        stop = begin + duration_s
        counter = iter(range(1 << 62))

        async def caller() -> None:
            nonlocal completed
            clock = time.perf_counter
            while (sent := clock()) < stop:
                payload = make(next(counter))  # the client's own work is inside the call's time
                try:
                    await call(payload, timeout=timeout_s)
                except grpc.aio.AioRpcError as error:
                    errors[error.code().name] += 1
                    continue
                done = clock()
                if begin <= done <= stop:
                    completed += 1
                    if sent >= begin:
                        latencies.append(done - sent)

        cpu_start = time.process_time()
        await asyncio.gather(*(caller() for _ in range(concurrency)))
        cpu_s = time.process_time() - cpu_start
    return {"completed": completed, "latencies_s": latencies, "errors": dict(errors),
            "duration_s": duration_s, "cpu_s": cpu_s}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: run the callers and write the JSON; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--mode", choices=("encoded", "tensor"), required=True)
    parser.add_argument("--photos", type=Path, required=True, help="folder of .jpg files")
    parser.add_argument("--tta-views", type=int, default=0, help="views per image; 0: TTA off")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args(argv)
    jpegs = [path.read_bytes() for path in sorted(args.photos.glob("*.jpg"))]
    make = request_maker(args.mode, jpegs, args.tta_views)
    answer = first_response(args.url, make(0), timeout_s=60.0)
    result = asyncio.run(drive(args.url, make, args.concurrency, args.duration, args.warmup))
    result.update(request_bytes=float(np.mean([len(make(k)) for k in range(len(jpegs))])),
                  response_bytes=len(answer))
    args.json.write_text(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
