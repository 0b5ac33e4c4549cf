"""`RemoteLoader`: a training loader fed by augserve's StreamBatches (no torch needed).

Batches are (images, labels): numpy arrays by default, torch tensors with
`output="torch"` (torch is imported only then). Background threads prefetch up to
`prefetch` batches, across epoch boundaries; a full prefetch queue stops reading the
stream, and gRPC flow control holds the server back. `state_dict()` names the next
batch (epoch, position); a new loader given it by `load_state_dict()` continues with
exactly the batches the old one would have produced. On UNAVAILABLE a stream is
reopened at its next position, with exponential back-off. Several servers: each one
serves one lane of positions (p, p + S, ...), and the loader interleaves them back
into position order, so the batches are the same as from one server.

Changing the number of trainers mid-epoch: `RemoteLoader.global_cursor(states)` (the
`state_dict()` of every rank) or `loader.cursor()` (one rank, all in lockstep) gives a
small dict; `load_state_dict(cursor)` on each of the S' new loaders goes on with the
samples the old ones had not seen (see `augserve.clients.cursor`).

Example:
    >>> loader = RemoteLoader("localhost:8001", "digits", batch_size=64,  # doctest: +SKIP
    ...                       pipeline={"ops": [{"resize": {"size": [32, 32]}}]}, seed=1)
    >>> for images, labels in loader:  # one epoch, uint8 [64, 3, 32, 32]  # doctest: +SKIP
    ...     ...
    >>> state = loader.state_dict()  # save with the checkpoint  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import logging
import queue
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import grpc
from google.protobuf import json_format

from augserve.clients.auth import with_token
from augserve.clients.channel import open_channel
from augserve.clients.cursor import (
    check_cursor,
    consumed_messages,
    global_cursor,
    is_cursor,
    lockstep_cursor,
)
from augserve.clients.proto import POOL
from augserve.clients.proto.augserve.v1 import augment_pb2
from augserve.clients.proto.augserve.v1 import stream_pb2 as pb
from augserve.clients.ring import RingReader, SharedMemoryUnavailable, is_loopback_target
from augserve.clients.stream_batch import StreamedBatch, parse_batch, reuse_large_buffers
from augserve.clients.tls import TlsSettings

log = logging.getLogger(__name__)

_METHOD = "/augserve.v1.StreamService/StreamBatches"
_STATE_KEYS = ("dataset", "batch_size", "seed", "shuffle", "num_shards", "shard_index",
               "drop_last", "sharding")


@dataclasses.dataclass(frozen=True)
class _EndOfEpoch:
    epoch: int


@dataclasses.dataclass(frozen=True)
class _Failure:
    error: BaseException


class _Lane(threading.Thread):
    """Reads one server's positions (offset, offset + stride, ...) epoch after epoch."""

    def __init__(self, stream: Any, request: pb.StreamRequest,
                 offset: int, stride: int, epoch: int, position: int, end_epoch: int | None,
                 consumed: Sequence[pb.ConsumedBatches], depth: int, retries: int,
                 backoff_s: float, max_backoff_s: float, shared_memory: bool,
                 zero_copy: bool) -> None:
        super().__init__(daemon=True)
        self.stream, self.request = stream, request
        self.shared_memory, self.ring = shared_memory, RingReader(zero_copy)
        self.offset, self.stride = offset, stride
        self.epoch, self.end_epoch = epoch, end_epoch
        self.consumed = list(consumed)  # for the first epoch only
        self.position = position + (offset - position) % stride
        self.items: queue.Queue[Any] = queue.Queue(max(depth, 1))
        self.retries, self.backoff_s, self.max_backoff_s = retries, backoff_s, max_backoff_s
        self.stop = threading.Event()
        self.call: Any = None
        self.reconnects = 0

    def _put(self, item: Any) -> bool:
        while not self.stop.is_set():
            try:
                self.items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run(self) -> None:
        failures = 0
        while not self.stop.is_set() and (self.end_epoch is None or self.epoch < self.end_epoch):
            request = pb.StreamRequest()
            request.CopyFrom(self.request)
            request.epoch, request.start_position = self.epoch, self.position
            request.position_stride, request.shared_memory = self.stride, self.shared_memory
            request.consumed.extend(self.consumed)
            try:
                self.call = self.stream(request)
                for message in self.call:
                    batch = parse_batch(message, self.ring)
                    if not self._put(batch):
                        return
                    self.position = batch.position + self.stride
                    failures = 0
            except SharedMemoryUnavailable as error:  # e.g. the server runs as another user
                log.warning("%s; reading the pixels inline from now on", error)
                self.call.cancel()
                self.shared_memory = False
                continue
            except grpc.RpcError as error:
                if self.stop.is_set():
                    return
                if error.code() == grpc.StatusCode.UNAVAILABLE and failures < self.retries:
                    time.sleep(min(self.backoff_s * 2**failures, self.max_backoff_s))
                    failures += 1
                    self.reconnects += 1
                    continue
                self._put(_Failure(error))
                return
            except Exception as error:  # a bad message: report it to the consumer
                self._put(_Failure(error))
                return
            if not self._put(_EndOfEpoch(self.epoch)):
                return
            self.epoch, self.position, self.consumed = self.epoch + 1, self.offset, []

    def get(self) -> Any:
        item = self.items.get()
        if isinstance(item, _Failure):
            raise item.error
        return item

    def close(self) -> None:
        self.stop.set()
        if self.call is not None:
            self.call.cancel()
        self.join(timeout=5)
        if not self.is_alive():
            self.ring.close()


class RemoteLoader:
    """An iterable of (images, labels) batches streamed from one or several servers."""

    def __init__(
        self,
        targets: str | Sequence[str],
        dataset: str,
        batch_size: int,
        pipeline: augment_pb2.Pipeline | str | Mapping[str, Any] | None = None,
        pipeline_id: str | None = None,
        seed: int = 0,
        shuffle: bool = True,
        num_shards: int = 1,
        shard_index: int = 0,
        drop_last: bool = False,
        sharding: str = "contiguous",
        epochs: int | None = 1,
        prefetch: int = 4,
        dtype: str = "uint8",
        layout: str = "NCHW",
        output: str = "numpy",
        on_corrupt: str = "",
        retries: int = 8,
        backoff_s: float = 0.2,
        max_backoff_s: float = 5.0,
        lane: tuple[int, int] = (0, 1),
        max_message_bytes: int = 512 << 20,
        reuse_buffers: bool = True,
        shared_memory: bool | None = None,
        zero_copy: bool = True,
        tls: TlsSettings | None = None,
        token: str | None = None,
    ) -> None:
        """Describe the stream; nothing connects until iteration starts.

        Args:
            targets: "host:port", or several: positions are spread over them.
            dataset: a dataset registered on the server(s).
            batch_size: samples per batch.
            pipeline: the pipeline as a message, JSON text or dict; or
            pipeline_id: a pipeline registered on the server (e.g. "imagenet_train").
            seed: seeds the epoch permutations and the augmentation.
            shuffle: permute every epoch (seeded by (seed, epoch)).
            num_shards: data-parallel trainers; each gets a disjoint shard.
            shard_index: this trainer's shard.
            drop_last: every shard gets the same number of full batches.
            sharding: "contiguous" or "strided".
            epochs: epochs one iteration covers (None: endless); the loader's state
                moves on, so `for epoch ...: for x, y in loader` walks epoch after epoch.
            prefetch: batches read ahead (over all servers).
            dtype: "uint8" (normalization left to the trainer; see `normalization`),
                "float32", "float16" or "bfloat16".
            layout: "NCHW" or "NHWC".
            output: "numpy" or "torch".
            on_corrupt: "skip" or "fail" (empty: the server's policy).
            retries: reconnections in a row on UNAVAILABLE before giving up.
            backoff_s: first back-off (doubling up to `max_backoff_s`).
            max_backoff_s: longest back-off.
            lane: (offset, step): read only positions offset, offset + step, ... (the
                torch adapter gives each DataLoader worker its own lane).
            max_message_bytes: largest batch message accepted.
            reuse_buffers: on iteration, let the C library reuse freed message buffers
                instead of faulting in fresh pages for each batch (process-wide, see
                `augserve.clients.stream_batch.reuse_large_buffers`): about 1 ms of CPU
                less per 9.6 MB batch.
            shared_memory: ask for the pixels through a shared-memory ring
                (`augserve.clients.ring`) instead of in the messages; None: for the
                targets on this host (loopback or Unix socket). A server that cannot
                (another host, transport off, no room in /dev/shm) sends them inline; a
                ring this process cannot open makes the loader read inline from then on.
            zero_copy: batches through shared memory are views of their ring slots
                (writable), each released when the last array or tensor viewing it is
                garbage collected, while fewer than the server's `holdable` (5 by
                default) are held; batches past that are copied out. False: always
                copy (about 1 ms of CPU per 9.6 MB batch).
            tls: connect over TLS with these settings (None: plaintext).
            token: a bearer token sent with every call (servers run with `--auth-tokens`).

        Raises:
            ValueError: bad arguments (also raised for a pipeline that is not valid JSON).
        """
        self.targets = [targets] if isinstance(targets, str) else list(targets)
        if not self.targets:
            raise ValueError("give at least one target")
        if (pipeline is None) == (pipeline_id is None):
            raise ValueError("give exactly one of pipeline and pipeline_id")
        if output not in ("numpy", "torch"):
            raise ValueError(f"output: expected 'numpy' or 'torch', got {output!r}")
        if lane[1] < 1 or not 0 <= lane[0] < lane[1]:
            raise ValueError(f"lane: expected (offset, step) with 0 <= offset < step, got {lane}")
        self.request = pb.StreamRequest(
            dataset=dataset, batch_size=batch_size, seed=seed, shuffle=shuffle,
            num_shards=num_shards, shard_index=shard_index, drop_last=drop_last,
            sharding=sharding, dtype=dtype, layout=layout, on_corrupt=on_corrupt)
        if pipeline_id is not None:
            self.request.pipeline_id = pipeline_id
        elif isinstance(pipeline, augment_pb2.Pipeline):
            self.request.pipeline.CopyFrom(pipeline)
        else:
            text = pipeline if isinstance(pipeline, str) else json.dumps(pipeline)
            try:
                json_format.Parse(text, self.request.pipeline, descriptor_pool=POOL)
            except json_format.ParseError as error:
                raise ValueError(f"pipeline: {error}") from error
        self.epochs, self.prefetch, self.output = epochs, prefetch, output
        self.retries, self.backoff_s, self.max_backoff_s = retries, backoff_s, max_backoff_s
        self.lane, self.reuse_buffers, self.zero_copy = lane, reuse_buffers, zero_copy
        self.shared_memory = [is_loopback_target(t) if shared_memory is None else shared_memory
                              for t in self.targets]
        options = [("grpc.max_receive_message_length", max_message_bytes)]
        self._channels = [open_channel(t, tls, options) for t in self.targets]
        # Raw bytes in: `parse_batch` leaves the pixels where gRPC put them.
        serialize = pb.StreamRequest.SerializeToString
        self._stubs = [with_token(c, token).unary_stream(_METHOD, request_serializer=serialize)
                       for c in self._channels]
        self.epoch, self.position = 0, lane[0]
        # What earlier trainer layouts consumed of `self.epoch` (after an elastic resume).
        self.consumed: list[dict[str, Any]] = []
        self.normalization: tuple[tuple[float, ...], tuple[float, ...]] = ((), ())
        self.reconnects = 0

    def state_dict(self) -> dict[str, Any]:
        """Where the next batch comes from, plus the stream's identity (checked on load)."""
        state = {"epoch": self.epoch, "position": self.position, "lane": list(self.lane),
                 "consumed": [dict(layout) for layout in self.consumed]}
        state.update({key: getattr(self.request, key) for key in _STATE_KEYS})
        return state

    @staticmethod
    def global_cursor(states: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Where S trainers are in the epoch, from every rank's `state_dict()`.

        Any number of trainers can resume from it (`load_state_dict`); see
        `augserve.clients.cursor.global_cursor`.
        """
        return global_cursor(states)

    def cursor(self) -> dict[str, Any]:
        """The global cursor from this rank alone, every rank at the same batch count.

        That holds for data-parallel trainers, which step together: any rank can save it.
        """
        return lockstep_cursor(self.state_dict())

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from a `state_dict()` (same shards) or a global cursor (any number).

        `state` from `state_dict()`: e.g. after a trainer restart. After a global cursor
        (`global_cursor`, `cursor()`), this shard's batches split what the old trainers
        had not consumed of the cursor's epoch (drop_last: every shard the same number of
        full batches); the epochs after it are as usual.

        Raises:
            ValueError: the state belongs to a different stream (dataset, seed, shard ...).
        """
        if is_cursor(state):
            check_cursor(state, self.request)
            self.epoch, self.position = int(state["epoch"]), self.lane[0]
            self.consumed = [dict(layout) for layout in state["consumed"]]
            return
        for key in _STATE_KEYS:
            if key in state and state[key] != getattr(self.request, key):
                raise ValueError(f"state_dict: {key} is {state[key]!r}, this loader has "
                                 f"{getattr(self.request, key)!r}")
        if "lane" in state and tuple(state["lane"]) != tuple(self.lane):
            raise ValueError(f"state_dict: lane {state['lane']} is not {list(self.lane)}")
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self.consumed = [dict(layout) for layout in state.get("consumed", ())]

    def set_epoch(self, epoch: int) -> None:
        """Start the next iteration at the beginning of `epoch`."""
        self.epoch, self.position, self.consumed = epoch, self.lane[0], []

    def batches(self) -> Iterator[StreamedBatch]:
        """The batches with their metadata (numpy), from the current state on."""
        if self.reuse_buffers:
            reuse_large_buffers()
        count = len(self._stubs)
        offset, step = self.lane
        end = None if self.epochs is None else self.epoch + self.epochs
        lanes = [_Lane(stub, self.request, offset + s * step, step * count, self.epoch,
                       self.position, end, consumed_messages(self.consumed),
                       -(-self.prefetch // count), self.retries,
                       self.backoff_s, self.max_backoff_s, self.shared_memory[s],
                       self.zero_copy)
                 for s, stub in enumerate(self._stubs)]
        for lane in lanes:
            lane.start()
        try:
            while end is None or self.epoch < end:
                which = ((self.position - offset) // step) % count
                item = lanes[which].get()
                if isinstance(item, _EndOfEpoch):
                    for other in lanes:
                        if other is not lanes[which]:
                            other.get()
                    self.epoch, self.position, self.consumed = self.epoch + 1, offset, []
                    continue
                if (item.epoch, item.position) != (self.epoch, self.position):
                    raise RuntimeError(f"expected batch {(self.epoch, self.position)}, got "
                                       f"{(item.epoch, item.position)}")
                self.position += step
                self.normalization = (item.normalize_mean, item.normalize_std)
                yield item
        finally:
            for lane in lanes:
                lane.close()
                self.reconnects += lane.reconnects

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        """(images, labels) per batch: numpy, or torch tensors with `output="torch"`."""
        if self.output == "numpy":
            for batch in self.batches():
                yield batch.images, batch.labels
            return
        import torch

        for batch in self.batches():
            images = batch.images if batch.images.flags.writeable else batch.images.copy()
            yield torch.from_numpy(images), torch.from_numpy(batch.labels)

    def close(self) -> None:
        """Close the channels."""
        for channel in self._channels:
            channel.close()

    def __enter__(self) -> RemoteLoader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_TORCH_DATASET: type | None = None


def _torch_dataset_class() -> type:
    """Build `TorchRemoteDataset` on first use, so that importing this module needs no torch."""
    global _TORCH_DATASET
    if _TORCH_DATASET is not None:
        return _TORCH_DATASET
    from torch.utils.data import IterableDataset, get_worker_info

    class TorchRemoteDataset(IterableDataset):
        """A `torch.utils.data.IterableDataset` over a RemoteLoader: one server batch per item.

        Use `DataLoader(dataset, batch_size=None)`: the server already batches. With
        `num_workers=W`, worker w reads positions w, w + W, ... and the DataLoader's
        round-robin puts them back in position order (the same batches as one loader).
        `state_dict()` / `load_state_dict()` resume when `num_workers=0`.

        Example:
            >>> ds = TorchRemoteDataset(targets="localhost:8001", dataset="digits",
            ...                         batch_size=64, pipeline_id="small")  # doctest: +SKIP
            >>> for images, labels in DataLoader(ds, batch_size=None): ...  # doctest: +SKIP
        """

        def __init__(self, **loader_kwargs: Any) -> None:
            """Keep the `RemoteLoader` arguments; each iteration opens a loader."""
            super().__init__()
            self.kwargs = {**loader_kwargs, "output": "torch"}
            self.state: dict[str, Any] | None = None

        def state_dict(self) -> dict[str, Any] | None:
            """The single-process loader's state after the batches consumed so far."""
            return self.state

        def load_state_dict(self, state: Mapping[str, Any]) -> None:
            """Resume the next (single-process) iteration from `state`."""
            self.state = dict(state)

        def __iter__(self) -> Iterator[tuple[Any, Any]]:
            info = get_worker_info()
            lane = (0, 1) if info is None else (info.id, info.num_workers)
            with RemoteLoader(**{**self.kwargs, "lane": lane}) as loader:
                if self.state is not None and info is None:
                    loader.load_state_dict(self.state)
                for item in loader:
                    if info is None:
                        self.state = loader.state_dict()
                    yield item
                if info is None:
                    self.state = loader.state_dict()

    TorchRemoteDataset.__module__ = __name__
    TorchRemoteDataset.__qualname__ = "TorchRemoteDataset"  # pickled by name (spawn workers)
    _TORCH_DATASET = TorchRemoteDataset
    return TorchRemoteDataset


def __getattr__(name: str) -> Any:
    """`TorchRemoteDataset` is built (importing torch) on first access."""
    if name == "TorchRemoteDataset":
        return _torch_dataset_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
