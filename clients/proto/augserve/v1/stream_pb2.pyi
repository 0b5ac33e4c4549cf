from augserve.clients.proto.augserve.v1 import augment_pb2 as _augment_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StreamRequest(_message.Message):
    __slots__ = ("dataset", "pipeline", "pipeline_id", "batch_size", "seed", "epoch", "shuffle", "shard_index", "num_shards", "drop_last", "start_position", "position_stride", "dtype", "layout", "sharding", "on_corrupt", "shared_memory", "consumed")
    DATASET_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_ID_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    SHUFFLE_FIELD_NUMBER: _ClassVar[int]
    SHARD_INDEX_FIELD_NUMBER: _ClassVar[int]
    NUM_SHARDS_FIELD_NUMBER: _ClassVar[int]
    DROP_LAST_FIELD_NUMBER: _ClassVar[int]
    START_POSITION_FIELD_NUMBER: _ClassVar[int]
    POSITION_STRIDE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    LAYOUT_FIELD_NUMBER: _ClassVar[int]
    SHARDING_FIELD_NUMBER: _ClassVar[int]
    ON_CORRUPT_FIELD_NUMBER: _ClassVar[int]
    SHARED_MEMORY_FIELD_NUMBER: _ClassVar[int]
    CONSUMED_FIELD_NUMBER: _ClassVar[int]
    dataset: str
    pipeline: _augment_pb2.Pipeline
    pipeline_id: str
    batch_size: int
    seed: int
    epoch: int
    shuffle: bool
    shard_index: int
    num_shards: int
    drop_last: bool
    start_position: int
    position_stride: int
    dtype: str
    layout: str
    sharding: str
    on_corrupt: str
    shared_memory: bool
    consumed: _containers.RepeatedCompositeFieldContainer[ConsumedBatches]
    def __init__(self, dataset: _Optional[str] = ..., pipeline: _Optional[_Union[_augment_pb2.Pipeline, _Mapping]] = ..., pipeline_id: _Optional[str] = ..., batch_size: _Optional[int] = ..., seed: _Optional[int] = ..., epoch: _Optional[int] = ..., shuffle: bool = ..., shard_index: _Optional[int] = ..., num_shards: _Optional[int] = ..., drop_last: bool = ..., start_position: _Optional[int] = ..., position_stride: _Optional[int] = ..., dtype: _Optional[str] = ..., layout: _Optional[str] = ..., sharding: _Optional[str] = ..., on_corrupt: _Optional[str] = ..., shared_memory: bool = ..., consumed: _Optional[_Iterable[_Union[ConsumedBatches, _Mapping]]] = ...) -> None: ...

class ConsumedBatches(_message.Message):
    __slots__ = ("num_shards", "batch_size", "drop_last", "sharding", "batches")
    NUM_SHARDS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    DROP_LAST_FIELD_NUMBER: _ClassVar[int]
    SHARDING_FIELD_NUMBER: _ClassVar[int]
    BATCHES_FIELD_NUMBER: _ClassVar[int]
    num_shards: int
    batch_size: int
    drop_last: bool
    sharding: str
    batches: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, num_shards: _Optional[int] = ..., batch_size: _Optional[int] = ..., drop_last: bool = ..., sharding: _Optional[str] = ..., batches: _Optional[_Iterable[int]] = ...) -> None: ...

class SharedMemorySlot(_message.Message):
    __slots__ = ("path", "slots", "slot_bytes", "slot", "holdable")
    PATH_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    SLOT_BYTES_FIELD_NUMBER: _ClassVar[int]
    SLOT_FIELD_NUMBER: _ClassVar[int]
    HOLDABLE_FIELD_NUMBER: _ClassVar[int]
    path: str
    slots: int
    slot_bytes: int
    slot: int
    holdable: int
    def __init__(self, path: _Optional[str] = ..., slots: _Optional[int] = ..., slot_bytes: _Optional[int] = ..., slot: _Optional[int] = ..., holdable: _Optional[int] = ...) -> None: ...

class Batch(_message.Message):
    __slots__ = ("images", "labels", "sample_indices", "epoch", "position", "batches_in_epoch", "skipped", "normalize_mean", "normalize_std", "shared_memory")
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_INDICES_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    BATCHES_IN_EPOCH_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    NORMALIZE_MEAN_FIELD_NUMBER: _ClassVar[int]
    NORMALIZE_STD_FIELD_NUMBER: _ClassVar[int]
    SHARED_MEMORY_FIELD_NUMBER: _ClassVar[int]
    images: _augment_pb2.Image
    labels: _containers.RepeatedScalarFieldContainer[int]
    sample_indices: _containers.RepeatedScalarFieldContainer[int]
    epoch: int
    position: int
    batches_in_epoch: int
    skipped: _containers.RepeatedScalarFieldContainer[str]
    normalize_mean: _containers.RepeatedScalarFieldContainer[float]
    normalize_std: _containers.RepeatedScalarFieldContainer[float]
    shared_memory: SharedMemorySlot
    def __init__(self, images: _Optional[_Union[_augment_pb2.Image, _Mapping]] = ..., labels: _Optional[_Iterable[int]] = ..., sample_indices: _Optional[_Iterable[int]] = ..., epoch: _Optional[int] = ..., position: _Optional[int] = ..., batches_in_epoch: _Optional[int] = ..., skipped: _Optional[_Iterable[str]] = ..., normalize_mean: _Optional[_Iterable[float]] = ..., normalize_std: _Optional[_Iterable[float]] = ..., shared_memory: _Optional[_Union[SharedMemorySlot, _Mapping]] = ...) -> None: ...

class GetDatasetRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DatasetInfo(_message.Message):
    __slots__ = ("name", "kind", "size", "classes")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: str
    size: int
    classes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[str] = ..., size: _Optional[int] = ..., classes: _Optional[_Iterable[str]] = ...) -> None: ...

class ListDatasetsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListDatasetsResponse(_message.Message):
    __slots__ = ("datasets",)
    DATASETS_FIELD_NUMBER: _ClassVar[int]
    datasets: _containers.RepeatedCompositeFieldContainer[DatasetInfo]
    def __init__(self, datasets: _Optional[_Iterable[_Union[DatasetInfo, _Mapping]]] = ...) -> None: ...
