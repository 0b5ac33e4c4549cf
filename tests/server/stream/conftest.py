"""Stream fixtures: in-process servers (port 0, interceptors on) over local or Ray pools."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import grpc
import numpy as np
import pytest
import pytest_asyncio

from augserve.clients.proto.augserve.v1 import stream_pb2 as pb
from augserve.clients.proto.augserve.v1 import stream_pb2_grpc as pb_grpc
from augserve.server.interceptors import ErrorMappingInterceptor
from augserve.server.stream.pool import StreamPool
from augserve.server.stream.servicer import StreamServicer, register_servicer
from augserve.server.stream.settings import StreamSettings

SMALL = {"ops": [{"randomResizedCrop": {"size": [24, 24], "scale": [0.5, 1]}},
                 {"horizontalFlip": {}, "p": 0.5},
                 {"colorJitter": {"brightness": 0.3, "contrast": 0.3}, "p": 0.8}]}
PIPELINES = {"small": json.dumps(SMALL)}
DIGITS = {"kind": "builtin", "name": "digits", "size": 32}
OPTIONS = [("grpc.max_receive_message_length", 64 << 20)]


def settings(folder: Path | None = None, **overrides) -> StreamSettings:
    datasets = {"digits32": DIGITS}
    if folder is not None:
        datasets["folder"] = {"kind": "folder", "path": str(folder)}
    values = {"pool_size": 0, "window": 4, "max_batch_size": 256, "datasets": datasets}
    values.update(overrides)
    return StreamSettings(**values)


class Running:
    """An in-process server with its servicer and pool, for tests that look inside."""

    def __init__(self, server, servicer: StreamServicer, target: str) -> None:
        self.server, self.servicer, self.target = server, servicer, target

    @property
    def pool(self) -> StreamPool:
        return self.servicer.pool


async def start(stream_settings: StreamSettings, pool: StreamPool | None = None,
                servicer_class: type = StreamServicer) -> Running:
    server = grpc.aio.server(interceptors=[ErrorMappingInterceptor()],
                             options=[("grpc.max_send_message_length", 64 << 20)])
    pool = pool or StreamPool(stream_settings.pool_size, "fast",
                              max_pixels=stream_settings.max_image_pixels)
    servicer = servicer_class(stream_settings, pool, PIPELINES)
    register_servicer(server, servicer)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return Running(server, servicer, f"127.0.0.1:{port}")


def request(**fields) -> pb.StreamRequest:
    fields.setdefault("dataset", "digits32")
    if "pipeline" not in fields:
        fields.setdefault("pipeline_id", "small")
    fields.setdefault("batch_size", 64)
    fields.setdefault("seed", 3)
    fields.setdefault("shuffle", True)
    return pb.StreamRequest(**fields)


async def collect(target: str, **fields) -> list[pb.Batch]:
    async with grpc.aio.insecure_channel(target, options=OPTIONS) as channel:
        stub = pb_grpc.StreamServiceStub(channel)
        return [b async for b in stub.StreamBatches(request(**fields))]


def images_of(batch: pb.Batch) -> np.ndarray:
    return np.frombuffer(batch.images.data, np.uint8).reshape(tuple(batch.images.shape))


def by_index(batches: list[pb.Batch]) -> dict[int, bytes]:
    """Each sample's augmented bytes, keyed by its dataset index."""
    out = {}
    for batch in batches:
        for index, image in zip(batch.sample_indices, images_of(batch), strict=True):
            assert index not in out, f"sample {index} delivered twice"
            out[index] = image.tobytes()
    return out


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> Path:
    """Two classes of JPEG and PNG files, and one corrupt file in class b."""
    root = tmp_path_factory.mktemp("folder")
    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        (root / label).mkdir()
        for i in range(5):
            image = rng.integers(0, 255, (20 + i, 30, 3), dtype=np.uint8)
            suffix = ".png" if i % 2 else ".jpg"
            cv2.imwrite(str(root / label / f"{i}{suffix}"), image)
    (root / "b" / "9_corrupt.jpg").write_bytes(b"\xff\xd8 not a jpeg at all")
    (root / "b" / "notes.txt").write_text("not an image, ignored")
    return root


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def local(image_folder):
    running = await start(settings(image_folder))
    yield running
    await running.server.stop(None)
