"""The one table of what each RPC needs: a scope, any known token, or nothing (probes).

Every method of every service the server registers is listed here; a test checks
that against the protos, so a new RPC cannot be left open by mistake, and the
interceptor refuses a method that is missing from the table.

Example:
    >>> access_of("/augserve.v1.AugmentService/Augment")
    <Scope.AUGMENT: 'augment'>
"""

from __future__ import annotations

import enum
from typing import Final, Literal


class Scope(enum.StrEnum):
    """A permission a token carries; the token file names them in lower case."""

    INFER = "infer"
    AUGMENT = "augment"
    STREAM = "stream"
    JOBS = "jobs"
    ADMIN = "admin"


#: No token needed: health checks and liveness/readiness probes.
OPEN: Final = "open"
#: Any known token, whatever its scopes: server reflection (a map of the API is not
#: given to callers who cannot authenticate; grpcurl sends `-H` to reflection too).
ANY_TOKEN: Final = "any token"

Access = Scope | Literal["open", "any token"]

_INFERENCE = "/inference.GRPCInferenceService/"
_JOBS = "/augserve.v1.JobService/"
_STREAM = "/augserve.v1.StreamService/"

METHOD_ACCESS: Final[dict[str, Access]] = {
    "/grpc.health.v1.Health/Check": OPEN,
    "/grpc.health.v1.Health/Watch": OPEN,
    _INFERENCE + "ServerLive": OPEN,
    _INFERENCE + "ServerReady": OPEN,
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": ANY_TOKEN,
    _INFERENCE + "ModelReady": Scope.INFER,
    _INFERENCE + "ServerMetadata": Scope.INFER,
    _INFERENCE + "ModelMetadata": Scope.INFER,
    _INFERENCE + "ModelConfig": Scope.INFER,
    _INFERENCE + "ModelStatistics": Scope.INFER,
    _INFERENCE + "ModelInfer": Scope.INFER,
    _INFERENCE + "ModelStreamInfer": Scope.INFER,
    _INFERENCE + "RepositoryIndex": Scope.ADMIN,
    _INFERENCE + "RepositoryModelLoad": Scope.ADMIN,
    _INFERENCE + "RepositoryModelUnload": Scope.ADMIN,
    # The status RPCs list every client's regions (and their keys): admin as well.
    _INFERENCE + "SystemSharedMemoryStatus": Scope.ADMIN,
    _INFERENCE + "SystemSharedMemoryRegister": Scope.ADMIN,
    _INFERENCE + "SystemSharedMemoryUnregister": Scope.ADMIN,
    _INFERENCE + "CudaSharedMemoryStatus": Scope.ADMIN,
    _INFERENCE + "CudaSharedMemoryRegister": Scope.ADMIN,
    _INFERENCE + "CudaSharedMemoryUnregister": Scope.ADMIN,
    "/augserve.v1.AugmentService/Augment": Scope.AUGMENT,
    _STREAM + "StreamBatches": Scope.STREAM,
    _STREAM + "GetDataset": Scope.STREAM,
    _STREAM + "ListDatasets": Scope.STREAM,
    _JOBS + "Watch": Scope.JOBS,
    _JOBS + "Result": Scope.JOBS,
    _JOBS + "Submit": Scope.ADMIN,
    _JOBS + "Cancel": Scope.ADMIN,
}


def access_of(method: str) -> Access | None:
    """What `method` ("/package.Service/Method") needs; None if the table lacks it."""
    return METHOD_ACCESS.get(method)
