"""Model settings and statistics rendered as KServe v2 / Triton protobuf messages."""

from __future__ import annotations

from augserve.clients.proto.inference import grpc_service_pb2 as pb
from augserve.clients.proto.inference import model_config_pb2 as mc
from augserve.server.inference.model_config import ModelSettings
from augserve.server.inference.statistics import Duration, ModelStats

PLATFORM_NAMES = {
    "torch_export": "pytorch_torch_export",
    "torchscript": "pytorch_libtorch",
    "state_dict": "pytorch_state_dict",
    "augserve_compressed": "augserve_compressed",
    "pickle": "pytorch_pickle",
}


def _batched(dims: tuple[int, ...], settings: ModelSettings) -> list[int]:
    return [-1, *dims] if settings.max_batch_size else list(dims)


def model_metadata(settings: ModelSettings, versions: list[int]) -> pb.ModelMetadataResponse:
    """ModelMetadata: versions, platform, and tensor shapes with -1 for the batch dimension.

    The inputs are the public ones (`ModelSettings.public_inputs`).
    """
    response = pb.ModelMetadataResponse(
        name=settings.name,
        versions=[str(v) for v in sorted(versions)],
        platform=PLATFORM_NAMES[settings.platform],
    )
    tensors = ((settings.public_inputs, response.inputs), (settings.outputs, response.outputs))
    for specs, target in tensors:
        for spec in specs:
            target.add(name=spec.name, datatype=spec.datatype, shape=_batched(spec.dims, settings))
    return response


def _data_type(datatype: str) -> int:
    return mc.DataType.Value("TYPE_STRING" if datatype == "BYTES" else f"TYPE_{datatype}")


def model_config(settings: ModelSettings) -> mc.ModelConfig:
    """ModelConfig as Triton reports it (dims exclude the batch dimension)."""
    config = mc.ModelConfig(
        name=settings.name,
        platform=PLATFORM_NAMES[settings.platform],
        backend="augserve",
        max_batch_size=settings.max_batch_size,
        default_model_filename=settings.model_filename,
    )
    policy = settings.version_policy
    if policy.all:
        config.version_policy.all.SetInParent()
    elif policy.specific:
        config.version_policy.specific.versions.extend(policy.specific)
    else:
        config.version_policy.latest.num_versions = policy.latest or 1
    for spec in settings.public_inputs:  # a [preprocess] model's own tensor stays internal
        config.input.add(name=spec.name, data_type=_data_type(spec.datatype), dims=spec.dims)
    for spec in settings.outputs:
        config.output.add(name=spec.name, data_type=_data_type(spec.datatype), dims=spec.dims,
                          label_filename=spec.label_filename)
    group = settings.instance_group
    kind = mc.ModelInstanceGroup.KIND_GPU if group.kind == "gpu" else mc.ModelInstanceGroup.KIND_CPU
    config.instance_group.add(name=f"{settings.name}_0", count=group.count, kind=kind)
    batching = settings.batching
    dynamic = config.dynamic_batching
    dynamic.preferred_batch_size.extend(batching.preferred_batch_size)
    dynamic.max_queue_delay_microseconds = batching.max_queue_delay_microseconds
    dynamic.default_queue_policy.max_queue_size = batching.max_queue_size
    dynamic.default_queue_policy.default_timeout_microseconds = (
        batching.default_timeout_microseconds
    )
    config.parameters["precision"].string_value = settings.precision
    return config


def _duration(target: pb.StatisticDuration, source: Duration) -> None:
    target.count, target.ns = source.count, source.ns


def model_statistics(stats: ModelStats) -> pb.ModelStatistics:
    """ModelStatistics: queue time apart from compute time, and counts per batch size."""
    message = pb.ModelStatistics(
        name=stats.name,
        version=stats.version,
        last_inference=stats.last_inference_ms,
        inference_count=stats.inference_count,
        execution_count=stats.execution_count,
    )
    infer = message.inference_stats
    for field in ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output"):
        _duration(getattr(infer, field), getattr(stats, field))
    for size in sorted(stats.batches):
        durations = stats.batches[size]
        batch = message.batch_stats.add(batch_size=size)
        _duration(batch.compute_input, durations.compute_input)
        _duration(batch.compute_infer, durations.compute_infer)
        _duration(batch.compute_output, durations.compute_output)
    return message
