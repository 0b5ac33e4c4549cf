"""`inference.GRPCInferenceService`: thin translation between KServe v2 messages and models.

Checks happen in `codec`, batching in `batcher`, model lifecycle in `repository`;
errors are raised as `AugserveError` and mapped to statuses by the interceptor.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from importlib.metadata import version as package_version

from grpc import aio

from augserve.clients.proto.inference import grpc_service_pb2 as pb
from augserve.clients.proto.inference import grpc_service_pb2_grpc as pb_grpc
from augserve.server.auth.identity import client_key
from augserve.server.errors import AugserveError, PermissionDenied, Unavailable
from augserve.server.inference import describe
from augserve.server.inference.codec import (
    decode_request,
    encode_response,
)
from augserve.server.inference.repository import ModelRepository
from augserve.server.inference.settings import InferenceSettings
from augserve.server.inference.shared_memory import SystemSharedMemory
from augserve.server.limits import ClientSlots
from augserve.server.peers import is_local_peer

EXTENSIONS = ["classification", "model_repository", "model_configuration", "statistics",
              "binary_tensor_data", "system_shared_memory"]


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """Serves the models of `repository`; `ready` is cleared while the server drains.

    `inflight`: the server's per-client in-flight slots (`augserve.server.inflight`), which
    each ModelStreamInfer request holds until it is answered; None: streams are unbounded
    but for their window.
    """

    def __init__(self, repository: ModelRepository,
                 settings: InferenceSettings | None = None,
                 inflight: ClientSlots | None = None) -> None:
        """Serve `repository`'s models within `settings`; no shared-memory region yet."""
        self.repository = repository
        self.settings = settings or InferenceSettings()
        self.inflight = inflight
        self.ready = asyncio.Event()
        self.shared_memory = SystemSharedMemory()

    async def infer(
        self, request: pb.ModelInferRequest, client_deadline_s: float | None, local: bool = False
    ) -> pb.ModelInferResponse:
        """Validate, queue and run one request; the core of ModelInfer and ModelStreamInfer.

        `local`: the client is on this host, so its tensors may live in shared memory.
        """
        if not self.ready.is_set():
            raise Unavailable("the server is not accepting inference requests")
        loaded = self.repository.get(request.model_name, request.model_version)
        decoded = decode_request(request, loaded.settings, self.shared_memory, local,
                                 self.settings)
        outputs = await loaded.queue.submit(decoded.inputs, client_deadline_s)
        return encode_response(request, loaded.settings, loaded.version, decoded, outputs,
                               self.shared_memory)

    async def ServerLive(
        self, request: pb.ServerLiveRequest, context: aio.ServicerContext
    ) -> pb.ServerLiveResponse:
        """Always live while the process answers."""
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(
        self, request: pb.ServerReadyRequest, context: aio.ServicerContext
    ) -> pb.ServerReadyResponse:
        """Ready once the models loaded; not ready while draining."""
        return pb.ServerReadyResponse(ready=self.ready.is_set())

    async def ModelReady(
        self, request: pb.ModelReadyRequest, context: aio.ServicerContext
    ) -> pb.ModelReadyResponse:
        """Whether the model (version) is loaded and the server ready."""
        try:
            self.repository.get(request.name, request.version)
        except AugserveError:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=self.ready.is_set())

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: aio.ServicerContext
    ) -> pb.ServerMetadataResponse:
        """Server name, version and protocol extensions."""
        return pb.ServerMetadataResponse(
            name="augserve", version=package_version("augserve"), extensions=EXTENSIONS
        )

    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: aio.ServicerContext
    ) -> pb.ModelMetadataResponse:
        """A loaded model's versions, platform and tensors."""
        loaded = self.repository.get(request.name, request.version)
        versions = [v.version for v in self.repository.loaded() if v.settings.name == request.name]
        return describe.model_metadata(loaded.settings, versions)

    async def ModelConfig(
        self, request: pb.ModelConfigRequest, context: aio.ServicerContext
    ) -> pb.ModelConfigResponse:
        """A loaded model's configuration, as Triton reports it."""
        loaded = self.repository.get(request.name, request.version)
        return pb.ModelConfigResponse(config=describe.model_config(loaded.settings))

    async def ModelStatistics(
        self, request: pb.ModelStatisticsRequest, context: aio.ServicerContext
    ) -> pb.ModelStatisticsResponse:
        """Statistics of one model version, or of every loaded one."""
        if request.name:
            versions = [self.repository.get(request.name, request.version)]
        else:
            versions = self.repository.loaded()
        return pb.ModelStatisticsResponse(
            model_stats=[describe.model_statistics(v.stats) for v in versions]
        )

    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: aio.ServicerContext
    ) -> pb.ModelInferResponse:
        """One inference; the gRPC deadline bounds the wait."""
        return await self.infer(request, context.time_remaining(), is_local_peer(context.peer()))

    async def ModelStreamInfer(
        self, request_iterator: AsyncIterator[pb.ModelInferRequest], context: aio.ServicerContext
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        """Inferences over a bidirectional stream; a failed request answers with error_message."""
        responses: asyncio.Queue[pb.ModelStreamInferResponse | None] = asyncio.Queue()
        window = asyncio.Semaphore(self.settings.stream_window)
        local = is_local_peer(context.peer())
        client = client_key(context)

        async def answer(request: pb.ModelInferRequest) -> None:
            try:
                with (self.inflight.hold(client) if self.inflight is not None
                      else contextlib.nullcontext()):
                    reply = pb.ModelStreamInferResponse(
                        infer_response=await self.infer(request, context.time_remaining(),
                                                        local)
                    )
            except AugserveError as error:
                reply = pb.ModelStreamInferResponse(
                    error_message=str(error),
                    infer_response=pb.ModelInferResponse(
                        model_name=request.model_name, id=request.id
                    ),
                )
            finally:
                window.release()
            await responses.put(reply)

        async def read_all() -> None:
            async with asyncio.TaskGroup() as group:
                async for request in request_iterator:
                    await window.acquire()
                    group.create_task(answer(request))
            await responses.put(None)

        reader = asyncio.create_task(read_all())
        try:
            while (reply := await responses.get()) is not None:
                yield reply
            await reader
        finally:
            reader.cancel()

    async def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, context: aio.ServicerContext
    ) -> pb.RepositoryIndexResponse:
        """Every model in the repository with its versions' states."""
        rows = [r for r in self.repository.index() if not request.ready or r.state == "READY"]
        return pb.RepositoryIndexResponse(
            models=[
                pb.RepositoryIndexResponse.ModelIndex(
                    name=r.name, version=r.version, state=r.state, reason=r.reason
                )
                for r in rows
            ]
        )

    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: aio.ServicerContext
    ) -> pb.RepositoryModelLoadResponse:
        """Load or reload a model; returns once it is ready."""
        await self.repository.load(request.model_name)
        return pb.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: aio.ServicerContext
    ) -> pb.RepositoryModelUnloadResponse:
        """Unload a model after draining its queue."""
        await self.repository.unload(request.model_name)
        return pb.RepositoryModelUnloadResponse()

    async def SystemSharedMemoryStatus(
        self, request: pb.SystemSharedMemoryStatusRequest, context: aio.ServicerContext
    ) -> pb.SystemSharedMemoryStatusResponse:
        """The registered regions (one by name, or all)."""
        response = pb.SystemSharedMemoryStatusResponse()
        for region in self.shared_memory.status(request.name):
            response.regions[region.name].CopyFrom(
                pb.SystemSharedMemoryStatusResponse.RegionStatus(
                    name=region.name, key=region.key, offset=region.offset,
                    byte_size=region.byte_size))
        return response

    async def SystemSharedMemoryRegister(
        self, request: pb.SystemSharedMemoryRegisterRequest, context: aio.ServicerContext
    ) -> pb.SystemSharedMemoryRegisterResponse:
        """Map a region of a POSIX shared-memory object (clients on this host only)."""
        if not is_local_peer(context.peer()):
            raise PermissionDenied("shared memory is only for clients on the server's host")
        self.shared_memory.register(request.name, request.key, request.offset, request.byte_size)
        return pb.SystemSharedMemoryRegisterResponse()

    async def SystemSharedMemoryUnregister(
        self, request: pb.SystemSharedMemoryUnregisterRequest, context: aio.ServicerContext
    ) -> pb.SystemSharedMemoryUnregisterResponse:
        """Forget a region, or all of them with an empty name."""
        if not is_local_peer(context.peer()):
            raise PermissionDenied("shared memory is only for clients on the server's host")
        self.shared_memory.unregister(request.name)
        return pb.SystemSharedMemoryUnregisterResponse()
