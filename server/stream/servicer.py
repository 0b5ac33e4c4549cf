"""The StreamBatches RPC: a thin servicer that checks a request once and streams its batches."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Mapping
from typing import Any

import grpc
import numpy as np
from grpc import aio

from augserve.clients.proto.augserve.v1 import augment_pb2
from augserve.clients.proto.augserve.v1 import stream_pb2 as pb
from augserve.clients.proto.augserve.v1 import stream_pb2_grpc as pb_grpc
from augserve.clients.stream_batch import reuse_large_buffers
from augserve.server.augment.limits import image_bytes, output_size
from augserve.server.augment.ops import Normalize
from augserve.server.augment.registry import PipelineRegistry
from augserve.server.augment.settings import AugmentSettings
from augserve.server.augment.spec import (
    DTYPES,
    LAYOUTS,
    PipelineSpec,
)
from augserve.server.auth.identity import client_key
from augserve.server.data.datasets import Dataset, open_dataset
from augserve.server.data.epoch import SHARDINGS, Consumed, EpochPlan
from augserve.server.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from augserve.server.limits import ClientSlots, over_limit
from augserve.server.peers import is_local_peer
from augserve.server.stream import metrics
from augserve.server.stream.pool import StreamPool
from augserve.server.stream.ring import RingPool, RingWriter
from augserve.server.stream.settings import CORRUPT_POLICIES, StreamSettings
from augserve.server.stream.stream import MadeBatch, StreamCounters, StreamJob, produce

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["StreamService"].full_name
_ITEMSIZE = {"uint8": 1, "float16": 2, "bfloat16": 2, "float32": 4}


def stream_spec(spec: PipelineSpec, dtype: str, layout: str
                ) -> tuple[PipelineSpec, tuple[float, ...], tuple[float, ...]]:
    """The spec with the stream's dtype and layout; uint8 leaves trailing normalize out.

    Returns:
        (spec, mean, std): mean and std are the normalization left to the trainer.
    """
    ops, mean, std = list(spec.ops), (), ()
    if dtype == "uint8":
        while ops and isinstance(ops[-1], Normalize):
            last = ops.pop()
            mean, std = tuple(last.mean), tuple(last.std)
        if any(isinstance(op, Normalize) for op in ops):
            raise InvalidArgument("dtype: uint8 output needs normalize to be the last op")
    return dataclasses.replace(spec, ops=tuple(ops), dtype=dtype, layout=layout), mean, std


class StreamServicer(pb_grpc.StreamServiceServicer):
    """Translates `StreamRequest` into a stream job and its batches into `Batch` messages."""

    def __init__(self, settings: StreamSettings, pool: StreamPool,
                 pipelines: Mapping[str, str] | None = None,
                 max_ops: int = AugmentSettings.max_ops) -> None:
        """Parse the registered pipelines (at most `max_ops` ops each) up front."""
        self.settings = settings
        self.pool = pool
        self.counters = StreamCounters()
        self.pipelines = PipelineRegistry(pipelines, max_ops)
        self._datasets: dict[str, Dataset] = {}
        self.slots = ClientSlots(settings, "stream", "max_streams_per_client", "max_streams")
        # A shared ring holds the window's batches, the one on its way and those the
        # client keeps in place; a private one the window's plus one.
        self.rings = self.private_rings = None
        if settings.shared_memory_dir:
            self.rings = RingPool(settings.shared_memory_dir,
                                  settings.window + settings.shared_memory_slots,
                                  holdable=settings.shared_memory_slots - 1)
            self.private_rings = RingPool(settings.shared_memory_dir, settings.window + 1)

    async def dataset(self, name: str) -> Dataset:
        """The registered dataset `name` (opened once, off the event loop), or NotFound."""
        if name not in self.settings.datasets:
            raise NotFound(f"dataset {name!r} is not registered "
                           f"(known: {', '.join(sorted(self.settings.datasets))})")
        if name not in self._datasets:
            try:
                self._datasets[name] = await asyncio.to_thread(
                    open_dataset, self.settings.datasets[name], 0, self.settings.max_image_pixels)
            except (OSError, ValueError) as error:
                raise FailedPrecondition(f"dataset {name!r} cannot be opened: {error}") from error
        return self._datasets[name]

    async def job(self, request: pb.StreamRequest) -> tuple[StreamJob, tuple, tuple]:
        """Check every field of `request`; return the job and the deferred mean and std."""
        dataset = await self.dataset(request.dataset)
        dtype, layout = request.dtype or "uint8", request.layout or "NCHW"
        if dtype not in DTYPES:
            raise InvalidArgument(f"dtype: expected one of {DTYPES}, got {dtype!r}")
        if layout not in LAYOUTS:
            raise InvalidArgument(f"layout: expected one of {LAYOUTS}, got {layout!r}")
        spec, mean, std = stream_spec(self.pipelines.resolve(request), dtype, layout)
        if request.batch_size < 1:
            raise InvalidArgument(f"batch_size: expected at least 1, got {request.batch_size}")
        if request.batch_size > self.settings.max_batch_size:
            raise over_limit(self.settings, "max_batch_size", f"batch_size {request.batch_size}")
        self.check_memory(spec, request.dataset, dataset, request.batch_size)
        shards = request.num_shards or 1
        if request.shard_index >= shards:
            raise InvalidArgument(f"shard_index: {request.shard_index} is not below "
                                  f"num_shards ({shards})")
        sharding = request.sharding or "contiguous"
        if sharding not in SHARDINGS:
            raise InvalidArgument(f"sharding: expected one of {SHARDINGS}, got {sharding!r}")
        on_corrupt = request.on_corrupt or self.settings.on_corrupt
        if on_corrupt not in CORRUPT_POLICIES:
            raise InvalidArgument(f"on_corrupt: expected one of {CORRUPT_POLICIES}")
        if request.seed >= 1 << 63 or request.epoch >= 1 << 63:
            raise InvalidArgument("seed and epoch must be below 2**63")
        plan = EpochPlan(len(dataset), request.batch_size, request.seed, request.epoch,
                         request.shuffle, shards, request.shard_index, request.drop_last,
                         sharding, self.consumed(request))
        count = plan.num_batches()
        stride = request.position_stride or 1
        if request.start_position >= count + stride:
            raise InvalidArgument(f"start_position: {request.start_position} is past the "
                                  f"epoch's {count} batches")
        job = StreamJob(self.settings.datasets[request.dataset], spec, plan,
                        request.start_position, stride, on_corrupt)
        return job, mean, std

    def consumed(self, request: pb.StreamRequest) -> tuple[Consumed, ...]:
        """The request's earlier trainer layouts (elastic resumption), checked."""
        if len(request.consumed) > self.settings.max_resume_layouts:
            raise over_limit(self.settings, "max_resume_layouts",
                             f"consumed: {len(request.consumed)} layouts")
        layouts = []
        for i, layout in enumerate(request.consumed):
            shards = layout.num_shards or 1
            if len(layout.batches) != shards:
                raise InvalidArgument(f"consumed[{i}].batches: expected {shards} counts (one "
                                      f"per shard), got {len(layout.batches)}")
            if layout.batch_size < 1:
                raise InvalidArgument(f"consumed[{i}].batch_size: expected >= 1")
            sharding = layout.sharding or "contiguous"
            if sharding not in SHARDINGS:
                raise InvalidArgument(f"consumed[{i}].sharding: expected one of {SHARDINGS}, "
                                      f"got {sharding!r}")
            layouts.append(Consumed(shards, layout.batch_size, tuple(layout.batches),
                                    layout.drop_last, sharding))
        return tuple(layouts)

    def check_memory(self, spec: PipelineSpec, name: str, dataset: Dataset,
                     batch_size: int) -> None:
        """Raise ResourceExhausted when a batch, or the window of them, passes its limit.

        The output size comes from the pipeline when it resizes to a fixed size, else from
        the dataset's size (sized datasets, arrays); a folder of unsized images of any size
        is bounded per image when its files are decoded instead.
        """
        size = self.settings.datasets[name].size
        stored = getattr(dataset, "images", None)
        input_size = ((size, size) if size else
                      tuple(stored.shape[1:3]) if isinstance(stored, np.ndarray) else None)
        out = output_size(spec, input_size)
        if out is None:
            return
        batch = batch_size * image_bytes(spec, out[0] * out[1])
        if batch > self.settings.max_batch_bytes:
            raise over_limit(self.settings, "max_batch_bytes",
                             f"batch_size: {batch_size} outputs of {out[0]}x{out[1]} "
                             f"({spec.dtype}), {batch} bytes per batch,")
        held = self.settings.window * batch
        if held > self.settings.max_stream_bytes:
            raise over_limit(self.settings, "max_stream_bytes",
                             f"batch_size: window ({self.settings.window}) x {batch} bytes "
                             f"per batch = {held} bytes")

    async def StreamBatches(self, request: pb.StreamRequest, context: aio.ServicerContext
                            ) -> AsyncIterator[bytes]:
        """Check the request, then yield its batches in position order (as `Batch` bytes)."""
        job, mean, std = await self.job(request)
        with self.slots.hold(client_key(context)):
            labels = (await self.dataset(request.dataset)).labels
            count = job.plan.num_batches()
            shared = (request.shared_memory and self.rings is not None
                      and is_local_peer(context.peer()))
            ring = None
            if self.private_rings is not None:
                kind = (request.dataset, request.pipeline_id,
                        request.pipeline.SerializeToString(), request.batch_size, request.dtype,
                        request.layout)
                ring = RingWriter(self.rings if shared else self.private_rings,
                                  request.batch_size, kind)
            completed = False
            metrics.ACTIVE_STREAMS.inc()
            try:
                async for made in produce(self.pool, job, self.settings.window,
                                          self.settings.max_retries, self.counters, ring):
                    result = made.result
                    if shared:
                        where = await ring.put(result)
                        message = encode_batch(made, labels, job.plan.epoch, count, mean, std,
                                               where)
                    else:
                        message = _encode_inline(made, ring, labels, job.plan.epoch, count,
                                                 mean, std)
                        where = None
                    pixels = int(np.prod(result.shape)) if result.shape else 0
                    metrics.count_batch(where is not None, len(made.indices),
                                        pixels * _ITEMSIZE[result.dtype], len(result.skipped))
                    yield message
                completed = True
            finally:
                metrics.ACTIVE_STREAMS.dec()
                if ring is not None:
                    ring.finish(completed)

    async def aclose(self) -> None:
        """Remove this servicer's shared-memory rings (after the server stopped its calls)."""
        for rings in (self.rings, self.private_rings):
            if rings is not None:
                await rings.aclose()

    async def GetDataset(self, request: pb.GetDatasetRequest, context: aio.ServicerContext
                         ) -> pb.DatasetInfo:
        """Size, kind and classes of a registered dataset."""
        return await self._info(request.name)

    async def ListDatasets(self, request: pb.ListDatasetsRequest,
                           context: aio.ServicerContext) -> pb.ListDatasetsResponse:
        """Every registered dataset (each opened to count it)."""
        infos = [await self._info(name) for name in sorted(self.settings.datasets)]
        return pb.ListDatasetsResponse(datasets=infos)

    async def _info(self, name: str) -> pb.DatasetInfo:
        dataset = await self.dataset(name)
        return pb.DatasetInfo(name=name, kind=self.settings.datasets[name].kind,
                              size=len(dataset), classes=dataset.classes)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | 0x80 if value else byte)
        if not value:
            return bytes(out)


_LEN_FIELD_1 = b"\x0a"  # field 1, wire type 2 (length-delimited): Batch.images, Image.data


def encode_batch(made: MadeBatch, labels: np.ndarray, epoch: int, count: int,
                 mean: tuple, std: tuple, shared: pb.SharedMemorySlot | None = None) -> bytes:
    """A made batch as the wire bytes of a `Batch` message, copying the pixels only once.

    The small fields go through protobuf; the image tensor is spliced in as
    `images.data` straight from the worker's result (in Ray's object store), instead of
    being copied into a message and copied again when it is serialized. With `shared`
    (the pixels are already in the stream's shared-memory ring) only their shape and
    dtype are sent, and where they are.
    """
    result = made.result
    head = pb.Batch(labels=labels[made.indices].tolist(), sample_indices=made.indices.tolist(),
                    epoch=epoch, position=made.position, batches_in_epoch=count,
                    skipped=result.skipped, normalize_mean=mean, normalize_std=std,
                    shared_memory=shared).SerializeToString()
    parts: list[bytes | memoryview] = []
    if shared is not None:
        parts.append(augment_pb2.Image(shape=result.shape, dtype=result.dtype).SerializeToString())
    elif result.images is None:
        parts.append(augment_pb2.Image(dtype=result.dtype).SerializeToString())
    else:
        raw = memoryview(result.images.reshape(-1).view(np.uint8))
        parts += [augment_pb2.Image(shape=result.images.shape,
                                    dtype=result.dtype).SerializeToString(),
                  _LEN_FIELD_1, _varint(raw.nbytes), raw]
    size = sum(len(p) if isinstance(p, bytes) else p.nbytes for p in parts)
    return b"".join([head, _LEN_FIELD_1, _varint(size), *parts])


def _encode_inline(made: MadeBatch, ring: RingWriter | None, labels: np.ndarray, epoch: int,
                   count: int, mean: tuple, std: tuple) -> bytes:
    """`encode_batch` of a batch whose pixels may be in the stream's private ring."""
    placed = None if ring is None else ring.place(made.result)
    if placed is None:
        return encode_batch(made, labels, epoch, count, mean, std)
    slot, images = placed
    in_ring = dataclasses.replace(made, result=dataclasses.replace(made.result, images=images,
                                                                   written=()))
    message = encode_batch(in_ring, labels, epoch, count, mean, std)
    ring.release(slot)  # the pixels are copied into the message
    return message


def _serialize(message: bytes | Any) -> bytes:
    return message if isinstance(message, bytes) else message.SerializeToString()


def register_servicer(server: aio.Server, servicer: StreamServicer) -> None:
    """Add `servicer`'s methods to `server`; StreamBatches yields ready wire bytes.

    Also lets this process's C library reuse freed batch-sized buffers
    (`reuse_large_buffers`): every batch sent allocates ~2 of them.
    """
    reuse_large_buffers()
    handlers = {
        "StreamBatches": grpc.unary_stream_rpc_method_handler(
            servicer.StreamBatches, request_deserializer=pb.StreamRequest.FromString,
            response_serializer=_serialize),
        "GetDataset": grpc.unary_unary_rpc_method_handler(
            servicer.GetDataset, request_deserializer=pb.GetDatasetRequest.FromString,
            response_serializer=_serialize),
        "ListDatasets": grpc.unary_unary_rpc_method_handler(
            servicer.ListDatasets, request_deserializer=pb.ListDatasetsRequest.FromString,
            response_serializer=_serialize),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME,
                                                                           handlers),))


def add_stream_service(server: aio.Server, settings: StreamSettings,
                       pipelines: Mapping[str, str] | None = None,
                       pool: StreamPool | None = None,
                       max_ops: int = AugmentSettings.max_ops) -> StreamServicer:
    """Register the Stream service (`SERVICE_NAME`) on `server`; return its servicer.

    Args:
        server: a `grpc.aio.Server` (with `ErrorMappingInterceptor` installed).
        settings: window, limits, pool shape and datasets.
        pipelines: registered pipelines, id -> JSON spec (the augment service's);
            "imagenet_train" is built in.
        pool: the worker pool to use; by default one is built from `settings`.
        max_ops: the most ops a pipeline may have (`AugmentSettings.max_ops`).

    Returns:
        The servicer; `await servicer.aclose()` once the server has stopped.
    """
    pool = pool or StreamPool(settings.pool_size, settings.backend, settings.actor_num_cpus,
                              settings.cache_bytes, settings.max_image_pixels,
                              settings.actor_placement)
    servicer = StreamServicer(settings, pool, pipelines, max_ops)
    register_servicer(server, servicer)
    return servicer


__all__ = ["SERVICE_NAME", "StreamServicer", "add_stream_service", "encode_batch",
           "register_servicer", "stream_spec"]
