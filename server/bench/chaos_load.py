"""The mixed load of `bench chaos`, each answer checked: ModelInfer, Augment, StreamBatches.

- Inference: closed-loop clients, each on one of three elementwise models (`MODELS`), so
  a model without a replica for a while stalls only its own clients; each request a
  fresh random input, each answer compared exactly with the numpy reference of that model
  for that input (elementwise float32 arithmetic is exact in torch and numpy alike).
- Augment: a few seeds whose answers are taken before any fault; later calls with a seed
  must return the same bytes (augmentation keys depend on seed and sample only).
- Streams: trainer threads, each running epoch 0 of its seed again and again; every pass
  must hold each sample of the dataset once, and each batch the bytes of the first pass.

Every call is recorded as (kind, status, start, latency); `allowed_error` tells the
expected failures (RESOURCE_EXHAUSTED past a limit, UNAVAILABLE for a call that lost two
or more replicas or workers, as the server's message says) from the unexpected ones.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
import numpy as np

MODELS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "double": lambda x: x * np.float32(2),
    "flip": lambda x: np.float32(1) - x,
    "square": lambda x: x * x,
}
DIMS = 16
DIGITS = 1797  # samples of the built-in digits dataset
PIPELINE = {"ops": [{"randomResizedCrop": {"size": [16, 16], "scale": [0.5, 1]}},
                    {"horizontalFlip": {}, "p": 0.5}]}


@dataclass
class Record:
    """Everything the load saw: calls, wrong answers, stream passes."""

    started: float = field(default_factory=time.monotonic)
    calls: list[tuple[str, str, float, float]] = field(default_factory=list)
    wrong: int = 0
    unexpected: list[str] = field(default_factory=list)
    lost: int = 0
    duplicated: int = 0
    passes: int = 0
    expected: Counter[str] = field(default_factory=Counter)  # the allowed errors, by message
    lock: threading.Lock = field(default_factory=threading.Lock)

    def call(self, kind: str, status: str, started: float, details: str = "") -> None:
        """Record one call that began at `started` (monotonic) and ended now."""
        now = time.monotonic()
        with self.lock:
            self.calls.append((kind, status, started - self.started, now - started))
            if status != "OK" and not allowed_error(status, details):
                self.unexpected.append(f"{kind} {status}: {details[:200]}")
            elif status != "OK":  # ids and counts masked, so that one cause is one key
                self.expected[f"{kind} {status}: " + re.sub(
                    r"[0-9a-f]{16,}|\d+(?:\.\d+)?", "#", details)[:160]] += 1


def allowed_error(status: str, details: str) -> bool:
    """RESOURCE_EXHAUSTED past a limit, or UNAVAILABLE for a call that lost two replicas.

    The server says how many it lost: "this request's batch lost 2 replicas" (two deaths
    under one batch), "it lost 2 of its 2 replicas" (every replica of the model down past
    `--inference-no-replica-wait-s`), "lost 2 workers" (an Augment or stream call).
    """
    if status == "RESOURCE_EXHAUSTED":
        return True
    lost = re.search(r"\blost (\d+) (?:of its \d+ )?(?:replicas|workers)", details)
    return status == "UNAVAILABLE" and lost is not None and int(lost.group(1)) >= 2


async def infer_client(url: str, seed: int, stop: asyncio.Event, record: Record) -> None:
    """Closed loop on model `seed % 3` (one model per client), each answer checked exactly."""
    from augserve.clients.infer import AsyncInferClient

    rng = np.random.default_rng(seed)
    model = list(MODELS)[seed % len(MODELS)]
    async with AsyncInferClient(url) as client:
        while not stop.is_set():
            x = rng.standard_normal((int(rng.integers(1, 5)), DIMS)).astype(np.float32)
            started = time.monotonic()
            try:
                y = (await client.infer(model, {"x": x}, timeout=30))["y"]
            except grpc.aio.AioRpcError as error:
                record.call("infer", error.code().name, started, error.details() or "")
                await asyncio.sleep(0.05)
                continue
            record.call("infer", "OK", started)
            if not np.array_equal(y, MODELS[model](x)):
                record.wrong += 1


def augment_request(seed: int, images: list[np.ndarray]) -> object:
    """The Augment request of `seed` on `images`."""
    from augserve.clients.augment import encode_image, pipeline_message
    from augserve.clients.proto.augserve.v1 import augment_pb2 as pb

    return pb.AugmentRequest(images=[encode_image(i) for i in images], seed=seed,
                             pipeline=pipeline_message(PIPELINE))


def answer_bytes(response: object) -> bytes:
    """A digest of an Augment answer's images."""
    from augserve.clients.augment import decode_image

    digest = hashlib.sha256()
    for message in response.images:  # type: ignore[attr-defined]
        digest.update(decode_image(message).tobytes())
    return digest.digest()


async def augment_client(stub: object, requests: dict[int, object], expected: dict[int, bytes],
                         seed: int, stop: asyncio.Event, record: Record) -> None:
    """Closed loop over the seeds' requests; each answer must hold the reference bytes."""
    seeds = sorted(requests)
    n = seed
    while not stop.is_set():
        key = seeds[n % len(seeds)]
        n += 1
        started = time.monotonic()
        try:
            response = await stub.Augment(requests[key], timeout=30)  # type: ignore[attr-defined]
        except grpc.aio.AioRpcError as error:
            record.call("augment", error.code().name, started, error.details() or "")
            await asyncio.sleep(0.05)
            continue
        record.call("augment", "OK", started)
        if answer_bytes(response) != expected[key]:
            record.wrong += 1


def trainer(url: str, seed: int, stop: threading.Event, record: Record) -> None:
    """Epoch 0 of `seed` again and again; each pass checked against the first."""
    from augserve.clients import RemoteLoader

    reference: list[bytes] | None = None
    while not stop.is_set():
        seen: list[int] = []
        digests: list[bytes] = []
        started = time.monotonic()
        try:
            with RemoteLoader(url, dataset="digits", pipeline=PIPELINE, batch_size=64,
                              seed=seed, epochs=1, prefetch=4, retries=30) as loader:
                for batch in loader.batches():
                    seen.extend(batch.sample_indices.tolist())
                    digests.append(hashlib.sha256(batch.images.tobytes()).digest())
                    record.call("stream_batch", "OK", started)
                    started = time.monotonic()
        except grpc.RpcError as error:
            record.call("stream_batch", error.code().name, started, str(error.details()))
            continue
        with record.lock:
            record.passes += 1
            record.lost += DIGITS - len(set(seen))
            record.duplicated += len(seen) - len(set(seen))
            if reference is None:
                reference = digests
            elif digests != reference:
                record.wrong += sum(a != b for a, b in zip(digests, reference, strict=False))
