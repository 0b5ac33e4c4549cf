"""The Augment RPC: a thin servicer that checks a request once and runs it on the pool."""

from __future__ import annotations

import numpy as np
from grpc import aio

from augserve.clients.proto.augserve.v1 import augment_pb2 as pb
from augserve.clients.proto.augserve.v1 import augment_pb2_grpc as pb_grpc
from augserve.server.augment.convert import (
    decode_image,
    encode_image,
    params_from_proto,
    params_to_proto,
    targets_from_proto,
    targets_to_proto,
)
from augserve.server.augment.limits import check_output
from augserve.server.augment.pool import AugmentPool, images_list
from augserve.server.augment.registry import PipelineRegistry
from augserve.server.augment.settings import AugmentSettings
from augserve.server.errors import InvalidArgument
from augserve.server.limits import over_limit

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["AugmentService"].full_name


class AugmentServicer(pb_grpc.AugmentServiceServicer):
    """Translates `AugmentRequest` into a pool call and the result into `AugmentResponse`."""

    def __init__(self, settings: AugmentSettings, pool: AugmentPool) -> None:
        """Parse the registered pipelines up front: a bad one fails at start, not per call."""
        self.settings = settings
        self.pool = pool
        self.pipelines = PipelineRegistry(settings.pipelines, settings.max_ops)

    async def Augment(self, request: pb.AugmentRequest, context: aio.ServicerContext
                      ) -> pb.AugmentResponse:
        """Check the request, augment on the pool, return images (and params, targets)."""
        spec = self.pipelines.resolve(request)
        n = len(request.images)
        if n == 0:
            raise InvalidArgument("images: at least one image is required")
        if n > self.settings.max_images:
            raise over_limit(self.settings, "max_images", f"images: {n}")
        images = [decode_image(m, f"images[{i}]", self.settings)
                  for i, m in enumerate(request.images)]
        total = sum(im.shape[0] * im.shape[1] for im in images)
        if total > self.settings.max_request_pixels:
            raise over_limit(self.settings, "max_request_pixels", f"images: {total} pixels in all")
        indices = None
        if request.sample_indices:
            if len(request.sample_indices) != n:
                raise InvalidArgument(f"sample_indices: expected {n}, got "
                                      f"{len(request.sample_indices)}")
            indices = np.asarray(request.sample_indices, dtype=np.uint64).astype(np.int64)
            if (indices < 0).any():
                raise InvalidArgument("sample_indices: must be below 2**63")
        params = None
        if request.params:
            if len(request.params) != n:
                raise InvalidArgument(f"params: expected one per image ({n}), "
                                      f"got {len(request.params)}")
            params = params_from_proto(spec, request.params)
        targets = None
        if request.targets:
            if len(request.targets) != n:
                raise InvalidArgument(f"targets: expected one per image ({n})")
            targets = targets_from_proto(request.targets, self.settings)
        params = check_output(spec, images, self.settings, request.seed, request.epoch, indices,
                              params)
        result = await self.pool.augment(spec, images, seed=request.seed, epoch=request.epoch,
                                         sample_indices=indices, params=params,
                                         return_params=request.return_params, targets=targets)
        response = pb.AugmentResponse(images=[encode_image(t) for t in images_list(result.images)])
        if request.return_params and result.params is not None:
            response.params.extend(params_to_proto(result.params))
        if result.targets is not None:
            response.targets.extend(targets_to_proto(t) for t in result.targets)
        return response


def build_pool(settings: AugmentSettings) -> AugmentPool:
    """The Augment actor pool that `settings` describe (its actors start on first use)."""
    return AugmentPool(settings.pool_size, settings.backend, settings.actor_num_cpus,
                       settings.chunk_size, settings.actor_num_gpus,
                       placement=settings.actor_placement)


def add_augment_service(server: aio.Server, settings: AugmentSettings,
                        pool: AugmentPool | None = None) -> str:
    """Register the Augment service on `server`; return its full name.

    Args:
        server: a `grpc.aio.Server` (with `ErrorMappingInterceptor` installed).
        settings: limits, pool shape and registered pipelines.
        pool: the actor pool to use; by default one is built from `settings`.

    Returns:
        "augserve.v1.AugmentService".
    """
    pool = pool or build_pool(settings)
    pb_grpc.add_AugmentServiceServicer_to_server(AugmentServicer(settings, pool), server)
    return SERVICE_NAME


__all__ = ["SERVICE_NAME", "AugmentServicer", "add_augment_service", "build_pool"]
