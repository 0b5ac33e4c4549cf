"""`bench.h2load`: h2load drives a real gRPC server, and a failed call fails the phase.

h2load counts a gRPC error as a success (HTTP 200); `generate` must notice it from
the missing response message. These tests need h2load (Debian's nghttp2-client, which
`.ci/run` installs); outside CI they skip without it.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Iterator
from concurrent import futures

import grpc
import numpy as np
import pytest

from augserve.clients.proto.inference import grpc_service_pb2 as pb
from augserve.server.bench import h2load
from augserve.server.bench.loadgen import build_payload

if not h2load.h2load_path():
    if os.environ.get("CI"):
        raise RuntimeError("CI must have h2load: .ci/run installs nghttp2-client")
    pytest.skip("h2load is not installed (apt install nghttp2-client)", allow_module_level=True)

ANSWER = pb.ModelInferResponse(
    model_name="m", outputs=[pb.ModelInferResponse.InferOutputTensor(name="y", datatype="FP32")],
    raw_output_contents=[np.arange(10, dtype=np.float32).tobytes()],
).SerializeToString()  # fmt: skip


def _serve(fail_every: int) -> Iterator[str]:
    """A ModelInfer server whose every `fail_every`-th call (after the first) fails."""
    calls = itertools.count()
    lock = threading.Lock()

    def infer(request: bytes, context: grpc.ServicerContext) -> bytes:
        with lock:
            call = next(calls)
        if fail_every and call and call % fail_every == 0:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "input 'x': wrong shape")
        return ANSWER

    server = grpc.server(futures.ThreadPoolExecutor(8))
    handler = grpc.unary_unary_rpc_method_handler(infer)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "inference.GRPCInferenceService", {"ModelInfer": handler}),))  # fmt: skip
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(0)


@pytest.fixture
def healthy() -> Iterator[str]:
    yield from _serve(fail_every=0)


@pytest.fixture
def failing() -> Iterator[str]:
    yield from _serve(fail_every=7)


PAYLOAD = build_payload("m", "x", (1, 3, 4, 4))


def test_grpc_frame_prefixes_flag_and_big_endian_length():
    assert h2load.grpc_frame(b"abc") == b"\x00\x00\x00\x00\x03abc"


def test_generate_measures_every_answered_call(healthy):
    summary = h2load.generate(healthy, PAYLOAD, 4, 0.5, 1.0)
    assert summary["errors"] == {}
    assert summary["measured"] == summary["completed"] >= 16
    assert summary["calls"] > summary["measured"]  # the warm-up's calls count too
    assert 0 < summary["p50_ms"] <= summary["p99_ms"] <= summary["max_ms"]
    assert summary["requests_per_s"] > 0
    assert summary["cpu_ms_per_request"] > 0


def test_generate_fails_when_calls_fail_with_http_200(failing):
    with pytest.raises(RuntimeError, match="some calls failed"):
        h2load.generate(failing, PAYLOAD, 4, 0.5, 1.0)


def test_latencies_from_log(tmp_path):
    log = tmp_path / "log"
    log.write_text("1000000\t200\t2500\n1001000\t200\t1500\n")
    starts, ends = h2load.latencies_from_log(log)
    np.testing.assert_allclose(starts, [1.0, 1.001])
    np.testing.assert_allclose(ends, [1.0025, 1.0025])
